"""The everyday mail commands against a real `flux server` process: inbox filters, read
--json, reply, forward, thread, tag, move, delete, mark, claim; each `--json` form and its
one-line errors (short ids included)."""

from __future__ import annotations

import json
import os
import re
import urllib.request

from cli_helpers import Running, flux, free_port, make_key

from flux import FluxIdentity, build_message


def _ok(result):
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def _json(result):
    return json.loads(_ok(result).stdout)


def _error(result, *words):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    first = result.stderr.strip().splitlines()[0]
    for word in words:
        assert word in first, first
    return result.stderr


def _people(tmp_path, server):
    keys, envs = {}, {}
    for who in ("alice", "bob", "carol"):
        path = tmp_path / f"{who}.json"
        keys[who] = make_key(path)
        # contacts.json and sessions per test (alice's name differs between servers)
        envs[who] = {"FLUX_KEY": str(path), "FLUX_SERVER": server,
                     "XDG_CONFIG_HOME": str(tmp_path / "cfg")}  # fmt: skip
        _ok(flux("register", **envs[who]))
    return keys, envs


def _send(env, to, text, *extra):
    sent = _ok(flux("send", to, text, *extra, **env))
    return re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)


def test_inbox_filters_unread_first_and_read_json(tmp_path, live_server):
    who, env = _people(tmp_path, live_server)
    first = _send(env["alice"], who["bob"], "one", "--subject", "first", "--tag", "work")
    second = _send(env["carol"], who["bob"], "two", "--subject", "second")
    _ok(flux("read", first, **env["bob"]))  # first is now read, second unread

    listed = _json(flux("inbox", "--json", **env["bob"]))
    assert {m["id"] for m in listed} == {first, second}
    table = _ok(flux("inbox", **env["bob"])).stdout
    assert table.index(second) < table.index(first)  # unread first
    assert "first" in table and "second" in table

    from_alice = _json(flux("inbox", "--json", "--from", who["alice"], **env["bob"]))
    assert [m["id"] for m in from_alice] == [first]
    tagged = _json(flux("inbox", "--json", "--tag", "work", **env["bob"]))
    assert [m["id"] for m in tagged] == [first]
    unread = _json(flux("inbox", "--json", "--status", "pending", **env["bob"]))
    assert [m["id"] for m in unread] == [second]

    stored = _json(flux("read", second[:8], "--json", **env["bob"]))
    # a start of an fx1 address is completed from contacts (reading recorded carol's key)
    by_prefix = _json(flux("inbox", "--json", "--from", who["carol"][:12], **env["bob"]))
    assert [m["id"] for m in by_prefix] == [second]
    assert stored["id"] == second and stored["from"] == who["carol"]
    assert not any(k.startswith("_") for k in stored)
    (tmp_path / "m.json").write_text(json.dumps(stored))
    verified = _ok(flux("verify", str(tmp_path / "m.json")))
    assert "signature" in verified.stdout and "integrity chain" in verified.stdout
    statuses = {m["id"]: m["_status"] for m in _json(flux("inbox", "--json", **env["bob"]))}
    assert statuses[second] == "read"


def test_reply_forward_and_thread(tmp_path, live_server):
    who, env = _people(tmp_path, live_server)
    original = _send(env["alice"], who["bob"], "lunch?", "--subject", "Lunch")

    answer = _json(flux("reply", original[:10], "yes, noon", "--json", **env["bob"]))
    assert answer["re"] == original and answer["recipients"] == {who["alice"]: "stored"}
    (back,) = _json(flux("inbox", "--json", **env["alice"]))
    assert back["re"] == original and back["subject"] == "Re: Lunch"
    assert back["content"] == "yes, noon"
    by_stdin = _ok(flux("reply", back["id"], **env["alice"], stdin="see you"))
    assert "replied" in by_stdin.stdout

    # bob's thread: alice's three messages and, from his sent mail, his own reply
    followup = _send(env["alice"], who["bob"], "or one?", "--reply-to", original)
    conversation = _json(flux("thread", original, "--json", **env["bob"]))
    see_you = re.search(r"[0-9a-f]{32}", by_stdin.stdout).group(0)
    assert [m["id"] for m in conversation] == [original, answer["id"], see_you, followup]
    assert [m.get("_folder") for m in conversation] == [None, "sent", None, None]
    shown = _ok(flux("thread", original[:8], **env["bob"])).stdout
    assert original[:8] in shown and followup[:8] in shown
    assert "lunch?" in shown and "or one?" in shown and "Lunch" in shown

    fwd = _json(flux("forward", original, who["carol"], "--note", "FYI", "--json", **env["bob"]))
    assert fwd["forwarded"] == original and fwd["recipients"] == {who["carol"]: "stored"}
    (got,) = _json(flux("inbox", "--json", **env["carol"]))
    assert got["from"] == who["bob"] and got["subject"] == "Fwd: Lunch"
    assert got["content"].startswith("FYI") and "lunch?" in got["content"]
    assert who["alice"] in got["content"]

    secret = _send(env["alice"], who["bob"], "the code is 42", "--encrypt")
    sealed = _json(flux("forward", secret, who["carol"], "--json", **env["bob"]))
    carol_read = _ok(flux("read", sealed["id"], **env["carol"])).stdout
    assert "the code is 42" in carol_read and "encrypted" in carol_read


def test_tag_move_delete_mark(tmp_path, live_server):
    who, env = _people(tmp_path, live_server)
    a = _send(env["alice"], who["bob"], "a", "--tag", "old")
    b = _send(env["alice"], who["bob"], "b")

    tags = _json(flux("tag", a[:8], "+work", "+urgent", "-old", "--json", **env["bob"]))
    assert tags == {"id": a[:8], "tags": ["urgent", "work"]}
    plain = _ok(flux("tag", a, "--", "-urgent", **env["bob"])).stdout
    assert "tags work" in plain

    moved = _json(flux("move", a, "archive", "--json", **env["bob"]))
    assert moved == {"id": a, "inbox": "archive"}
    assert [m["id"] for m in _json(flux("inbox", "--json", "--inbox", "archive", **env["bob"]))] == [a]  # fmt: skip

    assert _json(flux("mark", b, "--json", **env["bob"])) == {"updated": [b]}
    assert "marked 0 message(s)" in _ok(flux("mark", b, **env["bob"])).stdout
    assert _json(flux("mark", b, "--unread", "--json", **env["bob"])) == {"updated": [b], "deleted": []}  # fmt: skip

    assert _json(flux("delete", a, b[:9], "--json", **env["bob"])) == {"updated": [a, b]}
    assert _json(flux("inbox", "--json", **env["bob"])) == []
    deleted = _json(flux("inbox", "--json", "--status", "deleted", **env["bob"]))
    assert {m["id"] for m in deleted} == {a, b}


def _post_with_prefix(server, alice_key, bob, prefix, subject):
    """A message to `bob` whose id starts with `prefix` (ids are the sender's choice),
    handed in as any client would: POST /send."""
    alice = FluxIdentity.load(alice_key)
    fixed = bytes.fromhex(prefix)

    def randbytes(n):
        return (fixed + os.urandom(n))[:n]

    msg = build_message(alice, bob, "x", subject=subject, randbytes=randbytes)
    request = urllib.request.Request(server + "/send", data=json.dumps(msg).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert json.load(answer)["ok"] is True
    return msg["id"]


def test_an_ambiguous_short_id_lists_its_candidates(tmp_path, live_server):
    who, env = _people(tmp_path, live_server)
    ids = [_post_with_prefix(live_server, tmp_path / "alice.json", who["bob"], "abcdef12", s)
           for s in ("lunch", "dinner")]  # fmt: skip
    assert ids[0][:8] == ids[1][:8] == "abcdef12"
    for command in (["read", "abcdef12"], ["tag", "abcdef12", "+x"], ["thread", "abcdef12"]):
        stderr = _error(flux(*command, **env["bob"]), "409", "more digits")
        lines = stderr.strip().splitlines()[1:]
        assert len(lines) == 2, stderr
        for line in lines:
            assert any(i in line for i in ids) and "fx1" in line
        assert any("lunch" in line for line in lines) and any("dinner" in line for line in lines)
    assert _json(flux("read", ids[1][:12], "--json", **env["bob"]))["id"] == ids[1]


def test_errors_are_one_line_with_the_fix(tmp_path, live_server):
    who, env = _people(tmp_path, live_server)
    first = _send(env["alice"], who["bob"], "n", "--subject", "s")
    _error(flux("read", "0" * 8, **env["bob"]), "404", "flux inbox")
    _error(flux("tag", "0" * 8, "+x", **env["bob"]), "404")
    _error(flux("move", "abc", "x", **env["bob"]), "400", "id")
    _error(flux("thread", "0" * 32, **env["bob"]), "404")
    _error(flux("tag", first, "+", **env["bob"]), "a tag needs a name")
    _error(flux("reply", "0" * 32, "x", **env["bob"]), "404")
    _error(flux("delete", first, "--key", str(tmp_path / "nope.json")), "key file not found")
    dead = {**env["bob"], "FLUX_SERVER": "http://127.0.0.1:9"}
    _error(flux("inbox", **dead), "is the server running")
    _error(flux("export", **dead), "is the server running")


def test_claim_then_contacts_show_the_name(tmp_path):
    # The domain names the port: alice@127.0.0.1:PORT resolves here, over plain HTTP
    port = free_port()
    server = Running(
        "server", "--host", "127.0.0.1", "--port", str(port), "--backend", "sqlite",
        "--data-dir", str(tmp_path / "server"), "--hosted", "--domain", f"127.0.0.1:{port}",
    )  # fmt: skip
    try:
        server.wait_for(r"FLUX server for \S+ at http://127")
        _claim_and_contacts(tmp_path, f"http://127.0.0.1:{port}")
    finally:
        assert server.interrupt() == 0, server.output


def _claim_and_contacts(tmp_path, live_server):
    who, env = _people(tmp_path, live_server)
    claimed = _json(flux("claim", "alice", "--json", **env["alice"]))
    assert claimed["address"] == who["alice"] and claimed["created"] is True
    again = _ok(flux("claim", "alice", **env["alice"])).stdout
    assert "already yours" in again
    _error(flux("claim", "alice", **env["bob"]), "409")

    name = claimed["name"]
    _send(env["bob"], name, "hi by name")  # bob resolves alice@domain: remembered
    listed = _json(flux("contacts", "--json", **env["bob"]))
    assert listed["names"][name]["address"] == who["alice"]
    _ok(flux("read", _json(flux("inbox", "--json", **env["alice"]))[0]["id"], **env["alice"]))
    mine = _json(flux("contacts", "--json", **env["alice"]))
    assert who["bob"] in mine["keys"]
    table = _ok(flux("inbox", **env["alice"])).stdout
    assert f"inbox of {name}" in table


def test_a_password_account_uses_the_same_commands(tmp_path, live_server):
    env = {"FLUX_SERVER": live_server, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    made = _ok(flux("account", "register", "erin", stdin="correct horse\ncorrect horse\n", **env))
    erin = re.search(r"fx1[0-9a-f]{40}", made.stdout).group(0)
    key = tmp_path / "dave.json"
    make_key(key)
    dave = {**env, "FLUX_KEY": str(key)}
    _ok(flux("register", **dave))
    one = _send(dave, erin, "first", "--subject", "one")
    two = _send(dave, erin, "second", "--subject", "two")

    stored = _json(flux("read", one[:8], "--json", **env))
    assert stored["id"] == one and not any(k.startswith("_") for k in stored)
    _error(flux("read", "abc", **env), "at least 8 digits")
    assert _json(flux("tag", two[:8], "+keep", "--json", **env))["tags"] == ["keep"]
    assert _json(flux("move", two, "later", "--json", **env))["inbox"] == "later"
    assert _json(flux("mark", two, "--json", **env)) == {"updated": [two]}
    lines = _ok(flux("export", **env)).stdout.splitlines()
    assert {json.loads(line)["id"] for line in lines} == {one, two}
    assert _json(flux("delete", one, "--json", **env)) == {"updated": [one]}
    assert [m["id"] for m in _json(flux("inbox", "--json", **env))] == [two]
    answered = _json(flux("reply", two[:8], "thanks", "--json", **env))
    assert answered["re"] == two and list(answered["recipients"].values()) == ["stored"]
    (back,) = _json(flux("inbox", "--json", **dave))
    assert back["re"] == two and back["subject"] == "Re: two" and back["from"] == erin
    forwarded = _json(flux("forward", two, erin, "--json", **env))  # an account forwards too
    assert forwarded["forwarded"] == two and list(forwarded["recipients"].values()) == ["stored"]
