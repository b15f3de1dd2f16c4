"""PROTOCOL.md §16: where the reference implementation's answers differed from the text.
An open item is a strict xfail here (it becomes a failure, XPASS(strict), the day the code
follows the text; §16 and the mark are then updated with it). Every item is settled now,
and its test kept as a passing one: items 4-6 here, 1-3 in test_answers.py, 7 in
test_chain_key_fetches.py, 8 in test_refusal_fields.py."""

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


def test_an_empty_enc_recipients_is_invalid_value() -> None:
    """Formerly PROTOCOL.md §16 item 5 (answered wrong_type: the value has the right type)."""
    assert refusal({**ENVELOPE, "enc_recipients": {}}) == ("invalid_value", "enc_recipients")


def test_a_key_of_enc_recipients_that_is_no_address_names_enc_recipients() -> None:
    """Formerly PROTOCOL.md §16 item 5 (the field was `enc_recipients key`)."""
    assert refusal({**ENVELOPE, "enc_recipients": {"x": "AAAA"}}) == ("invalid_value", "enc_recipients")  # fmt: skip


@pytest.mark.parametrize("server", [5, None, ["a.example"], {"a": 1}, True])
def test_a_record_whose_server_is_not_a_string_is_reported_as_question_mark(server: object) -> None:
    """Formerly PROTOCOL.md §16 item 6 (reported as the value's text, `"5"`): also after a
    failed record, where every later record is reported too."""
    check = verify_chain({"integrity_chain": [{"server": server}, {"server": server}]}, None)
    assert [h.server for h in check.hops] == ["?", "?"]


def test_a_record_whose_server_is_a_string_is_reported_as_written() -> None:
    check = verify_chain({"integrity_chain": [{"server": "not a name"}, 7]}, None)
    assert [h.server for h in check.hops] == ["not a name", "?"]


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
