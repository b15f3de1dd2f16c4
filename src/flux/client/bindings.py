"""Known `name@domain` → address bindings, remembered on first use (BRIEF §Routing).

A JSON file, written atomically with mode 0600 (its directory made 0700 when missing):

    {"bindings": {"bob@example.org": {"address", "pub", "first_seen",
                                      "changed"?: [{"address", "pub", "seen"}]}},
     "keys": {"fx1…": {"pub", "first_seen"}}}

`changed` lists each other address a known name later resolved to (the refused sighting
that raised BindingChanged), so `flux contacts` can warn as ssh does for a changed host
key; `keys` are the senders' keys seen on verified mail. Times are unix seconds. Without a
path the bindings live only as long as the object.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import BindingChanged, FluxClientError

__all__ = ["KnownBindings"]


class KnownBindings:
    """Trust-on-first-use store: `check` records a new binding and raises `BindingChanged`
    when a known one resolves to a different address."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._bindings: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            self._bindings, self._keys = _load(self.path)

    def get(self, handle: str) -> str | None:
        """The address remembered for `handle` (lower-cased `name@domain`), if any."""
        entry = self._bindings.get(handle.lower())
        return entry["address"] if entry else None

    def check(self, handle: str, address: str, pub: str) -> None:
        """Remember a first sighting; raise BindingChanged if `handle` was bound elsewhere."""
        key = handle.lower()
        known = self.get(key)
        if known is None:
            self._remember(key, address, pub)
        elif known != address:
            self._note_change(key, address, pub)
            raise BindingChanged(key, known, address)

    def names(self) -> dict[str, dict[str, Any]]:
        """Every remembered binding, `{handle: {address, pub, first_seen, changed?}}` (a
        copy, sorted by handle)."""
        return {k: dict(v) for k, v in sorted(self._bindings.items())}

    def name_of(self, address: str) -> str | None:
        """The first handle (sorted) remembered as bound to `address`, if any."""
        return next((k for k, v in sorted(self._bindings.items()) if v["address"] == address),
                    None)  # fmt: skip

    def keys(self) -> dict[str, dict[str, Any]]:
        """Senders' keys seen on verified mail, `{address: {pub, first_seen}}` (a copy)."""
        return {k: dict(v) for k, v in sorted(self._keys.items())}

    def see_key(self, address: str, pub: str) -> None:
        """Remember that mail signed by `address` (whose key `pub` hashes to it: the caller
        verified the signature) was seen. An fx1 address is its key's hash, so its key
        cannot change; only the first sighting is written."""
        if address not in self._keys:
            self._keys[address] = {"pub": pub, "first_seen": int(time.time())}
            self._save()

    def _note_change(self, key: str, address: str, pub: str) -> None:
        changes = self._bindings[key].setdefault("changed", [])
        if not any(c.get("address") == address for c in changes):
            changes.append({"address": address, "pub": pub, "seen": int(time.time())})
            self._save()

    def accept(self, handle: str, address: str, pub: str = "") -> None:
        """Replace a binding the user has confirmed out of band."""
        self._remember(handle.lower(), address, pub)

    def forget(self, handle: str) -> None:
        if self._bindings.pop(handle.lower(), None) is not None:
            self._save()

    def _remember(self, key: str, address: str, pub: str) -> None:
        self._bindings[key] = {"address": address, "pub": pub, "first_seen": int(time.time())}
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        text = json.dumps({"bindings": self._bindings, "keys": self._keys}, indent=2,
                          sort_keys=True)  # fmt: skip
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".bindings-")  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, self.path)


def _load(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(bindings, keys) from the file. A damaged file is refused, never read as empty: it
    holds the bindings trusted on first use, and forgetting them silently would let a
    changed key pass unwarned. Raises FluxClientError (`contacts_damaged`) naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _damaged(path, "not a JSON object")
    bindings, keys = data.get("bindings") or {}, data.get("keys") or {}
    if not isinstance(bindings, dict) or not isinstance(keys, dict):
        raise _damaged(path, "`bindings` and `keys` must be objects")
    for handle, entry in bindings.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise _damaged(path, f"the binding of {handle!r} has no address")
    for address, entry in keys.items():
        if not isinstance(entry, dict):
            raise _damaged(path, f"the key seen for {address!r} is not an object")
    return dict(bindings), dict(keys)


def _damaged(path: Path, reason: str) -> FluxClientError:
    return FluxClientError(
        f"{path} is damaged ({reason}); it holds the names and keys you trust: repair it, "
        "or move it away to start with no contacts",
        code="contacts_damaged",
    )
