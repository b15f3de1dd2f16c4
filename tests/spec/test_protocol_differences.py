"""PROTOCOL.md §16, items 5-6: where the reference implementation's answers differ from the
text, as strict xfails (each becomes a failure, XPASS(strict), the day the code follows
the text; §16 and the mark are then updated with it). Item 4, settled, is kept here as a
passing test; items 1-3 were in test_answers.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest

from federation.fed_helpers import local_servers, signer
from flux.federation.signing import sign_request
from flux.protocol.chain import verify_chain
from flux.protocol.envelope import check_shape
from flux.protocol.errors import FluxError

ENVELOPE = {
    "v": "1.0", "id": "a" * 32, "from": "fx1" + "0" * 40, "to": "fx1" + "1" * 40, "t": 1,
    "content": "[encrypted]", "sig": "", "pub": "", "encrypted": True, "content_enc": "AAAA",
}  # fmt: skip


def refusal(envelope: dict) -> tuple[str, str | None]:
    with pytest.raises(FluxError) as caught:
        check_shape(envelope)
    return caught.value.code, caught.value.field


@pytest.mark.xfail(strict=True, reason="PROTOCOL.md §16 item 5: FLUX answers wrong_type")
def test_an_empty_enc_recipients_is_invalid_value() -> None:
    assert refusal({**ENVELOPE, "enc_recipients": {}}) == ("invalid_value", "enc_recipients")


@pytest.mark.xfail(strict=True, reason="PROTOCOL.md §16 item 5: field 'enc_recipients key'")
def test_a_key_of_enc_recipients_that_is_no_address_names_enc_recipients() -> None:
    assert refusal({**ENVELOPE, "enc_recipients": {"x": "AAAA"}}) == ("invalid_value", "enc_recipients")  # fmt: skip


@pytest.mark.xfail(strict=True, reason="PROTOCOL.md §16 item 6: reported as the value's text")
def test_a_record_whose_server_is_not_a_string_is_reported_as_question_mark() -> None:
    check = verify_chain({"integrity_chain": [{"server": 5}]}, None)
    assert [h.server for h in check.hops] == ["?"]


async def test_a_refused_results_id_is_a_string_or_null(tmp_path: Path) -> None:
    """Formerly PROTOCOL.md §16 item 4 (the id was echoed whatever it was)."""
    async with local_servers(tmp_path, "ab") as s:
        a, b = s["a"], s["b"]
        body = json.dumps({"txn": "t", "from_server": signer(a).name, "messages": [{"id": 7}]}).encode()  # fmt: skip
        headers = sign_request(signer(a), "POST", signer(b).name, "/federation/deliver", body, now_s=int(time.time()))  # fmt: skip
        async with aiohttp.ClientSession() as http, http.post(b.url + "/federation/deliver", data=body, headers=headers) as r:  # fmt: skip
            answer = await r.json()
    assert r.status == 200, answer
    assert answer["results"][0]["id"] is None, answer
