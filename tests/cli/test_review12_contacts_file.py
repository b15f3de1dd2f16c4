"""Review of issue 12: a damaged contacts file (`contacts.json`: the names and keys trusted
on first use) fails a command with one line naming the file and the fix, instead of a bare
`JSONDecodeError`/`AttributeError`/`TypeError`; it is never read as empty, which would
forget the pinned bindings and let a changed key pass unwarned."""

from __future__ import annotations

import json

import pytest
from cli_helpers import flux, make_key, one_line_failure, user_env

from flux.client import FluxClientError, KnownBindings

DAMAGED = [
    "not json",
    "[1, 2]",
    '{"bindings": [1]}',
    '{"bindings": {"bob@example.org": 5}}',
    '{"bindings": {"bob@example.org": {"pub": "x"}}}',
    '{"keys": {"fx1a": "x"}}',
    b"\xff\xfe",
]


@pytest.mark.parametrize("junk", DAMAGED)
def test_a_damaged_file_is_refused_by_name(tmp_path, junk):
    path = tmp_path / "contacts.json"
    path.write_bytes(junk if isinstance(junk, bytes) else junk.encode())
    with pytest.raises(FluxClientError) as caught:
        KnownBindings(path)
    assert caught.value.code == "contacts_damaged"
    assert str(path) in caught.value.message and "move it away" in caught.value.message
    assert path.read_bytes() == (junk if isinstance(junk, bytes) else junk.encode())  # kept


def test_a_good_file_still_loads(tmp_path):
    path = tmp_path / "contacts.json"
    good = {"bindings": {"bob@example.org": {"address": "fx1b", "pub": "p", "first_seen": 1}},
            "keys": {"fx1b": {"pub": "p", "first_seen": 1}}}  # fmt: skip
    path.write_text(json.dumps(good))
    known = KnownBindings(path)
    assert known.get("BOB@example.org") == "fx1b" and known.name_of("fx1b") == "bob@example.org"
    assert set(known.keys()) == {"fx1b"}


def test_the_cli_names_the_damaged_file_in_one_line(tmp_path, live_server):
    env = user_env(tmp_path, live_server)
    key = tmp_path / "k.json"
    make_key(key)
    assert flux("register", "--key", str(key), **env).returncode == 0
    path = tmp_path / "cfg" / "flux" / "contacts.json"
    path.write_text("[1]")
    for args in (("inbox", "--key", str(key)), ("contacts",)):
        one_line_failure(flux(*args, **env), str(path), "move it away")
    assert path.read_text() == "[1]"
