"""Usernames: what a valid one is, and how to make one from a free-form suggestion.

A username is the `name` of `name@domain` (BRIEF "Routing"): lower-case so that one person
has one spelling, at most 32 characters (so it can never be mistaken for an fx1 address,
which is 43), starting with a letter or digit.

Reserved names (docs/OPERATING.md, "Reserved names"). Some names speak for the server or
its operator, and mail from them is believed for that: the role mailboxes of RFC 2142
(postmaster, hostmaster, webmaster, abuse, noc, security, and the rest of its §3-§5), the
mail system's own sender (mailer-daemon: this server's bounces carry it as `_from_name`,
server/names.py), the administrative names certificate authorities mail to prove control
of a domain (admin, administrator, hostmaster, postmaster, webmaster: CA/Browser Forum
Baseline Requirements §3.2.2.4.4), root, and no-reply. Nobody may register, claim or be
given one through the public paths (`Accounts.register`, `claim`, OAuth sign-up). The
comparison ignores case and the separators '.', '_' and '-', so `Post-Master`, `no_reply`
and `mailer.daemon` are the same reserved names, not look-alikes free to take. The account
store itself does not check: what the operator binds through it directly is theirs to bind.

Look-alikes. A username is ASCII (`USERNAME_RE`), so Unicode confusables (Cyrillic 'а',
fullwidth 'ａ', combining marks) can never be bound; but ASCII has look-alikes of its own,
and a client shows `adm1n@domain` or `postrnaster@domain` in fonts where they read as the
real thing. So the comparison is on a skeleton (as Unicode TR39's confusable skeletons,
for the few ASCII cases): '0' reads as 'o', '1' and 'i' as 'l', 'rn' as 'm', 'vv' as 'w'.
And before that, the comparison takes what a person may have typed, not only what is
valid: NFKD with combining marks dropped, case folded, spaces around it trimmed. A
fullwidth `ＡＤＭＩＮ` or ` admin ` is then refused as reserved (the reason a client
shows), not merely as malformed; either way nothing is bound.
"""

from __future__ import annotations

import re
import unicodedata

from ..protocol.errors import InvalidValue, WrongType

__all__ = [
    "MAX_USERNAME", "RESERVED_NAMES", "USERNAME_RE", "NameReserved", "check_not_reserved",
    "check_username", "is_reserved", "reserved_as", "username_from",
]  # fmt: skip

MAX_USERNAME = 32
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}\Z")  # \Z: "$" would accept "name\n"
USERNAME_RULE = "1-32 characters: a-z, 0-9, '.', '_' or '-', starting with a letter or digit"

#: names nobody may take through a public path (module notes), as the rule compares them
RESERVED_NAMES = frozenset({
    # RFC 2142 §5 (mail and other services), §4 (network operations), §3 (business)
    "postmaster", "hostmaster", "webmaster", "usenet", "news", "www", "uucp", "ftp",
    "abuse", "noc", "security", "info", "marketing", "sales", "support",
    # the mail system and the machine's administrators
    "mailerdaemon", "noreply", "root", "admin", "administrator",
})  # fmt: skip
_SEPARATORS = re.compile(r"[._-]")
#: ASCII look-alikes (module notes, "Look-alikes"): each read as the letter it passes for
_LOOKALIKES = (("rn", "m"), ("vv", "w"))
_LOOKALIKE_CHARS = str.maketrans({"0": "o", "1": "l", "i": "l"})


def _skeleton(name: str) -> str:
    """`name` as the reserved-name rule compares it (module notes)."""
    decomposed = unicodedata.normalize("NFKD", name.strip())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    folded = _SEPARATORS.sub("", plain)
    for pair, letter in _LOOKALIKES:
        folded = folded.replace(pair, letter)
    return folded.translate(_LOOKALIKE_CHARS)


#: skeleton -> the reserved name it reads as
_RESERVED_SKELETONS = {_skeleton(n): n for n in RESERVED_NAMES}


class NameReserved(InvalidValue):
    """A reserved name (module notes): 400 `invalid_value` naming the field, with
    `reason: "reserved"` so a client can say why rather than only that the name failed."""

    reason = "reserved"

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "reason": self.reason}


def reserved_as(name: str) -> str | None:
    """The reserved name (as RESERVED_NAMES spells it) that `name` is or reads as, whatever
    its case, separators, look-alikes and Unicode form (module notes); None if none."""
    return _RESERVED_SKELETONS.get(_skeleton(name))


def is_reserved(name: str) -> bool:
    """Whether `name` is a reserved name, or reads as one (`reserved_as`)."""
    return reserved_as(name) is not None


def check_not_reserved(value: object, field: str = "username") -> None:
    """Raise NameReserved naming `field` if `value` is, or reads as, a reserved name (any
    string: a case or Unicode variant is refused as reserved, not as a malformed name)."""
    if not isinstance(value, str):
        return
    reserved = reserved_as(value)
    if reserved is not None:
        shown = ascii(value.strip())[1:-1]  # what was sent, its non-ASCII escaped
        reads = (
            "" if _SEPARATORS.sub("", shown.lower()) == reserved else f" (it reads as {reserved})"
        )
        raise NameReserved(
            f"{field} {shown.lower()} is reserved for this server{reads}", field=field
        )


def check_username(value: object, field: str = "username") -> str:
    """Return `value` if it is a valid username; raise WrongType/InvalidValue naming `field`."""
    if not isinstance(value, str):
        raise WrongType(f"{field} must be a string", field=field)
    if not USERNAME_RE.match(value):
        raise InvalidValue(f"{field} must be {USERNAME_RULE}", field=field)
    return value


def username_from(suggestion: str, fallback: str = "user") -> str:
    """The closest valid username to a free-form `suggestion` (an OAuth display name or
    e-mail address): its local part, accents dropped, lower-cased, other characters as '-'."""
    local = suggestion.split("@", 1)[0]
    ascii_text = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9._-]+", "-", ascii_text.lower())
    name = name.lstrip("._-")[:MAX_USERNAME].rstrip("._-")
    return name if USERNAME_RE.match(name) else fallback
