"""Known `name@domain` → address bindings, remembered on first use (BRIEF §Routing).

A JSON file `{"bindings": {"bob@example.org": {"address", "pub", "first_seen"}}}`, written
atomically with mode 0600. Without a path the bindings live only as long as the object.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import BindingChanged

__all__ = ["KnownBindings"]


class KnownBindings:
    """Trust-on-first-use store: `check` records a new binding and raises `BindingChanged`
    when a known one resolves to a different address."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._bindings: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            data = json.loads(self.path.read_text())
            self._bindings = dict(data.get("bindings") or {})

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
            raise BindingChanged(key, known, address)

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
        text = json.dumps({"bindings": self._bindings}, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".bindings-")  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, self.path)
