"""Review of issue 10 §6 (operations fail safe): tokens never reach logs.

Found and fixed (logs.redact): the server reads query names percent-decoded (yarl), so
`?%74oken=<token>` is the legacy token, and the access log printed it whole: the redaction
matched the names as written only. Now a name is compared as the server reads it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from flux.server.config import ServerConfig
from flux.server.logs import redact
from flux.server.runner import start_server


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /x?%74oken=abc HTTP/1.1", "GET /x?%74oken=*** HTTP/1.1"),
        ("GET /x?tok%65n=abc&limit=5", "GET /x?tok%65n=***&limit=5"),
        ("GET /x?%53ESSION=abc;a=1", "GET /x?%53ESSION=***;a=1"),
        ("GET /x?tokens=keep&tag=a", "GET /x?tokens=keep&tag=a"),  # not a credential's name
    ],
)
def test_percent_encoded_credential_names_are_redacted(line: str, expected: str) -> None:
    assert redact(line) == expected


async def test_a_percent_encoded_token_name_never_reaches_the_access_log(
    tmp_path: Path, caplog: Any
) -> None:
    config = ServerConfig.from_env(
        {}, data_dir=tmp_path, host="127.0.0.1", port=0, backend="sqlite", access_log=True,
        legacy_tokens=True, secret="s" * 32,
    )  # fmt: skip
    running = await start_server(config)
    secret = "SEKRIT0123456789abcdef"
    assert URL(f"/x?%74oken={secret}").query["token"] == secret  # the server reads it so
    try:
        with caplog.at_level(logging.INFO):
            async with aiohttp.ClientSession() as http:
                for name in ("%74oken", "tok%65n", "%54OKEN"):
                    url = URL(running.url + f"/health?{name}={secret}", encoded=True)
                    async with http.get(url) as resp:
                        await resp.read()
            for _ in range(100):  # the access log line is written after the response
                if sum(r.name == "flux.access" for r in caplog.records) >= 3:
                    break
                await asyncio.sleep(0.02)
    finally:
        await running.stop()
    assert sum(r.name == "flux.access" for r in caplog.records) >= 3
    for record in caplog.records:
        assert secret not in record.getMessage(), record.getMessage()
        assert all(secret not in str(v) for v in vars(record).values()), record.getMessage()
