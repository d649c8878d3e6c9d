"""`harness farm join`: make this host part of a farm.

It reads the profiles of the devices attached here (``./devices``, or those named), checks that each
device answers, refuses devices another live host already offers, and runs Ray's own ``ray start`` with
one custom resource per device (``device:NAME``) and the profile's digest as a node label, so the farm
command can place work on this host and notice a profile that differs from its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.devices.driver import CheckReport, checked, make_driver
from harness.devices.profile import Profile, load_profile
from harness.devices.registry import ProfileRegistry
from harness.errors import DriverError, FarmError
from harness.farm.plan import farm_digest
from harness.farm.resources import device_resource, digest_label


def join_profiles(registry: ProfileRegistry, names: list[str] | None) -> list[Profile]:
    """The named profiles, else every profile in the user's devices folder (built-ins are not devices)."""
    if names:
        return [registry.get(n) for n in names]
    users = [e for e in registry.entries().values() if e.origin == "user"]
    if not users:
        raise FarmError(f"no device profiles in {registry.user_dir}/; put the profiles of the devices attached to "
                        "this host there, or name them with --device")
    return [load_profile(e.path) for e in users]


@dataclass
class DeviceCheck:
    profile: Profile
    ok: bool
    message: str
    report: CheckReport | None = None


def check_devices(profiles: list[Profile]) -> list[DeviceCheck]:
    out = []
    for p in profiles:
        try:
            report = checked(make_driver(p))
        except DriverError as e:
            out.append(DeviceCheck(p, False, str(e)))
            continue
        out.append(DeviceCheck(p, report.ok, report.message or ("answers" if report.ok else "does not answer"),
                               report))
    return out


def node_resources(profiles: list[Profile]) -> tuple[dict[str, float], dict[str, str]]:
    return ({device_resource(p.name): 1.0 for p in profiles}, {digest_label(p.name): farm_digest(p) for p in profiles})


def claimed_elsewhere(address: str, profiles: list[Profile]) -> None:
    """FarmError if a live host of the cluster at ``address`` already offers one of these devices."""
    import ray

    from harness.farm.ray_lanes import connect, live_nodes, offered_devices

    connect(address)
    try:
        offers = offered_devices(live_nodes())
    finally:
        ray.shutdown()
    for p in profiles:
        if p.name in offers:
            hosts = ", ".join(n["NodeManagerAddress"] for n in offers[p.name])
            raise FarmError(f"device {p.name!r} is already offered by {hosts}; a device is attached to one host "
                            "(run `ray stop` there first, or rename the device)")


def ray_executable() -> str:
    """Ray's CLI beside this Python (the venv harness runs in), else on PATH, else plain `ray`."""
    here = Path(sys.executable).with_name("ray")
    return str(here) if here.exists() else shutil.which("ray") or "ray"


def ray_start_args(address: str | None, resources: dict[str, float], labels: dict[str, str], *,
                   head: bool = False, port: int = 6379) -> list[str]:
    import json

    args = [ray_executable(), "start", "--resources", json.dumps(resources, sort_keys=True)]
    if labels:
        args += ["--labels", ",".join(f"{k}={v}" for k, v in sorted(labels.items()))]
    if head:
        args += ["--head", f"--port={port}", "--include-dashboard=false"]
    else:
        if not address:
            raise FarmError("give the head's ADDRESS (host:port printed by `ray start --head`), or --head")
        args += ["--address", address]
    return args


def run_ray_start(args: list[str], cache_dir: Path) -> tuple[int, str]:
    """Run `ray start` (its stdout, with the address to join, goes to the terminal); returns its exit code and its
    stderr, which on failure is a Python traceback of Ray's: the caller shows its last line, not all of it. The
    host's workers inherit HARNESS_CACHE, so exports are cached on this host."""
    env = {**os.environ, "HARNESS_CACHE": str(cache_dir.resolve())}
    try:
        done = subprocess.run(args, env=env, check=False, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise FarmError("the `ray` command is not installed; pip install 'harness[farm]'") from None
    return done.returncode, done.stderr or ""


def ray_start_failure(stderr: str) -> str:
    """The line of a failed `ray start`'s stderr that says why, and what usually fixes it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "(no output)"
    low = stderr.lower()
    if "persisted value" in low or "already" in low or "address already in use" in low:
        return (f"{last}; a Ray node probably runs on this host already: join it (`harness farm join ADDRESS`) "
                "or stop it first (`ray stop`)")
    return last
