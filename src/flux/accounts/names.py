"""Usernames: what a valid one is, and how to make one from a free-form suggestion.

A username is the `name` of `name@domain` (BRIEF "Routing"): lower-case so that one person
has one spelling, at most 32 characters (so it can never be mistaken for an fx1 address,
which is 43), starting with a letter or digit.
"""

from __future__ import annotations

import re
import unicodedata

from ..protocol.errors import InvalidValue, WrongType

__all__ = ["MAX_USERNAME", "USERNAME_RE", "check_username", "username_from"]

MAX_USERNAME = 32
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}\Z")  # \Z: "$" would accept "name\n"
USERNAME_RULE = "1-32 characters: a-z, 0-9, '.', '_' or '-', starting with a letter or digit"


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
