"""Review of issue 12: `flux sent` and `flux status` work with a password account's session
too ("the mail commands work with either a key or an account session"), through
`GET /mail/sent` and `GET /mail/sent/{id}`, short ids and `--json` included; a short id
matching nothing is one line with the fix. Against a real server."""

from __future__ import annotations

import json
import re

from cli_helpers import flux, make_key, one_line_failure, user_env


def test_sent_and_status_with_an_account_session(tmp_path, live_server):
    env = user_env(tmp_path, live_server, FLUX_PASSWORD="correct horse battery")
    made = flux("account", "register", "olga", **env)
    assert made.returncode == 0, made.stderr
    key = tmp_path / "pat.json"
    pat = make_key(key)
    assert flux("register", "--key", str(key), **env).returncode == 0

    sent = flux("send", pat, "hello pat", "--subject", "from olga", **env)  # no key: the account
    assert sent.returncode == 0, sent.stderr
    message_id = re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)

    listed = flux("sent", **env)
    assert listed.returncode == 0, listed.stderr
    assert message_id[:8] in listed.stdout and "from olga" in listed.stdout
    assert re.search(r"→ fx1\S+\s+stored", listed.stdout), listed.stdout
    as_json = json.loads(flux("sent", "--json", **env).stdout)
    assert [m["id"] for m in as_json] == [message_id]  # before the second send below
    assert as_json[0]["_delivery"][pat]["state"] == "stored"

    second = flux("send", pat, "again", "--subject", "second", **env)
    assert second.returncode == 0, second.stderr
    first_only = flux("sent", "--limit", "1", **env)
    assert "second" in first_only.stdout and "from olga" not in first_only.stdout
    assert "more: use --limit" in first_only.stdout  # a page, and it says so
    assert "more:" not in flux("sent", "--limit", "5", **env).stdout

    one = flux("status", message_id[:8], **env)
    assert one.returncode == 0, one.stderr
    assert message_id in one.stdout and "stored" in one.stdout
    state = json.loads(flux("status", message_id[:10], "--json", **env).stdout)
    assert state["id"] == message_id and state["_delivery"][pat]["state"] == "stored"

    one_line_failure(flux("status", "0123abcd", **env), "you sent no message", "see `flux sent`")
    one_line_failure(flux("status", "0123", **env), "id")
    # forward takes a message of the mailbox; one sent is not there (one line, the fix)
    one_line_failure(flux("forward", message_id[:8], pat, **env), "no such message", "flux inbox")
