"""Review of issue 12: a damaged session cache never fails a command.

An entry of the right shape with a field of the wrong type (an `expires_at` that is a
string, a token that is not one) used to reach the clock comparison and fail every command
with `TypeError`, until the user found and deleted the file. Such an entry now counts as
absent, like a malformed file; the next command proves its key again and writes a good one.
"""

from __future__ import annotations

import json

import pytest
from cli_helpers import flux, make_key, user_env

from flux.client.session_cache import CachedSession, SessionCache

GOOD = {"server": "http://h:1", "identity": "fx1a", "token": "t", "kind": "key",
        "expires_at": None, "username": None}  # fmt: skip


@pytest.mark.parametrize(
    "damage",
    [
        {"expires_at": "tomorrow"},
        {"expires_at": 1.5},
        {"expires_at": True},
        {"expires_at": [1]},
        {"token": ["x"]},
        {"token": ""},
        {"token": None},
        {"kind": "root"},
        {"kind": None},
        {"server": 7},
        {"identity": {}},
        {"username": 3},
    ],
)
def test_an_entry_with_a_wrong_field_counts_as_absent(tmp_path, damage):
    cache = SessionCache(tmp_path / "sessions.json")
    cache.path.write_text(json.dumps({"http://h:1 fx1a": {**GOOD, **damage}}))
    assert cache.get("http://h:1", "fx1a", now_ms=0) is None
    assert cache.sessions("http://h:1", "key", now_ms=0) == []
    cache.put(CachedSession("http://h:1", "fx1a", "fresh"))
    assert cache.get("http://h:1", "fx1a", now_ms=0).token == "fresh"


def test_the_good_entry_still_counts(tmp_path):
    cache = SessionCache(tmp_path / "sessions.json")
    cache.path.write_text(json.dumps({"http://h:1 fx1a": {**GOOD, "expires_at": 10}}))
    assert cache.get("http://h:1", "fx1a", now_ms=0).token == "t"
    assert cache.get("http://h:1", "fx1a", now_ms=10) is None  # expired


def test_a_command_with_a_damaged_kept_session_proves_its_key_again(tmp_path, live_server):
    env = user_env(tmp_path, live_server)
    key = tmp_path / "k.json"
    make_key(key)
    assert flux("register", "--key", str(key), **env).returncode == 0
    path = tmp_path / "cfg" / "flux" / "sessions.json"
    kept = json.loads(path.read_text())
    for entry in kept.values():
        entry["expires_at"] = "tomorrow"
    path.write_text(json.dumps(kept))

    listed = flux("inbox", "--json", "--key", str(key), **env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    rewritten = json.loads(path.read_text())
    assert all(isinstance(e["expires_at"], int) for e in rewritten.values())
