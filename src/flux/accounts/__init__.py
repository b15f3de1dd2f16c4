"""FLUX accounts: usernames for people, with custodial keys kept safe (BRIEF §2.3, §2.8).

Three kinds of account give a person `name@domain`:

* **password**: the server generates and holds the key, sealed under the password with
  argon2id (keys.py); a login opens a session (`X-Flux-Session`) that signs for them;
* **claimed**: a person who holds their own key claims a name by signing for it
  (claims.py); the server holds no key, and they authenticate with key-proof sessions;
* **oauth**: made by a deployment's OAuth sign-in (oauth.py), custodial like a password
  account but sealed under the server's custody key.

Modules: `store` (AccountStore: memory, SQLite), `keys` (pure key protection), `claims`
(pure claim check), `names`, `limiter`, `admission` (registration policy), `service`
(`Accounts`, what the routes call), `oauth`. This package sits below `flux.server` and
imports nothing from it.
"""

from .admission import Admission
from .claims import claim_payload, verify_claim
from .errors import ACCOUNT_ERROR_CLASSES
from .keys import DEFAULT_COST, KdfCost, custody_key_for
from .limiter import LoginLimiter
from .names import USERNAME_RE, check_username
from .oauth import complete_oauth_login
from .service import Accounts, Login
from .store import (
    Account,
    AccountKind,
    AccountStore,
    MemoryAccountStore,
    OAuthLink,
    SQLiteAccountStore,
)

__all__ = [
    "ACCOUNT_ERROR_CLASSES", "DEFAULT_COST", "USERNAME_RE", "Account", "AccountKind",
    "AccountStore", "Accounts", "Admission", "KdfCost", "Login", "LoginLimiter",
    "MemoryAccountStore", "OAuthLink", "SQLiteAccountStore", "check_username",
    "claim_payload", "complete_oauth_login", "custody_key_for", "verify_claim",
]  # fmt: skip
