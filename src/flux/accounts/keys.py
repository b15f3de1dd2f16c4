"""Custodial key protection (pure: no I/O; randomness and cost are passed in).

A password account's Ed25519 seed is held by the server, so the server must be able to sign
with it while a copy of its database alone yields nothing (BRIEF §2.8). Three layers:

1. **Password hash.** argon2id (RFC 9106) in its PHC string form, only to check a login.
2. **Seed at rest.** The seed is sealed with XSalsa20-Poly1305 (`nacl.secret.SecretBox`)
   under a key derived from the password with argon2id *raw* output and a second, separate
   salt. The two salts differ, so the stored password hash says nothing about the sealing
   key; without the password the sealed seed is ciphertext, and each guess costs an argon2id.
3. **Seed in a session.** At login the seed is unsealed and re-wrapped under a key derived
   from the random session token (BLAKE2b keyed by the token, personalised so it is
   independent of the SHA-256 that identifies the session). The database keeps only
   SHA-256(token) and the wrapped seed: the token itself, which the client holds, is needed
   to unwrap it. Each request that signs unwraps the seed in memory and forgets it.

OAuth accounts have no password: their seed is sealed under a key derived from the
server's signing key (a file in the data directory, not in the database) and a per-account
salt, so a database copy alone still yields nothing; the server key file and the database
together do, which is the price of having no password.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import argon2
import nacl.exceptions
import nacl.secret
from argon2.low_level import Type, hash_secret_raw

__all__ = [
    "DEFAULT_COST", "KdfCost", "SealedSeed", "UnsealFailed", "custody_key_for",
    "hash_password", "open_custodial_seed", "open_password_seed", "password_matches",
    "seal_custodial_seed", "seal_password_seed", "session_token_hash", "unwrap_session_seed",
    "wrap_session_seed",
]  # fmt: skip

RandBytes = Callable[[int], bytes]
SALT_BYTES = 16
KEY_BYTES = nacl.secret.SecretBox.KEY_SIZE  # 32
NONCE_BYTES = nacl.secret.SecretBox.NONCE_SIZE  # 24


class UnsealFailed(Exception):
    """A sealed or wrapped seed did not open (wrong secret or damaged data). Deliberately
    says nothing more; callers turn it into their own refusal."""


@dataclass(frozen=True, slots=True)
class KdfCost:
    """argon2id cost. The default is RFC 9106's second recommended option (64 MiB, t=3)."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4

    def label(self) -> str:
        """How a seal was made, stored beside it so a later cost can still open old seals."""
        return f"argon2id:t={self.time_cost},m={self.memory_kib},p={self.parallelism}"

    @classmethod
    def from_label(cls, label: str) -> KdfCost:
        """The cost a `label()` names. Raises UnsealFailed for anything else."""
        kind, _, params = label.partition(":")
        try:
            values = dict(p.split("=", 1) for p in params.split(","))
            cost = cls(int(values["t"]), int(values["m"]), int(values["p"]))
        except (KeyError, ValueError) as exc:
            raise UnsealFailed("unknown key derivation") from exc
        if kind != "argon2id":
            raise UnsealFailed("unknown key derivation")
        return cost


DEFAULT_COST = KdfCost()
CUSTODY_LABEL = "custody:1"  #: the `key_kdf` of a seed sealed under the server's custody key


@dataclass(frozen=True, slots=True)
class SealedSeed:
    """A seed sealed at rest: `box` = nonce ‖ ciphertext, `salt` and `kdf` to re-derive."""

    box: bytes
    salt: bytes
    kdf: str


# -- password hash ------------------------------------------------------------------------


def _hasher(cost: KdfCost) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=cost.time_cost, memory_cost=cost.memory_kib, parallelism=cost.parallelism,
        type=Type.ID,
    )  # fmt: skip


def hash_password(password: str, cost: KdfCost = DEFAULT_COST) -> str:
    """The argon2id PHC string for `password` (its own random salt inside)."""
    return _hasher(cost).hash(password)


def password_matches(stored: str, password: str) -> bool:
    """Whether `password` matches the PHC string `stored` (its parameters are read from it)."""
    try:
        return _hasher(DEFAULT_COST).verify(stored, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


# -- the seed at rest ----------------------------------------------------------------------


def _seal(key: bytes, seed: bytes, randbytes: RandBytes) -> bytes:
    return bytes(nacl.secret.SecretBox(key).encrypt(seed, randbytes(NONCE_BYTES)))


def _open(key: bytes, box: bytes) -> bytes:
    try:
        return nacl.secret.SecretBox(key).decrypt(box)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise UnsealFailed("the seed does not open with this secret") from exc


def _password_key(password: str, salt: bytes, cost: KdfCost) -> bytes:
    return hash_secret_raw(
        password.encode("utf-8"), salt, time_cost=cost.time_cost, memory_cost=cost.memory_kib,
        parallelism=cost.parallelism, hash_len=KEY_BYTES, type=Type.ID,
    )  # fmt: skip


def seal_password_seed(
    seed: bytes, password: str, *, cost: KdfCost = DEFAULT_COST, randbytes: RandBytes = os.urandom
) -> SealedSeed:
    salt = randbytes(SALT_BYTES)
    return SealedSeed(
        _seal(_password_key(password, salt, cost), seed, randbytes), salt, cost.label()
    )


def open_password_seed(sealed: SealedSeed, password: str) -> bytes:
    """Raises UnsealFailed (wrong password, or damaged data)."""
    key = _password_key(password, sealed.salt, KdfCost.from_label(sealed.kdf))
    return _open(key, sealed.box)


def custody_key_for(server_seed: bytes) -> bytes:
    """The key that seals password-less (OAuth) seeds, derived from the server's signing
    seed, which lives in the data directory and never in the accounts database."""
    return hashlib.blake2b(server_seed, digest_size=KEY_BYTES, person=b"flux-custody:1").digest()


def _custodial_key(custody_key: bytes, salt: bytes) -> bytes:
    return hashlib.blake2b(salt, key=custody_key, digest_size=KEY_BYTES, person=b"flux-oauthseal1").digest()  # fmt: skip


def seal_custodial_seed(
    seed: bytes, custody_key: bytes, *, randbytes: RandBytes = os.urandom
) -> SealedSeed:
    salt = randbytes(SALT_BYTES)
    return SealedSeed(
        _seal(_custodial_key(custody_key, salt), seed, randbytes), salt, CUSTODY_LABEL
    )


def open_custodial_seed(sealed: SealedSeed, custody_key: bytes) -> bytes:
    """Raises UnsealFailed (another server key, or damaged data)."""
    if sealed.kdf != CUSTODY_LABEL:
        raise UnsealFailed("not sealed under the custody key")
    return _open(_custodial_key(custody_key, sealed.salt), sealed.box)


# -- the seed in a session ------------------------------------------------------------------


def session_token_hash(token: str) -> str:
    """What the store keeps to find a session: hex SHA-256 of the token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _session_key(token: str) -> bytes:
    # The token is 32 random bytes, so a fast keyed hash is as strong as any KDF here; the
    # personalisation keeps this key unrelated to session_token_hash's SHA-256.
    data = token.encode("utf-8", "replace")
    return hashlib.blake2b(data, digest_size=KEY_BYTES, person=b"flux-sesswrap:1").digest()


def wrap_session_seed(seed: bytes, token: str, *, randbytes: RandBytes = os.urandom) -> bytes:
    return _seal(_session_key(token), seed, randbytes)


def unwrap_session_seed(wrapped: bytes, token: str) -> bytes:
    """Raises UnsealFailed (another token, or damaged data)."""
    return _open(_session_key(token), wrapped)
