"""Names of a package loaded when first used (PEP 562), so that importing the package does
not import what only some of its users need (the HTTP stack, the server app)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package`: `name` is taken from the module
    `modules[name]` (relative to `package`, e.g. ".client") on first use. Raises
    AttributeError for a name not in `modules`."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    return __getattr__
