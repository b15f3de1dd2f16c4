"""Every benchmark in benchmarks/ runs for a second or two and reports, so none can rot
between the runs that measure (benchmarks/README.md). Only that it runs and prints its
figures is asserted: speed is judged by the benchmarks themselves, never by tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# script, the shortest arguments that still exercise every step, what its report prints
RUNS = [
    ("protocol.py", ["--seconds", "0.05", "--runs", "1"], "full / bare"),
    ("bare_pipeline.py", ["--seconds", "1", "--runs", "1", "--concurrency", "4",
                          "--messages", "1500"], "msgs_per_s"),
    ("ingest.py", ["--seconds", "0.5", "--push-seconds", "0.5", "--runs", "1",
                   "--concurrency", "4", "--sockets", "10"], "vs_bare_pct"),
    # both modes: throughput, then fairness (a small flood; its report is the last line)
    ("federation.py", ["--messages", "100", "--probes", "10", "--flood", "200",
                       "--probe-every-ms", "20", "--runs", "1"], "fairness median:"),
    ("federation_batch.py", ["--runs", "1", "--seconds", "0.5", "--senders", "2",
                             "--batches", "2"], "ratio: median"),
    ("adversarial.py", ["--seconds", "0.3", "--runs", "1"], "attacker answers/s"),
    ("store_list.py", ["--messages", "2000"], "LIMIT/OFFSET"),
    ("ingest_inprocess.py", ["--messages", "200", "--runs", "1"], "writer_cpu_ms_per_msg"),
    ("ingest_inprocess.py --store-only", ["--messages", "200", "--runs", "1", "--store-only"],
     "with_commit_us_per_msg"),
]  # fmt: skip


def run(script: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("script", "args", "reports"), RUNS, ids=[r[0] for r in RUNS])
def test_benchmark_runs_and_reports(script: str, args: list[str], reports: str) -> None:
    done = run(script.split()[0], args)  # the id may name a mode after the script
    assert done.returncode == 0, done.stderr[-3000:]
    assert reports in done.stdout, done.stdout[-3000:]


@pytest.mark.slow
def test_web_benchmark_runs_and_reports() -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        if os.environ.get("FLUX_TEST_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is required (FLUX_TEST_REQUIRE_CHROMIUM=1)")
        pytest.skip("no chromium here")
    done = run("web.py", ["--sizes", "100", "--runs", "1", "--chromium", chromium])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "yardstick open" in done.stdout, done.stdout[-3000:]
    # too small a mailbox for its "next page" step is refused at once, not a hang
    refused = run("web.py", ["--sizes", "50", "--runs", "1", "--chromium", chromium])
    assert refused.returncode == 2 and "--sizes" in refused.stderr


def test_a_bare_pipeline_run_the_warm_up_would_eat_is_refused() -> None:
    refused = run("bare_pipeline.py", ["--messages", "200", "--runs", "1"])
    assert refused.returncode == 2 and "--messages" in refused.stderr
