"""Results store, importers and exporters of tidy latency tables (names load on first use)."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Store": "store", "import_table": "importer", "ImportReport": "importer", "ImportFileError": "importer",
         "latency_table": "export", "write_table": "export"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"harness.results.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'harness.results' has no attribute {name!r}")
