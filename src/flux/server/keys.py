"""The server's persistent Ed25519 signing key (BRIEF §2.4).

The prototype made a new key at every start, so nothing it signed could be checked later.
FLUX keeps one key in the data directory, created on first start with mode 0600 (never
readable by others, not even briefly), and publishes it with the time it became valid.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..protocol.chain import PublishedKey, ServerSigner
from ..protocol.errors import KeyFileError
from ..protocol.identity import Identity

KEY_FILE = "server_key.json"
log = logging.getLogger("flux.server")


@dataclass(frozen=True, slots=True)
class ServerKey:
    """The signer and when its key became valid (published at /federation/info)."""

    signer: ServerSigner
    valid_from: int

    def published(self) -> PublishedKey:
        return PublishedKey(self.signer.identity.public_key, valid_from=self.valid_from)


def load_or_create(
    data_dir: Path,
    domain: str,
    now_ms: int,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> ServerKey:
    """Read `data_dir/server_key.json`, or create it (0600) when there is none.

    Raises KeyFileError for a file that exists but cannot be used.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEY_FILE
    if not path.exists():
        _create(path, Identity.generate(randbytes), now_ms)
    return _load(path, domain)


def _create(path: Path, identity: Identity, now_ms: int) -> None:
    text = json.dumps(
        {"address": identity.address, "private_key": identity.private_b64(), "valid_from": now_ms}
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    log.info("event=server_key_created path=%s", path)


def _load(path: Path, domain: str) -> ServerKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("event=server_key_permissions path=%s mode=%o fixed=0600", path, mode)
        os.chmod(path, 0o600)
    text = path.read_text(encoding="utf-8")
    identity = Identity.from_keyfile(text)
    try:
        valid_from = int(json.loads(text).get("valid_from", 0))
    except (TypeError, ValueError) as exc:
        raise KeyFileError(f"{path}: valid_from is not an integer") from exc
    return ServerKey(ServerSigner(domain, identity), valid_from)
