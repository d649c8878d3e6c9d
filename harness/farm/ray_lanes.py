"""Lanes on a Ray cluster: one actor per device, pinned by the custom resource ``device:NAME`` to the one
host that offers it (``harness farm join`` advertises it with the profile's digest as a node label).

The actor exports (content-addressed cache on its own host, so each host builds each model once),
pushes and times; the result travels back and the command's process writes it. Before anything is
measured, :func:`place` checks that each device is offered by exactly one live host whose profile has
the same digest as the command's.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.exceptions as rex

from harness import interrupts
from harness.devices.lease import DeviceBusy, Holder
from harness.devices.profile import Profile, parse_profile
from harness.errors import FarmError, HarnessError, clip
from harness.farm.address import host_port
from harness.farm.engine import DeviceLost, Lane
from harness.farm.plan import farm_digest
from harness.farm.resources import ACTOR_PREFIX, NAMESPACE, device_resource, digest_label
from harness.models.cache import ModelCache
from harness.models.spaces import Arch, get_space


def host_cache_dir() -> Path:
    """Where a host keeps exported models: $HARNESS_CACHE as set when it joined, else the user cache."""
    env = os.environ.get("HARNESS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "harness" / "models"


# --- connecting and placing -----------------------------------------------------------------

def _reachable(address: str, timeout: float = 3.0) -> None:
    parsed = host_port(address)
    if parsed is None:
        raise FarmError(f"--ray {address!r}: expected auto or HOST:PORT of a Ray head (e.g. 10.0.0.5:6379)")
    host, port = parsed
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise FarmError(f"--ray {address}: no Ray head answers there ({e.strerror or e}); start one with "
                        "`ray start --head` (or `harness farm join --head`) and pass the address it prints") from None


def connect(address: str) -> str:
    """Join the cluster as a driver (idempotent); unknown or dead addresses are a FarmError. Returns the head's
    address (what ``auto`` found: the cluster of this host, possibly someone else's)."""
    _quiet_cluster_errors()
    if ray.is_initialized():
        return _gcs_address(address)
    if address != "auto":
        _reachable(address)
    else:
        found = _auto_address()
        if found is not None:  # the cluster this host last started: a crashed head left its address behind, and
            try:              # Ray retried it for minutes ("Failed to connect to GCS") without a word from harness
                _reachable(found)
            except FarmError:
                raise FarmError(f"--ray auto: this host's Ray cluster (head {found}, from Ray's address file) does not "
                                "answer: its head has stopped. Start one with `ray start --head` (or `harness farm "
                                "join --head`), or pass --ray HOST:PORT") from None
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="warning",
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = ("no Ray cluster runs on this host; start one with `ray start --head` or pass --ray HOST:PORT"
                if address == "auto" else "check the address `ray start --head` printed")
        raise FarmError(f"--ray {address}: cannot connect ({str(e).splitlines()[0]}); {hint}") from None
    from harness import interrupts

    interrupts.reclaim_sigterm()  # ray.init installs sys.exit on SIGTERM: a farm ended "failed", not interrupted
    return _gcs_address(address)


def _auto_address() -> str | None:
    """The address `ray.init(address="auto")` would use (RAY_ADDRESS, else the cluster file of this host), or None
    (Ray's private helper; if it changes shape, auto connects as before)."""
    try:
        from ray._private import services

        found = services.canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - a private API: any change of it leaves the old behaviour
        return None
    return found if isinstance(found, str) and host_port(found) else None


def _quiet_cluster_errors() -> None:
    """Ray's driver prints the cluster's error messages (a lost host's missed-heartbeats report, a worker killed
    for memory) on stdout from a background thread, in ANSI colour, whatever ``log_to_driver`` says: they would
    corrupt ``--json`` output. They go to stderr instead, as plain lines marked ``ray:`` (they can explain a
    lost device). Ray has no switch for this; if its private module changes shape, they print as before."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "harness_quiet", False):
        return

    def to_stderr(data, *args, **kwargs):
        if isinstance(data, dict) and data.get("pid") == "raylet":
            for line in data.get("lines") or ():
                text = _ANSI.sub("", str(line)).strip()
                if text:
                    print(f"ray: {text}", file=sys.stderr, flush=True)
            return None
        return printer(data, *args, **kwargs)

    to_stderr.harness_quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _gcs_address(asked: str) -> str:
    try:
        return str(ray.get_runtime_context().gcs_address or asked)
    except Exception:  # older Ray: no gcs_address on the context
        return asked


@dataclass(frozen=True)
class Placement:
    device: str
    node_id: str
    host: str


def live_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def offered_devices(nodes: list[dict]) -> dict[str, list[dict]]:
    """device name -> the live nodes that offer its resource."""
    found: dict[str, list[dict]] = {}
    for n in nodes:
        for res in n.get("Resources", {}):
            if res.startswith("device:"):
                found.setdefault(res[len("device:"):], []).append(n)
    return found


def place(profiles: list[Profile]) -> dict[str, Placement]:
    """Each device's host, or a FarmError naming what is wrong and how to fix it (before measuring)."""
    offers = offered_devices(live_nodes())
    placements: dict[str, Placement] = {}
    for p in profiles:
        nodes = offers.get(p.name, [])
        if not nodes:
            have = ", ".join(sorted(offers)) or "none"
            raise FarmError(f"no host of the Ray cluster offers device {p.name!r} (resource "
                            f"{device_resource(p.name)}); devices offered: {have}. On the host it is attached to, "
                            f"put {p.name}.yaml in ./devices and run `harness farm join ADDRESS`")
        if len(nodes) > 1:
            hosts = ", ".join(sorted(n["NodeManagerAddress"] + " (node " + n["NodeID"][:8] + ")" for n in nodes))
            raise FarmError(f"two hosts claim device {p.name!r}: {hosts}; a device is attached to one host. "
                            "Run `ray stop` on the wrong one, or rename the device in its profile")
        node = nodes[0]
        theirs = node.get("Labels", {}).get(digest_label(p.name))
        where = f"{node['NodeManagerAddress']} (node {node['NodeID'][:8]})"
        if theirs is None:
            raise FarmError(f"host {where} offers device {p.name!r} but not its profile digest; join hosts with "
                            "`harness farm join ADDRESS` so the profiles can be compared")
        ours = farm_digest(p)
        if theirs != ours:
            raise FarmError(f"device {p.name!r}: the profile on host {where} (digest {theirs}) differs from this "
                            f"command's (digest {ours}); copy the same {p.name}.yaml to both and rejoin "
                            "the host (`ray stop`, then `harness farm join ADDRESS`)")
        placements[p.name] = Placement(p.name, node["NodeID"], f"{node['NodeManagerAddress']}/{node['NodeID'][:6]}")
    return placements


# --- the actor on the device's host ---------------------------------------------------------

@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0, concurrency_groups={"status": 1})
class DeviceWorker:
    """Owns one device on its host. Measures one model at a time; answers status() while measuring."""

    def __init__(self, profile: dict, space: str):
        from harness.farm.local import DeviceSession

        self.profile = parse_profile(profile, "the farm command's profile")
        self.session = DeviceSession(self.profile, get_space(space), ModelCache(host_cache_dir()))
        self.current: str | None = None
        self.queued = 0
        self.done = 0
        self.started = time.time()
        self.busy_s = 0.0

    def prepare(self) -> dict:
        conditions = self.session.prepare()
        return {**conditions, "farm_host": socket.gethostname(), "farm_node": ray.get_runtime_context().get_node_id()}

    def measure(self, arch: Arch, queued: int, hint=None):
        self.current, self.queued = arch.key, queued
        t0 = time.perf_counter()
        try:
            return self.session.measure(arch, hint)
        finally:
            self.busy_s += time.perf_counter() - t0
            self.done += 1
            self.current = None

    @ray.method(concurrency_group="status")
    def status(self) -> dict:
        elapsed = max(time.time() - self.started, 1e-9)
        return {"device": self.profile.name, "host": socket.gethostname(), "measuring": self.current,
                "queued": self.queued, "done": self.done, "per_minute": 60.0 * self.done / elapsed,
                "busy": self.busy_s / elapsed}

    def cleanup(self) -> None:
        self.session.cleanup()


_LOST = (rex.RayActorError, rex.NodeDiedError, rex.WorkerCrashedError, rex.ActorUnavailableError,
         rex.ObjectLostError)


def _translate(ray_future: Future, device: str, host: str) -> Future:
    """A future whose exception is a harness error: DeviceLost when the host or actor went away."""
    out: Future = Future()

    def done(f: Future) -> None:
        try:
            result, error = f.result(), None
        except _LOST as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            result, error = None, DeviceLost(f"{device}'s host {host} went away ({type(e).__name__}: {clip(first, 200)})")
        except rex.RayTaskError as e:
            cause = getattr(e, "cause", None)
            result, error = None, cause if isinstance(cause, HarnessError) else HarnessError(f"{device}: {cause or e}")
        except BaseException as e:  # noqa: BLE001 - handed to the loop, which stops this lane
            result, error = None, e if isinstance(e, HarnessError) else HarnessError(f"{device}: {e}")
        try:
            out.set_result(result) if error is None else out.set_exception(error)
        except InvalidStateError:  # the farm gave up on this model already (its host fell silent)
            pass

    ray_future.add_done_callback(done)
    return out


class RayLane(Lane):
    depth = 2  # the next model waits on the host while this one runs: the round trip is hidden

    def __init__(self, profile: Profile, space: str, placement: Placement, wait: bool = False,
                 on_wait: Callable[[Holder], None] | None = None):
        """``wait``: while another farm command's actor holds the device, wait for it (``--wait``) instead of
        stopping as busy (exit 3)."""
        self.device, self.host = profile.name, placement.host
        told = False
        while True:
            try:
                self.actor = DeviceWorker.options(name=ACTOR_PREFIX + profile.name, namespace=NAMESPACE,
                                                  resources={device_resource(profile.name): 1}).remote(
                    profile.as_dict(), space)
                break
            except ValueError:  # the named actor exists: another farm command measures this device
                holder = Holder(profile.name, command="another farm command on the Ray cluster")
                if not wait:
                    raise DeviceBusy(holder, Path(f"Ray actor {ACTOR_PREFIX}{profile.name}")) from None
                if not told and on_wait is not None:
                    on_wait(holder)
                told = True
                interrupts.check()
                time.sleep(1.0)
        self._closed = False

    def start(self) -> Future:
        return _translate(self.actor.prepare.remote().future(), self.device, self.host)

    def submit(self, arch: Arch, queued: int, hint=None) -> Future:
        return _translate(self.actor.measure.remote(arch, queued, hint).future(), self.device, self.host)

    def ping(self) -> Future:
        return _translate(self.actor.status.remote().future(), self.device, self.host)

    def close(self, graceful: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if graceful:
            try:
                ray.wait([self.actor.cleanup.remote()], timeout=5)
            except Exception:  # noqa: BLE001 - the host may be gone already
                pass
        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001
            pass


def ray_lanes(plan, wait: bool = False, on_wait: Callable[[Holder], None] | None = None) -> dict[str, Lane]:
    """Place every device, then start its actor; nothing is measured if any device cannot be placed."""
    placements = place(list(plan.profiles.values()))
    lanes: dict[str, Lane] = {}
    try:
        for name, p in plan.profiles.items():
            lanes[name] = RayLane(p, plan.space.name, placements[name], wait, on_wait)
    except BaseException:
        for lane in lanes.values():
            lane.close()
        raise
    return lanes
