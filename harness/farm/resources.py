"""How a host advertises a device to the farm (no Ray import: `farm join --dry-run` works without it)."""

from __future__ import annotations

NAMESPACE = "harness"  # Ray namespace of the farm's device actors
ACTOR_PREFIX = "device:"  # a device's actor is named device:NAME (one farm command per device at a time)


def device_resource(name: str) -> str:
    """The custom Ray resource a host offers for a device attached to it (amount 1: one campaign at a time)."""
    return f"device:{name}"


def digest_label(name: str) -> str:
    """The node label holding the host's profile digest of the device (compared with the command's)."""
    return f"harness.profile/{name}"
