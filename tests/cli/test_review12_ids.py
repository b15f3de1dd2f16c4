"""Review of issue 12: short ids as people type them. Upper-case hex is the same id (git
takes `1A2B3C4D` too; the server's API keeps to lower case, docs/API.md "Short ids"), for
every command that takes an ID; and `flux thread` of a message that is deleted says why
nothing is shown instead of printing nothing. Against a real server."""

from __future__ import annotations

import json
import re

from cli_helpers import flux, one_line_failure, registered_keys, user_env

from flux.cli._common import typed_ids


def test_typed_ids():
    assert typed_ids(" 1A2B3C4D ") == "1a2b3c4d"
    assert typed_ids(["ABCDEF12", "abc"]) == ["abcdef12", "abc"]
    assert typed_ids("xyz1234567") == "xyz1234567"  # not hex: left for the server to refuse
    assert typed_ids("１２３４５６７８") == "１２３４５６７８"  # full-width digits are not hex
    assert typed_ids(None) is None


def test_upper_case_short_ids_work_everywhere(tmp_path, live_server):
    env = user_env(tmp_path, live_server)
    (alice_key, _), (bob_key, bob) = registered_keys(tmp_path, env, "alice", "bob")
    alice_env = {**env, "FLUX_KEY": str(alice_key)}
    bob_env = {**env, "FLUX_KEY": str(bob_key)}
    sent = flux("send", bob, "hello", "--subject", "s", **alice_env)
    message_id = re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)
    upper = message_id[:10].upper()

    for args in (("read", upper), ("thread", upper), ("tag", upper, "+x"),
                 ("move", upper, "work"), ("mark", upper), ("mark", upper, "--unread"),
                 ("reply", upper, "thanks")):  # fmt: skip
        done = flux(*args, **bob_env)
        assert done.returncode == 0, (args, done.stderr)
    assert flux("status", upper, **alice_env).returncode == 0
    assert flux("read", message_id.upper(), "--json", **bob_env).returncode == 0

    deleted = flux("delete", upper, **bob_env)
    assert deleted.returncode == 0, deleted.stderr
    # the deleted message is gone from bob's conversation; his own reply stays in it
    left = flux("thread", message_id[:8], **bob_env)
    assert left.returncode == 0 and "you (sent)" in left.stdout and "thanks" in left.stdout
    remaining = json.loads(flux("thread", message_id[:8], "--json", **bob_env).stdout)
    assert [(m["re"], m["_folder"]) for m in remaining] == [(message_id, "sent")]
    one_line_failure(flux("read", "ABCDEF", **bob_env), "8")  # too short: still refused
