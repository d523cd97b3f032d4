"""Package namespaces whose names are imported on first use.

Subpackages export their public names this way so that importing a light part (a config, the
pure-NumPy code-switch rules) does not import torch and megatron-core through the package's
`__init__`.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """(`__getattr__`, `__all__`) for `package`, where `exports` maps each public name to the
    submodule (relative to `package`) that defines it."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__, sorted(exports)
