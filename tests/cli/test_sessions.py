"""The CLI keeps one session per server and identity (client/session_cache.py): commands in
a row share it, `flux logout` revokes it, and a revoked one is replaced without a word.

Sessions are counted where they live: the server's own database (`sessions` table of the
SQLite file in its data directory), read beside the running server (WAL)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

from cli_helpers import flux, make_key


def _sessions(tmp_path, address):
    """(opened, live) key sessions the server holds for `address`."""
    with sqlite3.connect(tmp_path / "server" / "flux.db") as db:
        rows = db.execute("SELECT revoked FROM sessions WHERE address = ?", (address,)).fetchall()
    return len(rows), sum(1 for (revoked,) in rows if not revoked)


def _env(tmp_path, key, server):
    return {"FLUX_KEY": str(key), "FLUX_SERVER": server, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}


def test_twenty_commands_share_one_session_and_logout_revokes_it(tmp_path, live_server):
    key = tmp_path / "alice.json"
    alice = make_key(key)
    env = _env(tmp_path, key, live_server)
    assert flux("register", **env).returncode == 0
    for n in range(19):
        result = flux("inbox", "--json", **env) if n % 2 else flux("send", alice, f"hi {n}", **env)
        assert result.returncode == 0, result.stderr
    assert _sessions(tmp_path, alice) == (1, 1)

    cache = tmp_path / "cfg" / "flux" / "sessions.json"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache.parent).st_mode) == 0o700
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["identity"] == alice and entry["kind"] == "key" and entry["expires_at"]

    out = flux("logout", **env)
    assert out.returncode == 0, out.stderr
    assert "logged out" in out.stdout
    assert _sessions(tmp_path, alice) == (1, 0)
    assert json.loads(cache.read_text()) == {}
    again = flux("logout", **env)
    assert again.returncode == 0 and "no session kept" in again.stdout


def test_a_revoked_kept_session_is_replaced_transparently(tmp_path, live_server):
    key = tmp_path / "bob.json"
    bob = make_key(key)
    env = _env(tmp_path, key, live_server)
    assert flux("register", **env).returncode == 0
    with sqlite3.connect(tmp_path / "server" / "flux.db") as db:  # revoked behind its back
        db.execute("UPDATE sessions SET revoked = 1")
    result = flux("inbox", "--json", **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert _sessions(tmp_path, bob) == (2, 1)
    assert flux("inbox", "--json", **env).returncode == 0
    assert _sessions(tmp_path, bob) == (2, 1)


def test_sessions_are_kept_per_identity(tmp_path, live_server):
    keys = [tmp_path / "a.json", tmp_path / "b.json"]
    addresses = [make_key(k) for k in keys]
    for key, address in zip(keys, addresses, strict=True):
        env = _env(tmp_path, key, live_server)
        assert flux("register", **env).returncode == 0
        assert flux("inbox", **env).returncode == 0
        assert _sessions(tmp_path, address) == (1, 1)
    kept = json.loads((tmp_path / "cfg" / "flux" / "sessions.json").read_text())
    assert sorted(e["identity"] for e in kept.values()) == sorted(addresses)


def test_a_url_without_scheme_is_accepted(tmp_path, live_server):
    key = tmp_path / "c.json"
    make_key(key)
    bare = live_server.removeprefix("http://")
    result = flux("register", **_env(tmp_path, key, bare))
    assert result.returncode == 0, result.stderr
    assert f"at {live_server}" in result.stdout
    wrong = flux("inbox", **_env(tmp_path, key, "ftp://" + bare))
    assert wrong.returncode == 2 and "http:// or https://" in wrong.stderr


def test_the_cache_file_is_private_whatever_the_umask_and_forgets_expired(tmp_path):
    from flux.client.session_cache import CachedSession, SessionCache, config_dir

    assert config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "flux"
    assert config_dir({"XDG_CONFIG_HOME": "relative"}).parts[-2:] == (".config", "flux")
    cache = SessionCache(tmp_path / "flux" / "sessions.json")
    old = os.umask(0)
    try:
        cache.put(CachedSession("http://h:1/", "fx1a", "tok", "key", expires_at=2_000))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600
    assert cache.get("http://h:1", "fx1a", now_ms=1_999).token == "tok"
    assert cache.get("http://h:1", "fx1a", now_ms=2_000) is None  # expired: prove again
    assert cache.get("http://h:1", "fx1b", now_ms=0) is None
    assert [p.name for p in cache.path.parent.iterdir()] == ["sessions.json"]  # no temp left


def test_a_damaged_cache_file_counts_as_empty(tmp_path):
    from flux.client.session_cache import CachedSession, SessionCache

    cache = SessionCache(tmp_path / "sessions.json")
    for junk in ("not json", "[1, 2]", '{"x y": {"token": 1, "unknown": 2}}'):
        cache.path.write_text(junk)
        assert cache.get("x", "y", now_ms=0) is None
        assert cache.sessions("x", "key", now_ms=0) == []
    cache.put(CachedSession("x", "y", "t"))
    assert cache.get("x", "y", now_ms=0).token == "t"


def test_the_latest_saved_account_session_comes_last(tmp_path):
    from flux.client.session_cache import CachedSession, SessionCache

    cache = SessionCache(tmp_path / "sessions.json")
    for name in ("zed", "amy", "zed"):
        cache.put(CachedSession("u", f"fx1{name}", "t", "account", username=name))
    assert [s.username for s in cache.sessions("u", "account", now_ms=0)] == ["amy", "zed"]
    assert cache.sessions("u", "key", now_ms=0) == []
