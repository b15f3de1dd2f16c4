"""`FluxIdentity`: a protocol `Identity` that can also read and write its key file.

The file is written with mode 0600 from the start (never world-readable, not even briefly).
"""

from __future__ import annotations

import os
from pathlib import Path

from .protocol.identity import Identity, keyfile_is_protected


class FluxIdentity(Identity):
    """The prototype's `FluxIdentity`: `generate()`, `address`, `sign()`, `pub_b64()`, files."""

    __slots__ = ()

    def save(self, path: str | os.PathLike[str], passphrase: str | None = None) -> Path:
        target = Path(path)
        text = self.to_keyfile(passphrase)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(target, 0o600)  # O_CREAT's mode does not apply to an existing file
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: str | None = None) -> FluxIdentity:
        return cls.from_keyfile(Path(path).read_text(), passphrase)

    @staticmethod
    def file_is_protected(path: str | os.PathLike[str]) -> bool:
        return keyfile_is_protected(Path(path).read_text())

    # -- the prototype's names for the same things (its README and main.py use them) --------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> FluxIdentity:
        """The prototype's name for `load` (an unprotected key file)."""
        return cls.load(path)

    def export_private(self) -> str:
        """The prototype's name for `private_b64`: the base64url Ed25519 seed."""
        return self.private_b64()

    def pub_bytes(self) -> bytes:
        """The prototype's accessor for `public_key` (32 raw bytes)."""
        return self.public_key
