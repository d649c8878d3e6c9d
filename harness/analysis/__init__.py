"""Cross-device analysis: SRCC, proxy choice, reports. Functions return pandas DataFrames.

The notebook API below loads on first use (PEP 562), so importing a light submodule such as
``harness.analysis.sampling`` (the CLI does, for its --help) does not pull in scipy and matplotlib.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_LAZY = {"latencies": "api", "srcc": "api", "srcc_matrix": "api", "proxies": "api", "report": "api",
         "correlate": "correlation", "Correlations": "correlation", "rank_proxies": "proxy"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"harness.analysis.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'harness.analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy functions too: a notebook's tab completion lists `ha.srcc` before it is first used."""
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # importing the submodule `report` must not hide the function `report` (ha.report(...))
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
