"""Protocol limits (docs/PROTOCOL.md §8). Servers may tighten some; none may loosen v1.0's."""

from __future__ import annotations

VERSION = "1.0"
MAX_CONTENT_BYTES = 65_536
MAX_SUBJECT_BYTES = 4_096
MAX_RECIPIENTS = 100  # to + cc + bcc of one message
MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_ROUTE_HOPS = 32
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_PENDING_PER_ADDRESS = 500
WS_HEARTBEAT_S = 20
TAMPER_STRIKE_THRESHOLD = 3
RESERVED_TAGS = frozenset({"important", "favorited"})
