"""Out-of-tree drivers, search spaces and transfer methods, without editing harness.

A plug-in is a module whose import registers what it adds (``register_driver``, ``register_space``,
``harness.analysis.methods.register``). harness imports plug-ins the first time it meets a name it does not
know (a connection kind, a space, a method), so a CLI that never needs one never pays for the scan:

* installed packages: an entry point in the ``harness.plugins`` group, e.g. in your ``pyproject.toml``
  ``[project.entry-points."harness.plugins"] mine = "mypkg.harness_plugin"``;
* without packaging: ``HARNESS_PLUGINS`` lists modules or ``.py`` files, separated by commas
  (``HARNESS_PLUGINS=./lab/mydriver.py,mypkg.other``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from harness.errors import HarnessError

GROUP = "harness.plugins"
ENV = "HARNESS_PLUGINS"
_loaded: set[str] = set()  # what was imported (the env var may change between calls, e.g. in tests)


class PluginError(HarnessError):
    """A plug-in named by an entry point or $HARNESS_PLUGINS cannot be imported, registers something unusable, or
    fails in its own code."""


class PluginValueError(PluginError, ValueError):
    """A plug-in method's ValueError: still a ValueError for code that reads one as "too few samples"."""


def load_plugins() -> list[str]:
    """Import every plug-in not imported yet; returns the names imported by this call."""
    new = []
    for name, load in _sources():
        if name in _loaded:
            continue
        _loaded.add(name)  # a broken one is reported once, not at every lookup
        try:
            load()
        except HarnessError:
            raise
        except Exception as e:  # a plug-in's own bug: name it, and the way to fix or leave it out
            raise PluginError(f"plug-in {name} could not be imported: {type(e).__name__}: {e} (fix it, or leave it "
                              f"out of ${ENV} / uninstall the package that declares it)") from None
        new.append(name)
    return new


def _sources():
    for ep in entry_points(group=GROUP):
        yield f"{ep.name} (entry point {ep.value})", ep.load
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        yield item, (lambda item=item: _import(item))


def _import(item: str) -> None:
    if not item.endswith(".py"):
        importlib.import_module(item)
        return
    path = Path(item).expanduser().resolve()
    if not path.is_file():
        raise PluginError(f"${ENV} names {item}, which is not a file (a module name, or the path of a .py file)")
    name = f"harness_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses and pydantic look their module up while the class is built
    spec.loader.exec_module(module)  # type: ignore[union-attr]


def load_ref(ref: str | type, what: str) -> type:
    """A registry entry's class: itself, or the ``"module:Class"`` it names (imported now). ``what`` names the
    entry in the error (e.g. "the driver of connection kind 'box'")."""
    if not isinstance(ref, str):
        return ref
    module, _, cls = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError, ValueError) as e:
        raise PluginError(f"{what} is registered as {ref!r}, which cannot be imported: {type(e).__name__}: {e} "
                          "(a \"module:Class\" path importable here)") from None


def check_new_name(registry: dict, name: str, impl: object, what: str, replace: bool) -> None:
    """Registering a name that is taken replaces it only when asked: a plug-in loaded on first use silently
    turned nb201 into another space, and of two plug-ins with one method name the last one imported won."""
    old = registry.get(name)
    if old is None or replace or _same(old, impl):
        return
    raise PluginError(f"{what} {name!r} is already registered ({_describe(old)}); register yours under another "
                      "name, or pass replace=True to override it on purpose")


def _same(a: object, b: object) -> bool:
    return _describe(a) == _describe(b)


def _describe(impl: object) -> str:
    if isinstance(impl, tuple):
        impl = impl[0]
    if isinstance(impl, str):
        return impl
    return f"{getattr(impl, '__module__', '?')}:{getattr(impl, '__qualname__', impl)}"

