"""Review of issue 10 §3 (every outside string checked once, alike on every backend): a
sweep over every route the app serves, with a NUL, a C1 control, a percent-encoded lone
surrogate (not UTF-8) and an over-long value in each path parameter and in every query
parameter any route takes, and in each string of a JSON body, as the mailbox's owner
(authenticated: the deepest the strings go). On SQLite and PostgreSQL: never a 500, and
the same status on both backends.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from postgres_env import postgres_dsn

BAD = {"nul": "a\x00b", "c1": "a\x85b", "long": "a" * 5000}
RAW_BAD = {"surrogate": "a%ED%A0%80b", "latin1": "a%FFb"}  # not UTF-8
QUERY = ["address", "tag", "inbox", "cursor", "since", "from", "limit", "status", "q",
         "name", "id", "ids", "folder", "before", "after", "token", "kind", "state"]  # fmt: skip
BODY_FIELDS = ["address", "id", "from", "inbox", "folder", "name", "tag", "tags", "add",
               "remove", "ids", "to", "status", "cursor", "since", "username", "password",
               "token", "reason", "display_name", "query"]  # fmt: skip


async def _server(make_server: Any, backend: str, clock: Any) -> Any:
    if backend == "postgres":
        from flux.store import PostgresStore

        store = PostgresStore(postgres_dsn(), fresh_schema=True, clock=clock)
        await store.open()
        srv = await make_server(store=store)
        srv.own_pg = store  # type: ignore[attr-defined]
        return srv
    return await make_server(sqlite=True)


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if path and route.method in ("GET", "POST", "DELETE", "PUT", "PATCH"):
            out.append((route.method, path))
    return sorted(set(out))


async def _sweep(srv: Any, alice: Any, sent_id: str) -> dict[tuple[str, str, str], int]:
    answers: dict[tuple[str, str, str], int] = {}
    headers = srv.auth(alice)
    fill = {"address": alice.address, "id": sent_id, "msg_id": sent_id, "name": alice.address}
    for method, template in _routes(srv.app):
        if template.startswith("/ws"):
            continue
        params = re.findall(r"{(\w+)}", template)

        def path(
            bad_param: str | None, value: str, raw: bool = False,
            template: str = template, params: list[str] = params,
        ) -> str:  # fmt: skip
            out = template
            for p in params:
                v = value if p == bad_param else fill.get(p, alice.address)
                out = out.replace(
                    "{" + p + "}", v if raw and p == bad_param else quote(v, safe="@")
                )
            return out

        cases: list[tuple[str, str, Any]] = []
        for label, value in BAD.items():
            for p in params:
                cases.append((f"path:{p}:{label}", path(p, value), None))
            base = path(None, "")
            for q in QUERY:
                sep = "&" if "?" in base else "?"
                cases.append((f"query:{q}:{label}", f"{base}{sep}address={quote(alice.address)}"
                              f"&{q}={quote(value)}", None))  # fmt: skip
            if method != "GET":
                for f in BODY_FIELDS:
                    body = {"address": alice.address, "id": sent_id, f: value}
                    cases.append((f"body:{f}:{label}", base, body))
                    cases.append((f"body:{f}[]:{label}", base, {**body, f: [value]}))
        for label, raw in RAW_BAD.items():
            for p in params:
                cases.append((f"path:{p}:{label}", path(p, raw, raw=True), None))
            base = path(None, "")
            for q in QUERY:
                sep = "&" if "?" in base else "?"
                cases.append((f"query:{q}:{label}", f"{base}{sep}{q}={raw}", None))
        for label, url, body in cases:
            resp = await srv.client.request(method, url, json=body, headers=headers)
            await resp.read()
            answers[(method, template, label)] = resp.status
    return answers


async def test_no_outside_string_is_a_500_and_both_backends_answer_alike(
    make_server: Any, clock: Any, alice: Any
) -> None:
    results = {}
    for backend in ("sqlite", "postgres"):
        srv = await _server(make_server, backend, clock)
        try:
            await srv.register(alice)
            await srv.login(alice)
            sent = srv.message(alice, alice, "to myself")
            await srv.send(sent)
            results[backend] = await _sweep(srv, alice, sent["id"])
        finally:
            store = getattr(srv, "own_pg", None)
            if store is not None:
                await srv.client.close()
                await store.close()

    fives = {b: sorted(k for k, s in r.items() if s >= 500) for b, r in results.items()}
    assert fives == {"sqlite": [], "postgres": []}
    differ = sorted(k for k in results["sqlite"]
                    if results["sqlite"][k] != results["postgres"].get(k))  # fmt: skip
    assert differ == [], [(k, results["sqlite"][k], results["postgres"][k]) for k in differ]
