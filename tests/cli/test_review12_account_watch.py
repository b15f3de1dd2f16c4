"""Review of issue 12: `flux watch` with a password account's session (the server's /ws
takes account sessions now; the command used to refuse them). Mail is printed as it
arrives, its signature checked; a session ended on the server (logout) ends the watch in
one line with the fix; Ctrl-C stops it cleanly. Real server, real processes."""

from __future__ import annotations

import json
import re

from cli_helpers import Running, flux, make_key, user_env


def test_watch_with_an_account(tmp_path, live_server):
    env = user_env(tmp_path, live_server, FLUX_PASSWORD="correct horse battery")
    assert flux("account", "register", "wanda", **env).returncode == 0
    wanda = json.loads(flux("account", "whoami", "--json", **env).stdout)["address"]
    key = tmp_path / "k.json"
    make_key(key)
    assert flux("register", "--key", str(key), **env).returncode == 0
    early = flux("send", wanda, "waiting for you", "--key", str(key), **env)
    assert early.returncode == 0, early.stderr

    watcher = Running("watch", forked=True, **env)
    try:
        watcher.wait_for(r"^watching wanda at ")
        assert re.search(r"✓ .* from fx1\S+ waiting for you",
                         watcher.wait_for("waiting for you").string)  # fmt: skip
        sent = flux("send", wanda, "live one", "--subject", "hi", "--key", str(key), **env)
        assert sent.returncode == 0, sent.stderr
        line = watcher.wait_for("live one").string
        assert line.startswith("✓") and "hi:" in line, line
        # both were handed out on the socket and acknowledged: no longer pending
        listed = json.loads(flux("inbox", "--json", **env).stdout)
        assert {m["_status"] for m in listed} == {"delivered"}, listed

        assert flux("account", "logout", **env).returncode == 0  # revoked on the server
        assert watcher.proc.wait(timeout=30) == 1, watcher.output
        watcher.wait_for("has ended")
        assert "flux account login wanda" in watcher.output
        assert "Traceback" not in watcher.output
    finally:
        watcher.kill()


def test_ctrl_c_stops_an_account_watch(tmp_path, live_server):
    env = user_env(tmp_path, live_server, FLUX_PASSWORD="correct horse battery")
    assert flux("account", "register", "walt", **env).returncode == 0
    watcher = Running("watch", forked=True, **env)
    try:
        watcher.wait_for(r"^watching walt")
        assert watcher.interrupt() == 0
        assert "stopped" in watcher.output and "Traceback" not in watcher.output
    finally:
        watcher.kill()
