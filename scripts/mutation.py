"""Mutation testing of one module with mutmut, in a copy of the repository.

    python scripts/mutation.py src/flux/server/submission.py
    python scripts/mutation.py src/flux/federation/delivery.py --tests tests/federation
    python scripts/mutation.py src/flux/server/submission.py --mutant 'flux.server.submission.x_*'
    python scripts/mutation.py src/flux/server/submission.py --score-only

mutmut (pinned in the dev extras) copies the project into a `mutants/` directory of its
working directory and reads `[tool.mutmut]` from the pyproject.toml there. So it never runs
in the checkout: this script copies the repository (its work tree without .git, .venv and
any mutants/; or with `--rev` a commit, since others may be editing the work tree) into
`--workdir` (default /tmp/mutation-<module stem>), writes the `[tool.mutmut]` section into
the copy's pyproject.toml, runs `mutmut run` there and prints the score.

How the mutants get imported: the venv's editable install puts the checkout's `src/` on
sys.path; mutmut puts `mutants/src` in front of it when it runs the tests, so `flux` is the
mutated copy. Tests that start a server in a child process import the checkout's `src/`,
not the mutants: choose in-process tests (the server, accounts and federation tests are).

A rerun keeps the results of mutants whose code did not change (mutmut's cache in the
copy's mutants/), retesting only `--mutant` names or patterns, and rereads the test files
copied afresh; `--fresh` starts over (needed once the module itself changed: then the
script does it by itself).

Score: killed / (killed + survived + no tests + timeout + suspicious), the share of
mutants the tests notice. Exit status: 0, or mutmut's own if it failed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TESTS = ["tests/server", "tests/accounts", "tests/federation"]
#: tests that cannot run twice in one process (mutmut runs the suite for its stats, then
#: again clean, in one process): this one pops "body" out of its shared parametrize dict,
#: so its second run changes nothing and fails
DESELECT = [
    "tests/federation/test_fed_signing.py::test_any_change_or_replay_is_refused",
]
#: never copied: history, the environment, and other runs' mutants
EXCLUDED = {".git", ".venv", "mutants", "__pycache__", ".pytest_cache", ".ruff_cache",
            ".hypothesis"}  # fmt: skip

#: mutmut's exit codes (mutmut/stats.py status_by_exit_code), grouped for the score
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", 37: "caught by type check", None: "not checked"}  # fmt: skip


SPINNER = tuple("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="the file to mutate, relative to the repository")
    parser.add_argument("--tests", nargs="+", default=DEFAULT_TESTS,
                        help=f"test files or directories (default: {' '.join(DEFAULT_TESTS)})")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="the copy (default /tmp/mutation-<stem>)")
    parser.add_argument("--rev", help="copy this commit (git archive) instead of the work tree, "
                        "which other people may be editing")  # fmt: skip
    parser.add_argument("--overlay", action="append", default=[],
                        help="a file of the work tree to copy over the --rev tree (repeatable): "
                        "new tests measured against the module as it was")  # fmt: skip
    parser.add_argument("--max-children", type=int, default=1, help="parallel test workers")
    parser.add_argument("--marker", default="not slow and not postgres",
                        help="pytest -m expression (default: %(default)r)")  # fmt: skip
    parser.add_argument("--deselect", action="append", default=None,
                        help="a test id prefix to leave out (repeatable; default: DESELECT)")  # fmt: skip
    parser.add_argument("--mutant", action="append", default=[],
                        help="rerun only this mutant name or fnmatch pattern (repeatable)")  # fmt: skip
    parser.add_argument("--retest-survivors", action="store_true",
                        help="retest the mutants the last run checked and did not kill (after adding tests)")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--score-only", action="store_true", help="print the last score")
    parser.add_argument("--json", type=Path, help="also write the score here as JSON")
    return parser.parse_args(argv)


def copy_repository(workdir: Path, rev: str | None) -> None:
    """Mirror the checkout (or the commit `rev`) into `workdir`, keeping its mutants/
    (mutmut's cache)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for target in workdir.iterdir():
        if target.name == "mutants" or target.name.startswith("mutmut"):
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    if rev is not None:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev],
                                 check=True, capture_output=True).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(workdir, filter="data")
        return
    for entry in REPO.iterdir():
        if entry.name in EXCLUDED:
            continue
        target = workdir / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, symlinks=True, ignore=shutil.ignore_patterns(*EXCLUDED))
        else:
            shutil.copy2(entry, target)


def mutmut_section(
    module: str, tests: list[str], marker: str, deselect: list[str], also_copy: list[str]
) -> str:
    """The `[tool.mutmut]` table: mutate only `module`, run only `tests`."""
    pytest_args = ["-p", "no:cacheprovider", "-q"]
    if marker:
        pytest_args += ["-m", marker]
    for test in deselect:
        pytest_args += ["--deselect", test]
    lines = [
        "[tool.mutmut]",
        f'source_paths = ["{module.split("/")[0]}"]',
        f"only_mutate = {json.dumps([module])}",
        f"pytest_add_cli_args = {json.dumps(pytest_args)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        f"also_copy = {json.dumps(also_copy)}",
        # the copy has no .git: decide what changed from mutmut's own hashes
        "use_git_change_detection = false",
    ]
    return "\n".join(lines) + "\n"


def write_config(workdir: Path, section: str) -> None:
    """Replace any `[tool.mutmut]` table of the copy's pyproject.toml with `section`."""
    path = workdir / "pyproject.toml"
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", path.read_text())
    path.write_text(text.rstrip("\n") + "\n\n" + section)


def module_hash(root: Path, module: str) -> str:
    path = root / module
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def run_mutmut(workdir: Path, max_children: int, mutants: list[str]) -> int:
    """`mutmut run` in the copy, its output shown and kept in mutmut.log."""
    exe = Path(sys.executable).with_name("mutmut")
    command = [str(exe), "run", "--max-children", str(max_children), *mutants]
    print("$", " ".join(command), f"(in {workdir})", flush=True)
    with (workdir / "mutmut.log").open("w") as log:
        proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)  # fmt: skip
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            log.write(line)
            # mutmut's spinner and counters rewrite one line with "\r": show its last state
            shown = line.rsplit("\r", 1)[-1]
            if shown.strip() and not shown.lstrip().startswith(SPINNER):
                print(shown, end="" if shown.endswith("\n") else "\n", flush=True)
        return proc.wait()


def score(workdir: Path, module: str) -> dict[str, object]:
    """Every mutant's status from mutmut's results file, and the counts."""
    meta = workdir / "mutants" / (module + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    by_status: dict[str, list[str]] = {}
    for name, code in sorted(codes.items()):
        by_status.setdefault(STATUS.get(code, "suspicious"), []).append(name)
    counts = Counter({status: len(names) for status, names in by_status.items()})
    tested = sum(counts[s] for s in ("killed", "survived", "no tests", "timeout", "suspicious"))
    return {
        "module": module,
        "total": len(codes),
        "counts": dict(counts),
        "score": round(100 * counts["killed"] / tested, 1) if tested else 0.0,
        "mutants": by_status,
    }


def print_score(result: dict[str, object]) -> None:
    counts: dict[str, int] = result["counts"]  # type: ignore[assignment]
    mutants: dict[str, list[str]] = result["mutants"]  # type: ignore[assignment]
    print(f"\n{result['module']}: {result['total']} mutants, score {result['score']} % killed")
    for status in ("killed", "survived", "no tests", "timeout", "suspicious", "skipped",
                   "caught by type check", "not checked"):  # fmt: skip
        if counts.get(status):
            print(f"  {status}: {counts[status]}")
    for status in ("survived", "no tests", "timeout", "suspicious", "not checked"):
        for name in mutants.get(status, ()):
            print(f"  [{status}] {name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    module = args.module.removeprefix("./")
    if args.rev is None and not (REPO / module).is_file():
        sys.exit(f"no such module: {module}")
    workdir = (args.workdir or Path(f"/tmp/mutation-{Path(module).stem}")).resolve()
    if args.score_only:
        print_score(score(workdir, module))
        return 0
    before = module_hash(workdir, module)
    copy_repository(workdir, args.rev)
    for path in args.overlay:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, workdir / path)
    # a changed module makes every cached verdict stale (mutmut copies src/ only once)
    if args.fresh or module_hash(workdir, module) != before:
        shutil.rmtree(workdir / "mutants", ignore_errors=True)
    deselect = DESELECT if args.deselect is None else args.deselect
    # everything else the tests may read besides src/ and tests/ (spec vectors, docs...)
    skip = EXCLUDED | {"src", "tests"}
    also = sorted(e.name for e in workdir.iterdir()
                  if e.name not in skip and not e.name.startswith("mutmut"))  # fmt: skip
    write_config(workdir, mutmut_section(module, args.tests, args.marker, deselect, also))
    mutants = list(args.mutant)
    if args.retest_survivors:
        last: dict[str, list[str]] = score(workdir, module)["mutants"]  # type: ignore[assignment]
        retest = ("survived", "no tests", "timeout", "suspicious")
        mutants += [n for status in retest for n in last.get(status, ())]
    code = run_mutmut(workdir, args.max_children, mutants)
    result = score(workdir, module)
    print_score(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
