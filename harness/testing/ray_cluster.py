"""Helpers for testing a farm on a local Ray cluster (``ray.cluster_utils.Cluster``): node arguments that
offer devices the way ``harness farm join`` does, a host that dies at once (killed) and one that vanishes
without a word (frozen)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from harness.devices.profile import Profile
from harness.farm.plan import farm_digest
from harness.farm.resources import device_resource, digest_label


def node_args(*profiles: Profile, digests: dict[str, str] | None = None, **extra) -> dict:
    """Arguments of ``Cluster.add_node`` for a host offering ``profiles`` (``digests`` overrides labels)."""
    return {"num_cpus": 1, "object_store_memory": 80 * 2**20,
            "resources": {device_resource(p.name): 1 for p in profiles},
            "labels": {digest_label(p.name): (digests or {}).get(p.name, farm_digest(p)) for p in profiles}, **extra}


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def node_pids(node) -> list[int]:
    """The node's processes and their children (the raylet's workers), from /proc (Linux)."""
    pids = []
    for infos in node.all_processes.values():
        for info in infos:
            pids.append(info.process.pid)
            pids.extend(_descendants(info.process.pid))
    return pids


def freeze(node) -> list[int]:
    """SIGSTOP every process of the node: its connections stay open and silent, like a host whose power
    or network went. Returns the pids for :func:`bury`."""
    pids = node_pids(node)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def kill_node(cluster, node) -> None:
    """A host that dies at once: SIGKILL the raylet *and its workers* before Ray removes the node. Removing
    the node alone stops the raylet, but an actor's worker notices only after its next liveness check and
    may finish (and report) the calls in flight meanwhile, so a test could not know what was lost."""
    bury(cluster, node, node_pids(node))


def bury(cluster, node, pids: list[int]) -> None:
    """End a frozen node for good."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cluster.remove_node(node, allow_graceful=False)
