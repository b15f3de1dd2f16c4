"""Web client benchmark: a real Chromium against a real server, mailboxes of 1,000 and 10,000.

    .venv/bin/python benchmarks/web.py [--sizes 1000,10000] [--runs 5] [--chromium PATH]

For each size, a fresh FLUX server (SQLite, in this process) holds a password account's
mailbox filled with that many real messages (signed by five senders, sealed by the server:
what the client verifies is what a real mailbox holds; filled through `store_many`, the
real write path). Then, in a fresh browser context per run (nothing cached), it times:

- **first render**: navigation start to the first message row in the page (the page,
  its modules, the session check, /mail/inboxes and the first page of /mail/inbox), taken
  in the page by a MutationObserver on `performance.now()`;
- **open**: a click on the first row until its text and its checks (signature verified
  in the browser, chain checked under the server's published keys) are shown;
- **next page**: "Load more" until the second page of 50 rows is in.

Yardstick, same run and same origin: the same first page fetched with one `fetch` and
drawn as plain `<li>` text rows (no app: what any page must pay to show these rows), and
one message fetched and drawn as text. The client pages (50 rows), so its cost should not
grow with the mailbox; comparing 1,000 with 10,000 shows whether it does.

Prints the machine, then per size the median and [min–max] over `--runs` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from playwright.async_api import Browser, async_playwright

from flux.protocol import Identity
from flux.protocol.chain import append_hop
from flux.protocol.envelope import body_hash
from flux.protocol.outgoing import compose
from flux.server import ServerConfig, start_server
from flux.server.app import PARTS
from flux.store.base import Incoming

PASSWORD = "benchmark password"
FIRST_ROW = """
window.__firstRow = null;
new MutationObserver((_, obs) => {
  if (document.querySelector('#list li.row')) { window.__firstRow = performance.now(); obs.disconnect(); }
}).observe(document, {childList: true, subtree: true});
"""
OPEN = """async () => {
  const t0 = performance.now();
  document.querySelector('#list li.row').click();
  while (!(document.querySelector('#reader .content') &&
           document.querySelector('#reader .trust .checks li.check.ok'))) {
    await new Promise(requestAnimationFrame);
  }
  return performance.now() - t0;
}"""
NEXT_PAGE = """async () => {
  const t0 = performance.now();
  document.getElementById('more').click();
  while (document.querySelectorAll('#list li.row').length < 100) {
    await new Promise(requestAnimationFrame);
  }
  return performance.now() - t0;
}"""
YARD_LIST = """async (session) => {
  const t0 = performance.now();
  const r = await fetch('/mail/inbox?limit=50', {headers: {'X-Flux-Session': session}});
  const body = await r.json();
  const ul = document.createElement('ul');
  for (const m of body.messages) {
    const li = document.createElement('li');
    li.textContent = `${m.from} ${m.subject} ${m.content.slice(0, 160)}`;
    ul.append(li);
  }
  document.body.replaceChildren(ul);
  void ul.offsetHeight;  // layout, as the app's rows get
  return performance.now() - t0;
}"""
YARD_OPEN = """async ([session, id]) => {
  const t0 = performance.now();
  const r = await fetch('/mail/message/' + id, {headers: {'X-Flux-Session': session}});
  const body = await r.json();
  const div = document.createElement('div');
  div.textContent = body.message.content;
  document.body.replaceChildren(div);
  void div.offsetHeight;
  return performance.now() - t0;
}"""


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"python {platform.python_version()}, {platform.machine()}, cpus {os.cpu_count()}, "
        f"load {load:.2f}"
    )


def messages(signer, to: str, count: int, now_ms: int) -> list[Incoming]:
    """`count` signed, sealed messages from five senders, newest last."""
    senders = [Identity.generate() for _ in range(5)]
    out = []
    for n in range(count):
        t = now_ms - (count - n) * 1000
        text = f"Message {n}: " + "the quick brown fox jumps over the lazy dog. " * 6
        env = compose(senders[n % 5], to, text, subject=f"Subject {n}", now_ms=t).primary
        stamped = append_hop(env, signer, next_hop="local", now_ms=t + 5)
        out.append(Incoming(stamped, body_hash(stamped), (to,), t + 5))
    return out


async def bounded(step):
    """A timed step, given at most a minute (a stuck page fails the run, it does not hang)."""
    return await asyncio.wait_for(step, 60)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ms  [{min(values):.1f}–{max(values):.1f}]"


async def one_size(browser: Browser, size: int, runs: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="flux-web-bench-"))
    config = ServerConfig(domain="bench.test", port=0, data_dir=tmp, backend="sqlite")
    server = await start_server(config)
    try:
        async with aiohttp.ClientSession() as http:
            form = {"username": "reader", "password": PASSWORD}
            async with http.post(server.url + "/account/register", json=form) as r:
                account = await r.json()
        store = server.app[PARTS]["store"]
        signer = server.app[PARTS]["key"].signer
        started = time.perf_counter()
        batch = messages(signer, account["address"], size, int(time.time() * 1000))
        for first in range(0, size, 1000):
            await store.store_many(batch[first : first + 1000])
        print(f"  filled {size:,} messages in {time.perf_counter() - started:.1f} s")
        times: dict[str, list[float]] = {k: [] for k in
                                         ("first render", "open", "next page",
                                          "yardstick rows", "yardstick open")}  # fmt: skip
        newest = batch[-1].envelope["id"]
        for _ in range(runs):
            context = await browser.new_context(viewport={"width": 1200, "height": 800})
            try:
                page = await context.new_page()
                saved = {"kind": "account", "session": account["session"], "account": account}
                await page.add_init_script(
                    f"sessionStorage.setItem('flux.session.v1', {repr_js(saved)});" + FIRST_ROW
                )
                await page.goto(server.url + "/")
                await page.wait_for_selector("#list li.row")
                times["first render"].append(await page.evaluate("window.__firstRow"))
                times["open"].append(await bounded(page.evaluate(OPEN)))
                times["next page"].append(await bounded(page.evaluate(NEXT_PAGE)))
                yard = await context.new_page()
                await yard.goto(server.url + "/health")
                times["yardstick rows"].append(await yard.evaluate(YARD_LIST, account["session"]))
                times["yardstick open"].append(
                    await yard.evaluate(YARD_OPEN, [account["session"], newest])
                )
            finally:
                await context.close()
        return times
    finally:
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def repr_js(value: object) -> str:
    """`value` as a JavaScript string literal holding its JSON."""
    return json.dumps(json.dumps(value))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if min(sizes) < 100:  # "next page" waits for the list's second page of 50 rows
        ap.error("--sizes: each size must be at least 100 (two pages of 50)")
    print(machine())
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=args.chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )  # fmt: skip
        print(f"chromium {browser.version}; {args.runs} runs per size, a fresh context each\n")
        try:
            for size in sizes:
                print(f"mailbox of {size:,} messages")
                times = await one_size(browser, size, args.runs)
                for name, values in times.items():
                    print(f"  {name:<16}{spread(values)}")
                print()
        finally:
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
