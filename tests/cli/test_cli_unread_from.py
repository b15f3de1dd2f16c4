"""`flux mark --unread`, `flux inbox --from` (the server's sender filter) and `read` /
`thread` with a password account's session, against a real `flux server` process, as a
user runs them: each command, its `--json` form and its one-line errors."""

from __future__ import annotations

import json
import re

from cli_helpers import flux, make_key, one_line_failure, user_env


def _ok(result):
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def _json(result):
    return json.loads(_ok(result).stdout)


def _send(env, to, text, *extra):
    sent = _ok(flux("send", to, text, *extra, **env))
    return re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)


def _keyed(tmp_path, server, *names):
    keys, envs = {}, {}
    for who in names:
        path = tmp_path / f"{who}.json"
        keys[who] = make_key(path)
        envs[who] = user_env(tmp_path, server, f"cfg-{who}", FLUX_KEY=str(path))
        _ok(flux("register", **envs[who]))
    return keys, envs


def test_mark_unread_with_a_key(tmp_path, live_server):
    who, env = _keyed(tmp_path, live_server, "alice", "bob")
    a = _send(env["alice"], who["bob"], "a")
    b = _send(env["alice"], who["bob"], "b")
    _ok(flux("read", a, **env["bob"]))
    _ok(flux("read", b, **env["bob"]))
    done = _ok(flux("mark", a[:8], "--unread", **env["bob"])).stdout
    assert "marked 1 message(s) unread" in done
    statuses = {m["id"]: m["_status"] for m in _json(flux("inbox", "--json", **env["bob"]))}
    assert statuses == {a: "delivered", b: "read"}
    assert _json(flux("mark", a, b, "--unread", "--json", **env["bob"])) == {
        "updated": [b], "deleted": []}  # fmt: skip
    _ok(flux("delete", b, **env["bob"]))
    one_line_failure(flux("mark", b, "--unread", **env["bob"]), "deleted", b)
    assert _json(flux("mark", b, "--unread", "--json", **env["bob"])) == {
        "updated": [], "deleted": [b]}  # fmt: skip
    one_line_failure(flux("mark", "abc", "--unread", **env["bob"]), "id")


def test_inbox_from_uses_the_servers_filter(tmp_path, live_server):
    who, env = _keyed(tmp_path, live_server, "alice", "bob", "carol")
    mine = [_send(env["alice"], who["bob"], f"alice {n}") for n in range(3)]
    for n in range(4):
        _send(env["carol"], who["bob"], f"carol {n}")
    # the three from alice, though the four newer ones are carol's: one server-side page
    got = _json(flux("inbox", "--json", "--from", who["alice"], "--limit", "3", **env["bob"]))
    assert [m["id"] for m in got] == list(reversed(mine))
    two = _json(flux("inbox", "--json", "--from", who["alice"], "--limit", "2", **env["bob"]))
    assert len(two) == 2 and {m["from"] for m in two} == {who["alice"]}
    # a start of an address: completed from the addresses this user has seen (reading a
    # message of carol's remembers her key), else refused naming the fix
    one_line_failure(
        flux("inbox", "--from", who["carol"][:12], **env["bob"]), "--from", "whole address"
    )
    carols = [m for m in _json(flux("inbox", "--json", **env["bob"])) if m["from"] == who["carol"]]
    _ok(flux("read", carols[0]["id"], "--no-mark", **env["bob"]))
    by_start = _json(flux("inbox", "--json", "--from", who["carol"][:12], **env["bob"]))
    assert len(by_start) == 4 and {m["from"] for m in by_start} == {who["carol"]}


def test_an_account_reads_threads_marks_unread_and_filters(tmp_path, live_server):
    accounts = {}
    for name in ("dana", "erik"):
        env = user_env(tmp_path, live_server, f"cfg-{name}", FLUX_PASSWORD="s3cret-enough")
        _ok(flux("account", "register", name, **env))
        accounts[name] = env
    dana = _json(flux("account", "whoami", "--json", **accounts["dana"]))["address"]
    sent = _ok(flux("send", "erik", "first words", "--subject", "hello", **accounts["dana"]))
    first = re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)
    follow = _ok(flux("send", "erik", "more words", "--reply-to", first, **accounts["dana"]))
    second = re.search(r"sent ([0-9a-f]{32})", follow.stdout).group(1)

    shown = _ok(flux("read", first[:8], **accounts["erik"])).stdout
    assert "first words" in shown and "signature verifies" in shown
    stored = _json(flux("read", first, "--json", **accounts["erik"]))
    assert stored["id"] == first and stored["from"] == dana
    thread = _json(flux("thread", second[:8], "--json", **accounts["erik"]))
    assert [m["id"] for m in thread] == [first, second]
    assert {m["_from_name"] for m in thread} == {f"dana@{thread[0]['_from_name'].split('@')[1]}"}
    lines = _ok(flux("thread", first, **accounts["erik"])).stdout
    assert "first words" in lines and "more words" in lines and "dana@" in lines

    assert _json(flux("mark", first, "--unread", "--json", **accounts["erik"])) == {
        "updated": [first], "deleted": []}  # fmt: skip
    listed = _json(flux("inbox", "--json", "--from", dana, **accounts["erik"]))
    assert {m["id"]: m["_status"] for m in listed} == {first: "delivered", second: "pending"}
    one_line_failure(flux("read", "99999999", **accounts["erik"]), "not_found")
    one_line_failure(flux("thread", "1234", **accounts["erik"]), "8 digits")
