"""Transfer methods by name. One entry is one method everywhere: ``adapt --method``, the saved predictor,
``predict`` and the pareto what-if.

Adding a method is one module in this folder (a class with ``name``, ``summary``, ``fit`` and ``predict``,
see :class:`~harness.analysis.methods.base.Method`) plus one line in :data:`METHODS`, or one call to
:func:`register` from your own code. Entries are ``"module:Class"`` strings imported on first use, so listing
the names (the CLI's ``--help``) loads no numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


BUILTIN = frozenset(METHODS)


def register(name: str, impl: str | type, *, replace: bool = False) -> None:
    """Add a method: ``impl`` is a class or its ``"module:Class"`` path; a name that is taken is replaced only
    with ``replace=True``. A class is checked here, where the plug-in is named, not deep inside a fit."""
    from harness.plugins import PluginError, check_new_name

    if isinstance(impl, type):
        missing = [m for m in ("fit", "predict") if not callable(getattr(impl, m, None))]
        if missing:
            raise PluginError(f"transfer method {name!r} ({impl.__qualname__}) has no {' or '.join(missing)} "
                              "method (see harness.analysis.methods.base.Method)")
    check_new_name(METHODS, name, impl, "transfer method", replace)
    METHODS[name] = impl


def get_method(name: str) -> Method:
    """The method registered under ``name`` (or the name a predictor was saved under), ready to use; a plug-in's
    own errors come out as a typed error that names it."""
    from harness.plugins import load_ref

    if name not in METHODS and SAVED_AS.get(name) not in METHODS:
        from harness.plugins import load_plugins

        load_plugins()
    key = SAVED_AS.get(name, name) if name not in METHODS else name
    impl = METHODS.get(key)
    if impl is None:
        raise UnknownNameError("method", name, list(METHODS),
                               hint="a method of your own is registered by a plug-in: HARNESS_PLUGINS=path/to/it.py "
                                    "or an installed package's harness.plugins entry point")
    method = load_ref(impl, f"transfer method {key!r}")()
    return method if key in BUILTIN else _PluginMethod(key, method)


def code_digest(name: str) -> str | None:
    """A digest of the source file that defines method ``name``: a predictor fitted by older code of it is not
    reused (editing a plug-in's fit left `adapt` saying "already fits these inputs: reused"). None where the
    source cannot be read."""
    import hashlib
    import sys

    from harness.plugins import load_ref

    key = SAVED_AS.get(name, name) if name not in METHODS else name
    try:
        impl = load_ref(METHODS[key], f"transfer method {key!r}")
        path = getattr(sys.modules.get(impl.__module__), "__file__", None)  # plug-ins are loaded into sys.modules
        return hashlib.sha256(open(path, "rb").read()).hexdigest()[:16] if path else None
    except (KeyError, OSError, TypeError):
        return None


class _PluginMethod:
    """A plug-in's method whose own exceptions (a bug in its fit or predict) become a typed error naming it,
    instead of a traceback from deep inside harness."""

    def __init__(self, key: str, method: Method):
        self._key, self._method = key, method

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._method, attr)

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("fit", args, kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("predict", args, kwargs)

    def _call(self, fn: str, args: tuple, kwargs: dict) -> Any:
        from harness.errors import HarnessError
        from harness.plugins import PluginError, PluginValueError

        try:
            return getattr(self._method, fn)(*args, **kwargs)
        except HarnessError:
            raise
        except Exception as e:
            msg = f"transfer method {self._key!r} (a plug-in) failed in {fn}: {type(e).__name__}: {e}"
            # a ValueError (numpy's LinAlgError is one) stays one: leave-one-out refits on a few samples read it as
            # "too few to say", for a plug-in as for a built-in method
            raise (PluginValueError if isinstance(e, ValueError) else PluginError)(msg) from e
