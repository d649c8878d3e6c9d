"""`harness farm status`: hosts, the devices each offers, and what each device is doing now."""

from __future__ import annotations

from dataclasses import dataclass, field

import ray

from harness.farm.resources import ACTOR_PREFIX, NAMESPACE, digest_label


@dataclass
class DeviceState:
    device: str
    host: str
    state: str  # free | measuring | idle | offline | no answer
    measuring: str | None = None
    queued: int | None = None
    done: int | None = None
    per_minute: float | None = None
    digest: str | None = None


@dataclass
class HostState:
    node: str
    address: str
    alive: bool
    devices: list[str] = field(default_factory=list)
    cpus: float = 0.0


def cluster_status(timeout_s: float = 5.0) -> tuple[list[HostState], list[DeviceState]]:
    hosts, devices = [], []
    busy = set(ray.util.list_named_actors())  # this namespace: the farm commands' device actors
    for n in ray.nodes():
        names = sorted(r[len("device:"):] for r in n.get("Resources", {}) if r.startswith("device:"))
        host = HostState(n["NodeID"][:8], n["NodeManagerAddress"], bool(n.get("Alive")), names,
                         n.get("Resources", {}).get("CPU", 0.0))
        hosts.append(host)
        for name in names:
            d = DeviceState(name, f"{host.address}/{host.node[:6]}", "free" if host.alive else "offline",
                            digest=n.get("Labels", {}).get(digest_label(name)))
            if host.alive and ACTOR_PREFIX + name in busy:
                try:
                    actor = ray.get_actor(ACTOR_PREFIX + name, namespace=NAMESPACE)
                    st = ray.get(actor.status.remote(), timeout=timeout_s)
                    d.state = "measuring" if st["measuring"] else "idle"
                    d.measuring, d.queued, d.done = st["measuring"], st["queued"], st["done"]
                    d.per_minute = st["per_minute"]
                except Exception:  # noqa: BLE001 - a status view reports, it does not fail
                    d.state = "no answer"
            devices.append(d)
    return hosts, devices
