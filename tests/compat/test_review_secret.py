"""Review of issue 11: `--legacy-tokens` with the prototype's published default secret.

The prototype's clients that never set FLUX_SECRET derive their tokens from
"insecure-default-change-me", so a migrating operator is tempted to set exactly that on
the FLUX server to keep them working. Then anyone can derive every mailbox's token: the
server has a default secret after all, which PROTOCOL.md §13 item 3 refuses. The start
is refused by name."""

from __future__ import annotations

import pytest

from flux.compat.library import make_app
from flux.server.config import ServerConfig

PROTOTYPE_DEFAULT = "insecure-default-change-me"


def test_the_prototypes_published_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="default"):
        ServerConfig(domain="flux.test", legacy_tokens=True, secret=PROTOTYPE_DEFAULT)


def test_make_app_with_the_published_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="default"):
        make_app(legacy_secret=PROTOTYPE_DEFAULT, mesh_config_path=None)
