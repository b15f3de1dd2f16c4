"""HTTP routes, one module per area. Each is a small class built with exactly what it
needs (no service locator) whose `routes()` lists its aiohttp route definitions."""

from .accounts import AccountRoutes
from .auth import AuthRoutes
from .federation import FederationRoutes
from .integrity import IntegrityRoutes
from .mail import MailRoutes
from .ops import OpsRoutes

__all__ = [
    "AccountRoutes", "AuthRoutes", "FederationRoutes", "IntegrityRoutes", "MailRoutes",
    "OpsRoutes",
]  # fmt: skip
