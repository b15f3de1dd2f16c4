"""The server's persistent Ed25519 signing key (BRIEF §2.4), and its rotation.

The prototype made a new key at every start, so nothing it signed could be checked later.
FLUX keeps one key in the data directory, created on first start with mode 0600 (never
readable by others, not even briefly), and publishes it with the time it became valid.

Rotation (PROTOCOL.md §10.2, `flux admin rotate-key`): a new key becomes current and the
old one's *public* half moves to `retired` with `valid_until` = the rotation time, so what
it signed before still verifies at every peer (they fetch `retired_keys` from
/federation/info); its private half is dropped. The file also keeps `custody_seed`, the
secret the account custody key is derived from (accounts/keys.py): it is the first key's
seed and survives rotations, so custodial accounts stay readable. Servers read the file at
start: after a rotation, restart every process that shares it.

    {"address": "fx1…", "private_key": "<b64url seed>", "valid_from": ms,
     "custody_seed": "<b64url>", "retired": [{"pub": "<b64url>", "valid_from": ms,
                                              "valid_until": ms}, ...]}
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..federation.keys import parse_info
from ..protocol.chain import PublishedKey, ServerSigner
from ..protocol.encoding import b64d, b64e
from ..protocol.errors import FluxError, KeyFileError
from ..protocol.identity import Identity

KEY_FILE = "server_key.json"
log = logging.getLogger("flux.server")


@dataclass(frozen=True, slots=True)
class ServerKey:
    """The signer, when its key became valid, and the keys it replaced (all published
    at /federation/info)."""

    signer: ServerSigner
    valid_from: int
    retired: tuple[PublishedKey, ...] = ()
    custody_seed: bytes | None = None  #: None: the current key's seed (never rotated)

    def published(self) -> PublishedKey:
        return PublishedKey(self.signer.identity.public_key, valid_from=self.valid_from)

    def all_published(self) -> list[PublishedKey]:
        """The current key and the retired ones: what verifies this server's records."""
        return [self.published(), *self.retired]

    @property
    def custody(self) -> bytes:
        return self.custody_seed or self.signer.identity.seed


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


def rotate(
    data_dir: Path, now_ms: int, randbytes: Callable[[int], bytes] = os.urandom
) -> tuple[PublishedKey, PublishedKey]:
    """Make a new current key and retire the old one at `now_ms`; return (old, new).

    The file is replaced atomically (written beside it, fsynced, renamed), so a crash
    leaves either the old file or the new one. Raises KeyFileError.
    """
    path = data_dir / KEY_FILE
    if not path.exists():
        raise KeyFileError(f"{path}: no server key to rotate")
    old = _load(path, "rotate.invalid")
    data = json.loads(path.read_text(encoding="utf-8"))
    identity = Identity.generate(randbytes)
    retired = PublishedKey(old.signer.identity.public_key, old.valid_from, now_ms)
    data.update(
        address=identity.address, private_key=identity.private_b64(), valid_from=now_ms,
        custody_seed=b64e(old.custody),
        retired=[*data.get("retired", []), {"pub": b64e(retired.pub),
                 "valid_from": retired.valid_from, "valid_until": now_ms}],
    )  # fmt: skip
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    log.info("event=server_key_rotated path=%s", path)
    return retired, PublishedKey(identity.public_key, now_ms)


def _load(path: Path, domain: str) -> ServerKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("event=server_key_permissions path=%s mode=%o fixed=0600", path, mode)
        os.chmod(path, 0o600)
    text = path.read_text(encoding="utf-8")
    identity = Identity.from_keyfile(text)
    data = json.loads(text)
    try:
        valid_from = int(data.get("valid_from", 0))
        retired = tuple(parse_info({"keys": data["retired"]})) if data.get("retired") else ()
        custody = data.get("custody_seed")
        custody_seed = b64d(custody, field="custody_seed", length=32) if custody else None
    except (TypeError, ValueError, FluxError) as exc:
        raise KeyFileError(f"{path}: {exc}") from exc
    return ServerKey(ServerSigner(domain, identity), valid_from, retired, custody_seed)
