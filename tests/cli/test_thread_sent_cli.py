"""`flux thread` shows the whole conversation, your own sent messages included (marked
"you (sent)"), with a key and with a password account's session. Against a real server:
two identities, three messages (A writes B, B answers, A answers again)."""

from __future__ import annotations

import json
import re

from cli_helpers import flux, registered_keys, user_env


def sent_id(result) -> str:
    assert result.returncode == 0, result.stderr
    return re.search(r"([0-9a-f]{32})", result.stdout).group(1)


def check_thread(env: dict[str, str], ask: str, ids: list[str], mine: list[str], *key: str) -> None:
    """`flux thread ask` lists `ids` in order, `mine` of them marked as sent by you."""
    shown = flux("thread", ask, *key, **env)
    assert shown.returncode == 0, shown.stderr
    heads = [line for line in shown.stdout.splitlines() if re.search(r"^\s*[0-9a-f]{8} ", line)]
    assert [h.split()[0] for h in heads] == [i[:8] for i in ids], shown.stdout
    for head, msg_id in zip(heads, ids, strict=True):
        assert ("you (sent)" in head) == (msg_id in mine), shown.stdout
    as_json = json.loads(flux("thread", ask, "--json", *key, **env).stdout)
    assert [m["id"] for m in as_json] == ids
    assert [m["id"] for m in as_json if m.get("_folder") == "sent"] == mine
    for m in as_json:  # a sent one carries its delivery state, a received one its status
        assert ("_delivery" in m) == (m["id"] in mine) and ("_status" in m) != (m["id"] in mine)


def test_thread_with_keys_shows_your_sent_messages(tmp_path, live_server):
    env = user_env(tmp_path, live_server)
    (alice_key, _), (bob_key, bob) = registered_keys(tmp_path, env, "alice", "bob")
    a, b = ("--key", str(alice_key)), ("--key", str(bob_key))
    first = sent_id(flux("send", bob, "hello bob", "--subject", "plans", *a, **env))
    second = sent_id(flux("reply", first[:8], "hello alice", *b, **env))
    third = sent_id(flux("reply", second[:8], "see you", *a, **env))
    ids = [first, second, third]
    for ask in ids:  # any message names the conversation, a sent one too
        check_thread(env, ask[:8], ids, [first, third], *a)
    check_thread(env, third[:8], ids, [second], *b)


def test_thread_with_account_sessions_shows_your_sent_messages(tmp_path, live_server):
    envs, addresses = {}, {}
    for name in ("olga", "pat"):
        envs[name] = user_env(tmp_path, live_server, name, FLUX_PASSWORD="correct horse battery")
        made = flux("account", "register", name, **envs[name])
        assert made.returncode == 0, made.stderr
        addresses[name] = re.search(r"\((fx1[0-9a-f]{40})\)", made.stdout).group(1)
    olga, pat = envs["olga"], envs["pat"]
    first = sent_id(flux("send", addresses["pat"], "hello pat", "--subject", "plans", **olga))
    second = sent_id(flux("send", addresses["olga"], "hello olga", "--reply-to", first, **pat))
    third = sent_id(flux("send", addresses["pat"], "see you", "--reply-to", second, **olga))
    ids = [first, second, third]
    check_thread(olga, second[:8], ids, [first, third])
    check_thread(olga, first[:8], ids, [first, third])  # by a message only olga sent
    check_thread(pat, first, ids, [second])
