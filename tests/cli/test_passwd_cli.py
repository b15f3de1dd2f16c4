"""`flux account passwd` against a real server process: the password changes (prompted, or
from $FLUX_PASSWORD / $FLUX_NEW_PASSWORD), the kept session stays, other sessions are
logged out, the address and the mail stay; a wrong current password or a short new one is
one line naming the fix, and the kept session survives it."""

from __future__ import annotations

import json
import re

from cli_helpers import flux, live_account_sessions, one_line_failure, user_env

OLD = "correct horse"
NEW = "battery staple"


def test_passwd_prompted_keeps_this_session_and_logs_out_the_others(tmp_path, live_server):
    env = user_env(tmp_path, live_server)
    laptop = user_env(tmp_path, live_server, "laptop", FLUX_PASSWORD=OLD)  # a second machine
    made = flux("account", "register", "carol", stdin=f"{OLD}\n{OLD}\n", **env)
    assert made.returncode == 0, made.stderr
    address = re.search(r"fx1[0-9a-f]{40}", made.stdout).group(0)
    assert flux("account", "login", "carol", **laptop).returncode == 0
    assert flux("send", address, "before the change", **env).returncode == 0
    assert live_account_sessions(tmp_path) == 2

    changed = flux("account", "passwd", stdin=f"{OLD}\n{NEW}\n{NEW}\n", **env)
    assert changed.returncode == 0, changed.stderr
    assert "password changed for carol" in changed.stdout
    assert "1 other session logged out" in changed.stdout
    assert live_account_sessions(tmp_path) == 1

    # this machine's session still works, and the mail and the address are the same
    me = json.loads(flux("account", "whoami", "--json", **env).stdout)
    assert me["address"] == address
    listed = json.loads(flux("inbox", "--json", **env).stdout)
    assert [m["content"] for m in listed] == ["before the change"]
    # the other machine was logged out; the old password no longer logs in, the new one does
    one_line_failure(flux("account", "whoami", **laptop), "flux account login carol")
    one_line_failure(flux("account", "login", "carol", **laptop), "password")
    again = flux("account", "login", "carol", **{**laptop, "FLUX_PASSWORD": NEW})
    assert again.returncode == 0, again.stderr
    assert address in again.stdout


def test_passwd_from_the_environment_and_its_errors(tmp_path, live_server):
    env = user_env(tmp_path, live_server, FLUX_PASSWORD=OLD)
    assert flux("account", "register", "dora", **env).returncode == 0

    wrong = flux("account", "passwd", **{**env, "FLUX_PASSWORD": "not the one", "FLUX_NEW_PASSWORD": NEW})  # fmt: skip
    one_line_failure(wrong, "wrong password")
    short = flux("account", "passwd", **{**env, "FLUX_NEW_PASSWORD": "short"})
    one_line_failure(short, "new_password")
    # neither refusal touched the kept session or the password
    assert flux("account", "whoami", **env).returncode == 0
    assert live_account_sessions(tmp_path) == 1

    done = flux("account", "passwd", "--account", "dora", **{**env, "FLUX_NEW_PASSWORD": NEW})
    assert done.returncode == 0, done.stderr
    assert "password changed for dora" in done.stdout and "0 other sessions" in done.stdout
    assert flux("account", "login", "dora", **{**env, "FLUX_PASSWORD": NEW}).returncode == 0


def test_passwd_needs_a_login(tmp_path, live_server):
    env = user_env(tmp_path, live_server, FLUX_PASSWORD=OLD, FLUX_NEW_PASSWORD=NEW)
    one_line_failure(flux("account", "passwd", **env), "not logged in", "flux account login")
    assert "FLUX_NEW_PASSWORD" in flux("account", "passwd", "--help", **env).stdout
