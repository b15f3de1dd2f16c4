"""`flux admin`: reputation and quarantine, on a server's real SQLite database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cli_helpers import flux

from flux.store import SQLiteStore
from flux.store.base import Strike


def seed_strikes(data_dir: Path, offender: str, count: int) -> None:
    async def go() -> None:
        store = SQLiteStore(data_dir / "flux.db")
        await store.open()
        try:
            for n in range(count):
                await store.add_strike(
                    Strike(offender, f"proof-{n}", "forged_body", "b.example", f"{n:032x}", n)
                )
        finally:
            await store.close()

    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(go())


def test_reputation_lift_and_impose(tmp_path: Path) -> None:
    seed_strikes(tmp_path, "x.example", 3)
    shown = flux("admin", "reputation", "--data-dir", str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "x.example" in line)
    assert "3" in row and "yes" in row

    lifted = flux("admin", "lift", "x.example", "--data-dir", str(tmp_path))
    assert lifted.returncode == 0 and "x.example is now not quarantined" in lifted.stdout
    row = next(
        line
        for line in flux("admin", "reputation", "--data-dir", str(tmp_path)).stdout.splitlines()
        if "x.example" in line
    )
    assert "no" in row and "lifted" in row and "3" in row  # strikes stay on record

    imposed = flux("admin", "quarantine", "y.example", "--data-dir", str(tmp_path))
    assert imposed.returncode == 0 and "y.example is now quarantined" in imposed.stdout
    listed = flux("admin", "reputation", "--json", "--data-dir", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"server": "x.example", "strikes": 3, "quarantined": False, "override": "lifted"},
        {"server": "y.example", "strikes": 0, "quarantined": True, "override": "imposed"},
    ]


def test_a_missing_database_is_one_line_of_error(tmp_path: Path) -> None:
    result = flux("admin", "reputation", "--data-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "no FLUX database" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def seed_queue(data_dir: Path, destination: str, count: int) -> None:
    from flux.store.base import Outbound

    async def go() -> None:
        store = SQLiteStore(data_dir / "flux.db")
        await store.open()
        try:
            items = [
                Outbound(destination, {"id": f"{n:032x}"}, f"h{n}", ("fx1" + "b" * 40,), "none", n)
                for n in range(count)
            ]
            await store.enqueue(items)
            lease = await store.lease("test", 10, 1_000, 10)
            if lease is not None:
                await store.settle(lease, [], retry_at=2**50, error="connection refused")
        finally:
            await store.close()

    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(go())


def test_queue_shows_what_waits_and_retry_now_makes_it_due(tmp_path: Path) -> None:
    seed_queue(tmp_path / "empty", "b.example", 0)
    empty = flux("admin", "queue", "--data-dir", str(tmp_path / "empty"))
    assert empty.returncode == 0 and "the delivery queue is empty" in empty.stdout
    seed_queue(tmp_path, "b.example", 3)
    shown = flux("admin", "queue", "--data-dir", str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "b.example" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[0] == "b.example" and cells[1] == "3" and cells[3] == "1"
    assert cells[4] != "now" and cells[5] == "connection refused"
    woke = flux("admin", "queue", "--retry-now", "b.example", "--data-dir", str(tmp_path))
    assert "b.example is due now" in woke.stdout
    row = next(
        line for line in woke.stdout.splitlines() if "b.example" in line and "due" not in line
    )
    assert [c.strip() for c in row.split("│") if c.strip()][4] == "now"


def test_rotate_key_retires_the_old_key(tmp_path: Path) -> None:
    import json

    from flux.server.keys import KEY_FILE, load_or_create

    old = load_or_create(tmp_path, "x.test", 1).signer.identity.pub_b64()
    result = flux("admin", "rotate-key", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"retired {old}" in result.stdout and "restart the server" in result.stdout
    data = json.loads((tmp_path / KEY_FILE).read_text())
    assert data["retired"][0]["pub"] == old and data["private_key"]
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    missing = flux("admin", "rotate-key", "--data-dir", str(tmp_path / "none"))
    assert missing.returncode == 1 and "no server key to rotate" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_admin_reads_the_servers_toml_file(tmp_path: Path) -> None:
    seed_strikes(tmp_path / "data", "x.example", 1)
    toml = tmp_path / "flux.toml"
    toml.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\nquarantine_threshold = 1\n')
    shown = flux("admin", "--config", str(toml), "reputation")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "x.example" in line)
    assert "yes" in row  # the file's threshold (1), not the default (3)
    bad = flux("admin", "--config", str(tmp_path / "missing.toml"), "reputation")
    assert bad.returncode == 1 and "bad server setting" in bad.stderr
