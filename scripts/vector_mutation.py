"""Mutation testing of the protocol core with the vector tests alone (issue 14).

    python scripts/vector_mutation.py --rev <commit>         # the score at a commit
    python scripts/vector_mutation.py                        # the work tree as it is
    python scripts/vector_mutation.py --retest-survivors     # after adding vectors
    python scripts/vector_mutation.py --score-only           # print the last score

Runs mutmut over every module of `flux.protocol` and over `flux.federation.signing`,
with only `tests/vectors/` as the tests: a mutant that survives is a change to the
protocol code that no vector notices. spec/README.md ("Mutation report") lists the
score before and after, and why each surviving mutant is equivalent.

It reuses scripts/mutation.py (the copy of the repository, the `[tool.mutmut]` table,
running mutmut, reading its results): it never runs in the checkout. The default copy is
/tmp/mutation-vectors. `--max-children` defaults to 1: the machine is shared.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
TESTS = ["tests/vectors"]
MODULE_GLOBS = ["src/flux/protocol/*.py", "src/flux/federation/signing.py"]


def load_mutation() -> ModuleType:
    """scripts/mutation.py, imported by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("flux_mutation", REPO / "scripts" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def modules(root: Path) -> list[str]:
    """The files mutated, relative to `root` (the copy), in a stable order."""
    found = {p.relative_to(root).as_posix() for g in MODULE_GLOBS for p in root.glob(g)}
    return sorted(found)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mutation-vectors"))
    parser.add_argument("--rev", help="copy this commit instead of the work tree")
    parser.add_argument("--max-children", type=int, default=1, help="parallel test workers")
    parser.add_argument("--mutant", action="append", default=[],
                        help="rerun only this mutant name or fnmatch pattern (repeatable)")  # fmt: skip
    parser.add_argument("--retest-survivors", action="store_true",
                        help="retest the mutants the last run did not kill")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--score-only", action="store_true", help="print the last score")
    parser.add_argument("--json", type=Path, help="also write the score here as JSON")
    return parser.parse_args(argv)


def score(mutation: ModuleType, workdir: Path) -> dict[str, object]:
    """Per module and in total: mutmut's statuses, grouped as scripts/mutation.py does."""
    per_module, total = {}, Counter()
    survivors: dict[str, list[str]] = {}
    for module in modules(workdir):
        if not (workdir / "mutants" / (module + ".meta")).exists():
            continue
        result = mutation.score(workdir, module)
        per_module[module] = {"total": result["total"], "score": result["score"],
                              "counts": result["counts"]}  # fmt: skip
        total.update(result["counts"])
        for status, names in result["mutants"].items():
            if status not in ("killed", "skipped", "caught by type check"):
                survivors.setdefault(status, []).extend(names)
    tested = sum(total[s] for s in ("killed", "survived", "no tests", "timeout", "suspicious"))
    return {
        "modules": per_module,
        "counts": dict(total),
        "score": round(100 * total["killed"] / tested, 1) if tested else 0.0,
        "not_killed": survivors,
    }


def print_score(result: dict[str, object]) -> None:
    for module, entry in result["modules"].items():  # type: ignore[attr-defined]
        counts = ", ".join(f"{k} {v}" for k, v in sorted(entry["counts"].items()))
        print(f"{module}: {entry['total']} mutants, {entry['score']} % killed ({counts})")
    print(f"TOTAL: {result['counts']}, score {result['score']} % killed")
    for status, names in result["not_killed"].items():  # type: ignore[attr-defined]
        for name in names:
            print(f"  [{status}] {name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mutation = load_mutation()
    workdir = args.workdir.resolve()
    if args.score_only:
        print_score(score(mutation, workdir))
        return 0
    before = {m: mutation.module_hash(workdir, m) for m in modules(workdir)}
    mutation.copy_repository(workdir, args.rev)
    after = {m: mutation.module_hash(workdir, m) for m in modules(workdir)}
    if args.fresh or before != after:  # changed code: every cached verdict is stale
        shutil.rmtree(workdir / "mutants", ignore_errors=True)
    skip = mutation.EXCLUDED | {"src", "tests"}
    also = sorted(e.name for e in workdir.iterdir()
                  if e.name not in skip and not e.name.startswith("mutmut"))  # fmt: skip
    section = mutation.mutmut_section(MODULE_GLOBS[0], TESTS, "not slow and not postgres", [], also)
    section = re.sub(
        r"(?m)^only_mutate = .*$", f"only_mutate = {json.dumps(MODULE_GLOBS)}", section
    )
    mutation.write_config(workdir, section)
    names = list(args.mutant)
    if args.retest_survivors:
        last = score(mutation, workdir)["not_killed"]
        names += [n for group in last.values() for n in group]  # type: ignore[union-attr]
    code = mutation.run_mutmut(workdir, args.max_children, names)
    result = score(mutation, workdir)
    print_score(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
