"""Review of issue 12: the operator's listings read at 80 columns, and their help fits.

`flux admin queue list` (per destination and `--messages`) used to wrap each row over up
to a dozen lines at 80 columns (the technical error word by word, every time column
squeezed to `2026-…`); each row is now one line, the error cut with … (`show` and --json
have it whole). The command lists of `flux admin`, `queue`, `invite` and `accounts` had
summaries broken mid-sentence (a docstring's first paragraph spanning lines); each is now
one sentence. On a real SQLite queue.
"""

from __future__ import annotations

import inspect
import json

from cli_helpers import flux
from rich.cells import cell_len
from test_admin import seed_queue

from flux.cli import app


def test_queue_tables_are_one_line_a_row_at_80_columns(tmp_path):
    seed_queue(tmp_path, "a-rather-long-destination.example.org", 2)
    for args in ((), ("--messages",)):
        shown = flux("admin", "queue", "list", *args, "--data-dir", str(tmp_path), COLUMNS="80")
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert all(cell_len(line) <= 80 for line in lines), shown.stdout
        rows = [line for line in lines if line.startswith("│")]
        assert len(rows) == (2 if args else 1), shown.stdout  # one line each
        # the error keeps 16 cells; the long destination gave way, both cut with …
        assert all("connection refu" in r for r in rows), shown.stdout
        assert all("a-rather-long" in r for r in rows), shown.stdout
    wide = flux("admin", "queue", "list", "-m", "--data-dir", str(tmp_path), COLUMNS="200")
    header = next(line for line in wide.stdout.splitlines() if "destination" in line)
    for word in ("qid", "from", "to", "queued", "tries", "next", "last error", "held"):
        assert word in header, header
    (dest,) = json.loads(flux("admin", "queue", "list", "--json", "--data-dir",
                              str(tmp_path)).stdout)  # fmt: skip
    assert dest["last_error"] == "connection refused"  # whole in JSON


def test_a_retry_far_in_the_future_is_still_shown(tmp_path):
    seed_queue(tmp_path, "b.example", 1)  # seeded with a retry at 2**50 ms (year 37648)
    shown = flux("admin", "queue", "list", "--data-dir", str(tmp_path), COLUMNS="80")
    assert shown.returncode == 0, shown.stderr


def test_every_command_summary_is_one_line():
    def walk(typer_app, path):
        for command in typer_app.registered_commands:
            doc = inspect.getdoc(command.callback) or ""
            yield f"{path} {command.name or command.callback.__name__}", doc.split("\n\n")[0]
        for group in typer_app.registered_groups:
            yield from walk(group.typer_instance, f"{path} {group.name}")

    broken = [name for name, summary in walk(app, "flux") if "\n" in summary]
    assert broken == [], broken
