"""Runs a farm plan: one lane per device, the command's process the store's one writer.

A lane measures one model at a time on its device (a thread here, a Ray actor on the device's host)
and hands back :class:`~harness.campaign.Measured` results; this loop records each in its own
transaction as soon as it arrives, exactly as a one-device campaign does, so resume-by-content works
the same. Faults stop one lane, never the farm: a lost host records its in-flight model as failed
``device_lost`` (and, under ``--split``, gives it back to the group's queue), a dropped device stops its
lane, and the other lanes go on.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Protocol

from harness.campaign import (CampaignSummary, Measured, ModelOutcome, changed_setup, count_outcome,
                              energy_counter_dead, neighbour_window_reset, record_measured, retrying)
from harness.devices.lease import leases_for, lock_dir_for
from harness.devices.preflight import precision_caveat
from harness.errors import ConnectionLost, FailureKind, HarnessError, StoreError
from harness.farm.plan import FarmPlan, check_one_per_machine
from harness.models.spaces import Arch
from harness.results.store import Store, utcnow


class DeviceLost(HarnessError):
    """The host measuring a device went away (a Ray node died); its in-flight model has no result."""


class Lane(ABC):
    """Where one device's models are measured. Futures resolve to conditions / Measured, or raise
    DeviceLost (host gone), ConnectionLost (device dropped) or another HarnessError."""

    device: str
    host: str = ""
    depth: int = 1  # models handed over at once; >1 hides the round trip of a remote lane

    @abstractmethod
    def start(self) -> Future:
        """Connect and prepare the device; resolves to the session's conditions."""

    @abstractmethod
    def submit(self, arch: Arch, queued: int, hint=None) -> Future:
        """Measure one model; ``queued`` (models still waiting) is only reported to `farm status`;
        ``hint`` (:class:`~harness.farm.local.ModelHint`) says where the model's file is if cached."""

    @abstractmethod
    def close(self, graceful: bool = True) -> None:
        """Release the device (``graceful``: let it clean up first); never raises."""

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for a graceful close's clean-up (the device's worker gone when the command
        returns); never raises."""

    def ping(self) -> Future | None:
        """A heartbeat that answers while a model runs, or None where silence cannot happen (threads here).
        A host that vanishes without closing its connections (power, network) is noticed by its silence."""
        return None


@dataclass
class DeviceSummary(CampaignSummary):
    series: str = ""  # the name its latencies go by: NAME@bs4 for another workload (``device`` is the profile's)
    host: str = ""
    group: str | None = None
    planned: int = 0
    message: str = ""


SETTLE_S = 10.0  # how long a finished farm command waits for its devices' clean-up, all together


@dataclass
class FarmSummary:
    mode: str
    space: str
    requested: int
    devices: list[DeviceSummary]
    left: dict[str, int] = field(default_factory=dict)  # queue (device or group) -> architectures not measured
    elapsed_s: float = 0.0
    startup_s: float = 0.0  # until every device was prepared (Ray: actors started on their hosts)

    @property
    def finished(self) -> bool:
        return all(d.status in ("finished", "nothing to do") for d in self.devices) and not any(self.left.values())

    def stopped(self) -> list[DeviceSummary]:
        return [d for d in self.devices if d.status not in ("finished", "nothing to do")]


class FarmObserver(Protocol):
    def device_started(self, s: DeviceSummary, todo: int) -> None: ...
    def model_done(self, s: DeviceSummary, outcome: ModelOutcome) -> None: ...
    def device_stopped(self, s: DeviceSummary) -> None: ...


class _Silent:
    def device_started(self, s: DeviceSummary, todo: int) -> None:
        pass

    def model_done(self, s: DeviceSummary, outcome: ModelOutcome) -> None:
        pass

    def device_stopped(self, s: DeviceSummary) -> None:
        pass


@dataclass
class _Flight:
    device: str
    arch: Arch
    seq: int


class _Farm:
    def __init__(self, store: Store, plan: FarmPlan, lanes: dict[str, Lane], observer: FarmObserver,
                 command: str, max_consecutive_failures: int, heartbeat_s: float, silence_s: float,
                 write_retry_s: float):
        self.store, self.plan, self.lanes, self.obs = store, plan, lanes, observer
        self.command, self.max_fail = command, max_consecutive_failures
        self.summaries: dict[str, DeviceSummary] = {}
        self.cids: dict[str, int] = {}
        self.active: set[str] = set()
        self.closed: set[str] = set()  # devices whose campaign row is closed (finished, failed, interrupted)
        self.consecutive: dict[str, int] = {}
        self.flights: dict[Future, _Flight] = {}
        self.seq = 0
        self.t0 = time.perf_counter()
        self.startup_s = 0.0
        self.heartbeat_s, self.silence_s = heartbeat_s, silence_s
        self.retry_s = write_retry_s
        self.pings: dict[str, tuple[Future, float]] = {}  # device -> (ping in flight, sent at)
        self.last_ping: dict[str, float] = {}
        self.hints: dict[tuple, object] = {}

    # --- lane lifecycle -------------------------------------------------------------------
    def open(self, start_timeout_s: float) -> None:
        plan = self.plan
        for name, profile in plan.profiles.items():
            q = plan.queues[plan.queue_of[name]]
            s = DeviceSummary(name, plan.space.name, len(plan.archs), q.skipped, host=self.lanes[name].host,
                              group=profile.group if plan.mode == "split" else None, planned=len(q.todo),
                              graph_mode=profile.graph, series=profile.measured_name,
                              cuda_graph_setting=profile.runtime.cuda_graph_setting)
            if s.skipped:  # kept as measured: by this setup?
                waiting = {a.key for a in q.todo}
                s.profile_changes, s.changed_archs = changed_setup(
                    self.store, profile, plan.space.name, [a.key for a in plan.archs if a.key not in waiting])
            self.summaries[name] = s
        starting: dict[Future, str] = {}
        for name, s in self.summaries.items():
            if s.planned == 0:
                continue
            profile = plan.profiles[name]
            s.campaign_id = self.cids[name] = retrying(lambda: self.store.start_campaign(
                name, plan.space.name, profile.as_dict(), profile.digest(), s.planned, self.command), self.retry_s)
            neighbour_window_reset(name)  # its short visits pool with this campaign's only
            starting[self.lanes[name].start()] = name
        done, pending = wait(starting, timeout=start_timeout_s)
        for f in pending:
            f.cancel()
            self.stop(starting[f], "failed", f"the device did not start within {start_timeout_s:.0f} s")
        for f in done:
            name = starting[f]
            try:
                conditions = f.result()
            except (HarnessError, ConnectionError, OSError) as e:
                self.stop(name, "failed", f"could not start: {e}")
                continue
            s = self.summaries[name]
            s.conditions = conditions
            s.caveat = precision_caveat(plan.profiles[name], conditions)
            retrying(lambda: self.store.set_campaign_conditions(self.cids[name], conditions), self.retry_s)
            s.status = "running"
            self.active.add(name)
            self.consecutive[name] = 0
            self.obs.device_started(s, s.planned)
        self.startup_s = time.perf_counter() - self.t0

    def stop(self, name: str, status: str, message: str = "", graceful: bool = True) -> None:
        s = self.summaries[name]
        self.active.discard(name)
        self.closed.add(name)
        self.pings.pop(name, None)
        s.status, s.message = status, message
        s.elapsed_s = time.perf_counter() - self.t0
        if name in self.cids:
            try:
                retrying(lambda: self.store.finish_campaign(self.cids[name], status, message), min(self.retry_s, 60))
            except StoreError:
                if status == "finished":
                    raise  # else the row stays 'running' and is closed as abandoned later, as for one device
        self.obs.device_stopped(s)
        self.lanes[name].close(graceful)

    # --- the loop -------------------------------------------------------------------------
    def fill(self) -> None:
        for name in sorted(self.active):
            lane = self.lanes[name]
            q = self.plan.queues[self.plan.queue_of[name]]
            in_flight = sum(1 for f in self.flights.values() if f.device == name)
            while in_flight < lane.depth and q.todo:
                arch = q.todo.popleft()
                self.seq += 1
                self.flights[lane.submit(arch, len(q.todo), self.hint(name, arch))] = _Flight(name, arch, self.seq)
                in_flight += 1

    def hint(self, name: str, arch: Arch):
        """Where the model is cached: worked out once per architecture, not once per device."""
        from harness.farm.local import model_hint

        p = self.plan.profiles[name]
        if hasattr(self.plan.space, "artifact") or not p.workload.is_default():
            return None  # model files are measured as they are; other workloads: the device's cache.get decides
        key = (arch.key, p.runtime.model_format, p.graph)
        if key not in self.hints:
            try:
                self.hints[key] = model_hint(self.plan.space, arch, p.runtime.model_format, p.graph)
            except HarnessError:
                self.hints[key] = None  # the device builds it and reports the failure with its kind
        return self.hints[key]

    def handle(self, fut: Future, flight: _Flight) -> None:
        name = flight.device
        q = self.plan.queues[self.plan.queue_of[name]]
        if name not in self.active:  # handed over before its lane stopped: never measured
            q.todo.appendleft(flight.arch)
            return
        s = self.summaries[name]
        try:
            m: Measured = fut.result()
        except DeviceLost as e:
            self.lost(name, flight, str(e))
            return
        except ConnectionLost as e:
            self._give_back(q, flight.arch)
            self.stop(name, "failed", f"device dropped: {e}")
            return
        except HarnessError as e:
            self._give_back(q, flight.arch)
            self.stop(name, "failed", str(e))
            return
        record_measured(self.store, self.retry_s, self.cids[name], name, m, self.plan.profiles[name].policy)
        self._count(s, m, name)
        if m.ok:
            self.consecutive[name] = 0
        elif not m.permanent:  # as run_campaign: a row a replay table lacks says nothing about the device
            self.consecutive[name] += 1
            if self.consecutive[name] >= self.max_fail:
                self.stop(name, "failed", f"{self.consecutive[name]} models failed in a row on {name}; "
                                          f"last: {m.failure_kind}: {m.failure_message}")

    def lost(self, name: str, flight: _Flight, why: str) -> None:
        """The host went away mid-model: that model is recorded failed (device_lost) and handed back."""
        s = self.summaries[name]
        q = self.plan.queues[self.plan.queue_of[name]]
        lost = Measured(flight.arch, self.plan.profiles[name].runtime.model_format, utcnow(), 0.0,
                        failure_kind=FailureKind.DEVICE_LOST.value, failure_message=why)
        record_measured(self.store, self.retry_s, self.cids[name], name, lost, self.plan.profiles[name].policy)
        self._count(s, lost, name)
        self._give_back(q, flight.arch)
        self.stop(name, "failed", f"device lost: {why}", graceful=False)

    def check_heartbeats(self) -> None:
        now = time.perf_counter()
        for name in sorted(self.active):
            ping = self.pings.get(name)
            if ping is not None and ping[0].done():
                self.pings.pop(name)
                if ping[0].exception() is None:
                    ping = None
                else:  # the model's own future reports the loss with Ray's reason
                    continue
            if ping is None:
                if not any(f.device == name for f in self.flights.values()):
                    continue
                if now - self.last_ping.get(name, 0.0) >= self.heartbeat_s:
                    fut = self.lanes[name].ping()
                    if fut is not None:
                        self.pings[name] = (fut, now)
                        self.last_ping[name] = now
                continue
            if now - ping[1] > self.silence_s:
                mine = sorted((f for f in self.flights.items() if f[1].device == name), key=lambda kv: kv[1].seq)
                for fut, _ in mine:
                    self.flights.pop(fut)
                    fut.cancel()
                first, rest = mine[0][1], [f for _, f in mine[1:]]
                q = self.plan.queues[self.plan.queue_of[name]]
                for f in reversed(rest):
                    q.todo.appendleft(f.arch)
                self.lost(name, first, f"{name}'s host {self.lanes[name].host} stopped answering "
                                       f"(no heartbeat for {self.silence_s:.0f} s)")

    def _give_back(self, q, arch: Arch) -> None:
        """Back to its queue: under --split another device of the group takes it; else it counts as left."""
        q.todo.appendleft(arch)

    def _count(self, s: DeviceSummary, m: Measured, name: str) -> None:
        outcome = count_outcome(s, m, s.ok + s.failed + 1, s.planned, self.plan.profiles[name].policy)
        s.energy_given_up = energy_counter_dead(s.no_energy, len(s.energy_mj))  # its session stops metering too
        self.obs.model_done(s, outcome)

    def run(self) -> None:
        from harness import interrupts

        while True:
            interrupts.check()  # a Ctrl-C that some library swallowed still stops the farm here
            self.fill()
            if not self.flights:
                break
            done, _ = wait(list(self.flights), return_when=FIRST_COMPLETED, timeout=1.0)
            for fut in sorted(done, key=lambda f: self.flights[f].seq):  # a lane's earliest model ran first
                self.handle(fut, self.flights.pop(fut))
            self.check_heartbeats()
            self.close_done()
        for name in sorted(self.active):
            self.stop(name, "finished")

    def close_done(self) -> None:
        """Close a device's campaign as soon as its list is done (its queue empty, nothing of its queue in flight,
        so nothing can be handed back to it): one done in a second stayed 'running' until the slowest device
        finished, and a Ctrl-C meanwhile recorded its complete campaign as interrupted."""
        busy = {self.plan.queue_of[f.device] for f in self.flights.values()}
        for name in sorted(self.active):
            qn = self.plan.queue_of[name]
            if not self.plan.queues[qn].todo and qn not in busy:
                self.stop(name, "finished")

    def abort(self, status: str, message: str) -> None:
        """Stop every device that has a campaign, started or still starting: a Ctrl-C while the devices were
        starting left their campaigns 'running' (2 of 4 tries), relabelled 'abandoned' only by a later command."""
        for fut in list(self.flights):
            fut.cancel()
        for name in sorted(set(self.cids) - self.closed):
            self.stop(name, status, message, graceful=False)
        for name in self.plan.profiles:  # its row may be committed before its id came back
            if name not in self.closed:
                try:
                    self.store.close_own_campaigns(name, status, message)
                except StoreError:
                    pass  # closed as abandoned by the next campaign


def run_farm(store: Store, plan: FarmPlan, lanes: dict[str, Lane], *, command: str = "",
             observer: FarmObserver | None = None, max_consecutive_failures: int = 5,
             start_timeout_s: float = 120.0, heartbeat_s: float = 2.0, silence_s: float = 10.0,
             write_retry_s: float = 600.0, lease_wait: float | None = 0.0, on_lease_wait=None,
             replan: Callable[[], FarmPlan] | None = None, machines: bool = True) -> FarmSummary:
    """Measure the plan on its lanes concurrently; returns which devices finished and what is left.

    A remote device whose host does not answer a heartbeat (sent every ``heartbeat_s`` while it has work)
    for ``silence_s`` counts as lost, as when Ray reports its node dead (which takes about a minute for a
    host that vanishes without closing its connections).

    Every device's lease (:class:`~harness.devices.lease.DeviceLease`) is held for the whole run, so a
    one-device campaign and a farm never measure the same device at once. ``replan`` works the lists out again
    when a lease had to be waited for: the campaign it waited on has measured some of them meanwhile (a
    `--wait` farm measured them a second time). ``machines``: also the leases of the phones and boards the
    profiles reach from this host (:func:`~harness.devices.lease.machine_of`); off for Ray, whose hosts reach
    their own devices."""
    if machines:
        check_one_per_machine(list(plan.profiles.values()))
    waited: list[bool] = []

    def on_wait(holder) -> None:
        waited.append(True)
        if on_lease_wait is not None:
            on_lease_wait(holder)

    farm = _Farm(store, plan, lanes, observer or _Silent(), command, max_consecutive_failures, heartbeat_s,
                 silence_s, write_retry_s)
    try:
        with ExitStack() as leases:
            # every profile's lease, then every machine's, each in name order: two farms waiting on each other's
            # devices (--wait) take them in one order, so neither holds what the other waits for
            held = [lease for name in plan.profiles for lease in
                    leases_for(plan.profiles[name], lock_dir_for(store.path), machines, command=command,
                               wait=lease_wait, on_wait=on_wait)]
            for lease in sorted(held, key=lambda x: (x.device.startswith("machine."), x.device)):
                leases.enter_context(lease)
            if waited and replan is not None:
                plan.refresh(replan())
            farm.open(start_timeout_s)
            farm.run()
    except KeyboardInterrupt:
        from harness import interrupts

        try:
            with interrupts.shielded():  # a second Ctrl-C must not leave campaigns 'running'
                farm.abort("interrupted", "stopped by the user")
        except KeyboardInterrupt:
            pass
        raise
    except BaseException as e:
        farm.abort("failed", f"the farm stopped: {e}")
        raise
    finally:
        for lane in lanes.values():
            lane.close(graceful=False)
        deadline = time.monotonic() + SETTLE_S
        for lane in lanes.values():
            lane.settle(max(0.0, deadline - time.monotonic()))
    summary = FarmSummary(plan.mode, plan.space.name, len(plan.archs), list(farm.summaries.values()),
                          elapsed_s=time.perf_counter() - farm.t0, startup_s=farm.startup_s)
    for qname, q in plan.queues.items():
        summary.left[qname] = len(q.todo)
    return summary

