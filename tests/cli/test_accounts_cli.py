"""`flux account …` against a real server: register, login, whoami (and --json), logout,
the mail commands with an account session, and the errors, each one line with the fix."""

from __future__ import annotations

import json
import re
import sqlite3

from cli_helpers import flux, live_account_sessions, make_key, one_line_failure, user_env


def test_register_whoami_mail_logout(tmp_path, live_server):
    env = user_env(tmp_path, live_server)
    made = flux("account", "register", "carol", stdin="correct horse\ncorrect horse\n", **env)
    assert made.returncode == 0, made.stderr
    assert re.search(r"registered carol@\S+ \(fx1[0-9a-f]{40}\)", made.stdout)
    address = re.search(r"fx1[0-9a-f]{40}", made.stdout).group(0)

    me = flux("account", "whoami", "--json", **env)
    assert me.returncode == 0, me.stderr
    answer = json.loads(me.stdout)
    assert answer["username"] == "carol" and answer["address"] == address
    assert answer["kind"] == "password"
    plain = flux("account", "whoami", **env)
    assert plain.returncode == 0 and "carol@" in plain.stdout and "password account" in plain.stdout

    # mail without a key: the account's session; from a key holder to the account and back
    key = tmp_path / "dave.json"
    dave = make_key(key)
    assert flux("register", "--key", str(key), **env).returncode == 0
    sent = flux("send", address, "hello carol", "--subject", "Hi", "--key", str(key), **env)
    assert sent.returncode == 0, sent.stderr
    message_id = re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)
    listed = flux("inbox", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    assert [m["id"] for m in json.loads(listed.stdout)] == [message_id]
    table = flux("inbox", **env)
    assert table.returncode == 0 and message_id in table.stdout and "inbox of carol" in table.stdout
    shown = flux("read", message_id, **env)
    assert shown.returncode == 0, shown.stderr
    assert "hello carol" in shown.stdout and "✓ signature verifies" in shown.stdout
    assert json.loads(flux("inbox", "--json", **env).stdout)[0]["_status"] == "read"
    answer_back = flux("send", dave, "hello dave", **env)
    assert answer_back.returncode == 0, answer_back.stderr
    assert f"{dave}: stored" in answer_back.stdout
    got = json.loads(flux("inbox", "--json", "--key", str(key), **env).stdout)
    assert [m["content"] for m in got] == ["hello dave"] and got[0]["from"] == address

    assert live_account_sessions(tmp_path) == 1  # all of the above: the one session
    out = flux("account", "logout", **env)
    assert out.returncode == 0 and "logged out carol" in out.stdout
    assert live_account_sessions(tmp_path) == 0
    one_line_failure(flux("account", "whoami", **env), "not logged in", "flux account login")


def test_login_with_password_from_environment_and_top_level_logout(tmp_path, live_server):
    env = user_env(tmp_path, live_server, FLUX_PASSWORD="s3cret-enough")
    assert flux("account", "register", "erin", **env).returncode == 0
    assert flux("logout", **env).returncode == 0  # no --key: the account's session
    assert live_account_sessions(tmp_path) == 0
    again = flux("account", "login", "erin", **env)
    assert again.returncode == 0, again.stderr
    assert "logged in as erin@" in again.stdout
    assert live_account_sessions(tmp_path) == 1
    assert flux("account", "whoami", **env).returncode == 0


def test_errors_are_one_line_with_the_fix(tmp_path, live_server):
    env = user_env(tmp_path, live_server, FLUX_PASSWORD="s3cret-enough")
    assert flux("account", "register", "frank", **env).returncode == 0
    one_line_failure(flux("account", "register", "frank", **env), "username_taken",
                    "choose another username")  # fmt: skip
    one_line_failure(flux("account", "login", "frank", **user_env(tmp_path, live_server,
                                                              FLUX_PASSWORD="wrong-password")),
                    "login_failed", "check the username and the password")  # fmt: skip
    one_line_failure(flux("account", "register", "Bad Name!", **env), "username")
    short = user_env(tmp_path, live_server, FLUX_PASSWORD="short")
    one_line_failure(flux("account", "register", "gina", **short), "password")

    # revoked behind the CLI's back: the kept session is dropped, the fix named
    with sqlite3.connect(tmp_path / "server" / "accounts.db") as db:
        db.execute("UPDATE account_sessions SET revoked = 1")
    one_line_failure(flux("inbox", **env), "expired or was revoked", "flux account login frank")
    one_line_failure(flux("inbox", **env), "no key", "flux account login")
    one_line_failure(flux("account", "logout", **env), "not logged in")
    one_line_failure(flux("account", "whoami", "--server", "127.0.0.1:9", **env), "not logged in")
    down = user_env(tmp_path, "127.0.0.1:9", FLUX_PASSWORD="s3cret-enough")
    one_line_failure(flux("account", "login", "frank", **down), "cannot reach http://127.0.0.1:9",
                    "is the server running?")  # fmt: skip
