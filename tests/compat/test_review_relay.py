"""Review of issue 11: a prototype peer's relay at /mesh/relay is bounded like /send.

A prototype-kind mesh's token travels in clear (OPERATING.md), so whoever saw one relay
can send more; what such a relay may cost this server must be what an unauthenticated
`/send` of the same bytes costs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp

from federation.fed_helpers import local_servers
from flux.compat.federation import mesh_token_header

TOKEN = "a-prototype-mesh-token-seen-in-clear"


def per_server(tmp: Path):
    def make(label: str, names: dict[str, str]) -> dict:
        doc = {"meshes": {"m": {"token": TOKEN, "mode": "broadcast", "kind": "prototype",
                                "peers": ["http://127.0.0.1:9", *(f"http://{n}" for n in names.values())]}}}  # fmt: skip
        path = tmp / f"{label}-mesh.json"
        path.write_text(json.dumps(doc))
        return {"mesh_config": path}

    return make


async def test_a_relay_naming_many_strangers_costs_no_more_than_a_send(tmp_path: Path) -> None:
    """A relay under the body limit naming ~30,000 distinct unhosted addresses is refused
    quickly: the hosted check neither compares every name with every other nor asks the
    store once per name before the envelope is even parsed."""
    async with local_servers(
        tmp_path, ["f"], open_mode=False, per_server=per_server(tmp_path)
    ) as s:
        server = s["f"]
        names = [f"{i:x}" for i in range(30_000)]
        body = json.dumps({"to": "y", "cc": names}, separators=(",", ":")).encode()
        assert len(body) < 256 * 1024
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.post(f"{server.url}/mesh/relay", data=body,
                                 headers=mesh_token_header(TOKEN)) as resp:  # fmt: skip
                answer = await resp.json()
            took = time.monotonic() - started
        assert resp.status in (400, 404, 413), answer
        assert took < 2.0, f"one relay held the server for {took:.1f} s"
