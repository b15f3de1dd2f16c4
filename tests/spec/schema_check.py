"""Loading and applying FLUX's JSON Schemas (spec/schemas/) with the `jsonschema` library.

The schemas' patterns are ECMA-262 regular expressions, where `$` is the end of the
string. Python's `re` also lets `$` match before a final newline, which would let
`"fx1…\\n"` pass `^fx1[0-9a-f]{40}$`; so the validator used here reads a pattern's
final `$` as `\\Z` (the end, as ECMA-262 means it). Nothing else differs.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.validators import extend
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[2] / "spec" / "schemas"
BASE = "https://flux.invalid/schemas/v1/"


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "string"):
        return
    python = re.sub(r"(?<!\\)\$$", r"\\Z", pattern)
    if not re.search(python, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = extend(Draft202012Validator, {"pattern": _ecma_pattern})


def schema_files() -> list[Path]:
    return sorted(SCHEMAS.glob("*.json"))


@cache
def registry() -> Registry:
    resources = []
    for path in schema_files():
        doc = json.loads(path.read_text(encoding="utf-8"))
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Any:
    """The validator of spec/schemas/`name`.json, resolving references among the files;
    `name#/$defs/x` validates against one definition of that file."""
    file, _, pointer = name.partition("#")
    doc = {"$ref": f"{BASE}{file}.json#{pointer}"}
    return EcmaValidator(doc, registry=registry(), format_checker=None)


def errors(name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks schema `name` (empty: it is valid)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"[:300]
            for e in validator(name).iter_errors(instance)]  # fmt: skip


def check(name: str, instance: Any) -> None:
    """Assert that `instance` is valid under schema `name`, showing every error if not."""
    found = errors(name, instance)
    assert not found, f"{name}: " + "\n".join(found[:10])


def refused(name: str, instance: Any) -> None:
    """Assert that schema `name` refuses `instance`."""
    assert errors(name, instance), f"{name} accepted a near miss: {json.dumps(instance)[:300]}"
