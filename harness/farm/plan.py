"""What each device of a farm command measures.

``each``: every device measures the whole list (one column per device). ``split``: devices that share a
profile ``group:`` share one queue, so each architecture is measured once per group. Resume is by
content as for one device: a device (or, under split, any device of the group) that already has a
successful measurement of an architecture does not measure it again.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from harness.campaign import plan as campaign_visits
from harness.devices.profile import WHERE_NOT_WHAT, Profile
from harness.errors import FarmError, ProfileError
from harness.models.spaces import Arch, SearchSpace
from harness.results.store import Store

Mode = Literal["each", "split"]


def farm_profile(profile: Profile) -> Profile:
    """The profile as the farm measures it: one visit per architecture. The farm hands architectures to
    whichever device is free, so interleaved rounds, sentinels and gating (which need one device's own
    ordered loop) are refused when a profile asks for them; the default rounds setting (also when a profile spells
    it out) becomes 1."""
    pol = profile.policy
    problems = []
    # asked for: other than the default (a profile copied from `devices show` spells the default out)
    if pol.rounds > 1 and pol.rounds != type(pol).model_fields["rounds"].default:
        problems.append(f"policy.rounds: {pol.rounds} interleaved rounds need one device's own loop; set "
                        "rounds: 1 (or --rounds 1) for a farm command, or measure this device on its own")
    if pol.sentinels is not None:
        problems.append("policy.sentinels: sentinel checks run in one device's own loop; remove them for a farm "
                        "command, or measure this device on its own")
    if pol.gate.active:
        problems.append("policy.gate: gating runs in one device's own loop; remove it for a farm command, or "
                        "measure this device on its own")
    if problems:
        raise ProfileError(f"{profile.name} (measured with several devices / --ray / --split)", problems)
    return _one_visit(profile)


def _one_visit(profile: Profile) -> Profile:
    pol = profile.policy
    return profile if pol.rounds == 1 else profile.model_copy(update={"policy": pol.model_copy(update={"rounds": 1})})


def farm_digest(profile: Profile) -> str:
    """The digest a host advertises for a profile and a farm command checks: of the profile as the farm measures
    it (one visit per architecture), so a profile with the default three rounds (every built-in, the README's
    template) is the same on both sides; `farm join` digested it as written, the command after farm_profile, and
    no such profile could be measured on a farm ("digest differs" for identical files). The workload and graph
    mode are left out: the command's flags set them (--batch-size, --graph) and the host measures the profile the
    command sends; with them, identical files were refused as different for any such flag."""
    from harness.devices.profile import Workload

    return _one_visit(profile).model_copy(update={"workload": Workload(), "graph": "prune"}).digest()


def campaign_plan(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch],
                  remeasure: bool = False, remeasure_stale: bool = False) -> list[Arch]:
    """The architectures the device still has to measure (one visit each, see :func:`farm_profile`)."""
    return [a for a, _ in campaign_visits(store, farm_profile(profile), space, archs, remeasure, remeasure_stale,
                                          rounds=1, any_plan=True)]


def measuring_digest(profile: Profile) -> str:
    """What makes two devices interchangeable under --split: everything but their names."""
    body = {k: v for k, v in profile.as_dict().items() if k not in ("name", "description", "hardware", "group")}
    conn = dict(body.get("connection", {}))
    for k in WHERE_NOT_WHAT:
        conn.pop(k, None)
    body["connection"] = conn
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Queue:
    """Architectures waiting for a device (under split: for any device of a group)."""

    name: str
    devices: list[str]
    todo: deque[Arch]
    skipped: int


@dataclass
class FarmPlan:
    mode: Mode
    space: SearchSpace
    archs: list[Arch]
    profiles: dict[str, Profile]
    queues: dict[str, Queue]  # queue name -> queue
    queue_of: dict[str, str] = field(default_factory=dict)  # device -> queue name

    def refresh(self, fresh: FarmPlan) -> None:
        """Take ``fresh``'s lists (worked out again after waiting for another command: lanes built for this plan
        stay valid, its devices are the same)."""
        self.queues, self.queue_of = fresh.queues, fresh.queue_of


def check_one_per_machine(profiles: Sequence[Profile]) -> None:
    """Two profiles of one phone (serial) or board (host:port) reached from this host would time beside each other
    and kill each other's runs. (Not for Ray: there each host reaches its own devices, and two hosts' emulators
    or localhost boards share a serial or an address.)"""
    from harness.devices.lease import machine_of

    seen: dict[str, str] = {}
    for p in profiles:
        m = machine_of(p)
        if m is not None and m[0] in seen:
            raise FarmError(f"--device {seen[m[0]]} and --device {p.name} are {m[1]}: one device measures one model "
                            "at a time; measure them one after the other")
        if m is not None:
            seen[m[0]] = p.name


def make_plan(store: Store, profiles: Sequence[Profile], space: SearchSpace, archs: Sequence[Arch],
              mode: Mode = "each", remeasure: bool = False, remeasure_stale: bool = False) -> FarmPlan:
    names = [p.name for p in profiles]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FarmError(f"--device {dupes[0]} is given twice; a device runs one campaign at a time")
    if not profiles:
        raise FarmError("no device given; use --device NAME (repeat it for several devices)")
    profiles = [farm_profile(p) for p in profiles]
    plan = FarmPlan(mode, space, list(archs), {p.name: p for p in profiles}, {})
    if mode == "each":
        for p in profiles:
            todo = deque(campaign_plan(store, p, space, archs, remeasure, remeasure_stale))
            plan.queues[p.name] = Queue(p.name, [p.name], todo, len(archs) - len(todo))
            plan.queue_of[p.name] = p.name
        return plan
    if mode != "split":
        raise FarmError(f"unknown farm mode {mode!r}; use --each or --split")
    groups: dict[str, list[Profile]] = {}
    for p in profiles:
        if p.group is None:
            raise FarmError(f"--split shares work within a profile group, but device {p.name!r} has none; "
                            f"add `group: NAME` to its profile (the same name on each identical device)")
        groups.setdefault(p.group, []).append(p)
    for group, members in groups.items():
        digests = {measuring_digest(p): p.name for p in members}
        if len(digests) > 1:
            a, b = list(digests.values())[:2]
            raise FarmError(f"group {group!r}: devices {a!r} and {b!r} differ in runtime, policy or connection "
                            "kind, so their latencies are not interchangeable; make their profiles identical "
                            "(but for name and address) or give them different groups")
        # to do for the group: what no member has (resume by content, as for one device)
        missing = [set(campaign_plan(store, p, space, archs, remeasure, remeasure_stale)) for p in members]
        todo = deque(a for a in archs if all(a in m for m in missing))
        plan.queues[group] = Queue(group, [p.name for p in members], todo, len(archs) - len(todo))
        for p in members:
            plan.queue_of[p.name] = group
    return plan
