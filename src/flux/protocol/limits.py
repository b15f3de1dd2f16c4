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
#: the largest WebSocket frame a server sends and a client accepts (docs/API.md, "WebSocket");
#: room for one message at the largest request body (256 KiB by default) and then some
WS_MAX_FRAME_BYTES = 1 << 20
TAMPER_STRIKE_THRESHOLD = 3
RESERVED_TAGS = frozenset({"important", "favorited"})
