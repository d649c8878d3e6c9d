"""Transfer methods by name. One entry is one method everywhere: ``adapt --method``, the saved predictor,
``predict`` and the pareto what-if.

Adding a method is one module in this folder (a class with ``name``, ``summary``, ``fit`` and ``predict``,
see :class:`~harness.analysis.methods.base.Method`) plus one line in :data:`METHODS`, or one call to
:func:`register` from your own code. Entries are ``"module:Class"`` strings imported on first use, so listing
the names (the CLI's ``--help``) loads no numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from harness.errors import UnknownNameError

if TYPE_CHECKING:
    from harness.analysis.methods.base import Method

METHODS: dict[str, str | type] = {
    "multiproxy": "harness.analysis.methods.multiproxy:MultiProxy",
    "adaproxy": "harness.analysis.methods.adaproxy:AdaProxy",
    "target-only": "harness.analysis.methods.target_only:TargetOnly",
}
DEFAULT_METHOD = "multiproxy"
# saved under another name: `harness train` fits a device's own model, a target-only fit on all its data
SAVED_AS = {"linear": "target-only"}


def register(name: str, impl: str | type) -> None:
    """Add (or replace) a method: ``impl`` is a class or its ``"module:Class"`` path."""
    METHODS[name] = impl


def get_method(name: str) -> Method:
    """The method registered under ``name`` (or the name a predictor was saved under), ready to use."""
    if name not in METHODS and SAVED_AS.get(name) not in METHODS:
        from harness.plugins import load_plugins

        load_plugins()
    impl = METHODS.get(SAVED_AS.get(name, name)) if name not in METHODS else METHODS[name]
    if impl is None:
        raise UnknownNameError("method", name, list(METHODS))
    if isinstance(impl, str):
        module, cls = impl.split(":")
        impl = getattr(importlib.import_module(module), cls)
    return impl()
