"""Search-space registry: adding a space is one module plus one line here."""

from __future__ import annotations

from harness.errors import UnknownNameError
from harness.models.spaces.base import Arch, SearchSpace
from harness.models.spaces.fbnet import FBNetSpace
from harness.models.spaces.mbv2 import MobileNetV2Space
from harness.models.spaces.nb201 import NB201Space
from harness.models.spaces.ofa_mbv3 import OFAMobileNetV3Space
from harness.models.spaces.proxyless import ProxylessSpace

SPACES: dict[str, type[SearchSpace]] = {
    NB201Space.name: NB201Space,
    FBNetSpace.name: FBNetSpace,
    MobileNetV2Space.name: MobileNetV2Space,
    OFAMobileNetV3Space.name: OFAMobileNetV3Space,
    ProxylessSpace.name: ProxylessSpace,
}


def register_space(space: type[SearchSpace], *, replace: bool = False) -> None:
    """Add a search space under its ``name`` (from your code, or a plug-in: harness.plugins); a name that is
    taken is replaced only with ``replace=True``. The class is checked here, where the plug-in is named, not
    when a command first builds it."""
    import inspect

    from harness.plugins import PluginError, check_new_name

    if not (isinstance(space, type) and issubclass(space, SearchSpace)):
        raise PluginError(f"register_space wants a SearchSpace subclass, got {space!r}")
    name = getattr(space, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"search space class {space.__qualname__} has no `name` (a class attribute, e.g. "
                          "name = \"myspace\")")
    if inspect.isabstract(space):
        missing = ", ".join(sorted(space.__abstractmethods__))
        raise PluginError(f"search space {name!r} ({space.__qualname__}) does not implement {missing}: every "
                          "method SearchSpace marks abstract is needed")
    check_new_name(SPACES, name, space, "search space", replace)
    SPACES[name] = space


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        from harness.plugins import load_plugins

        load_plugins()
    try:
        return SPACES[name]()
    except KeyError:
        raise UnknownNameError("search space", name, list(SPACES)) from None


__all__ = ["Arch", "SearchSpace", "SPACES", "get_space", "register_space"]
