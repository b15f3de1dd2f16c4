"""Review of issue 11, as a newcomer: FLUX's CLI against a prototype server without
`--legacy-secret` used to say only "404 bad_answer: server answered HTTP 404"."""

from __future__ import annotations

from pathlib import Path

import pytest

from compat.proto import ProtoServer, require_seed
from flux.client import FluxClient
from flux.client.errors import FluxClientError
from flux.protocol import Identity


async def test_a_prototype_server_without_the_secret_names_the_way_out(tmp_path: Path) -> None:
    require_seed()
    with ProtoServer(tmp_path / "proto") as proto:
        client = FluxClient(Identity.generate(), proto.url)
        with pytest.raises(FluxClientError) as caught:
            await client.inbox()
        await client.close()
    assert caught.value.code == "no_challenge" and caught.value.field == "legacy_secret"
    assert "--legacy-secret" in str(caught.value)
