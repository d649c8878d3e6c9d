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


def register_space(space: type[SearchSpace]) -> None:
    """Add (or replace) a search space under its ``name`` (from your code, or a plug-in: harness.plugins)."""
    SPACES[space.name] = space


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        from harness.plugins import load_plugins

        load_plugins()
    try:
        return SPACES[name]()
    except KeyError:
        raise UnknownNameError("search space", name, list(SPACES)) from None


__all__ = ["Arch", "SearchSpace", "SPACES", "get_space", "register_space"]
