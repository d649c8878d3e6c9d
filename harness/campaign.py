"""A campaign: measure a list of architectures on one device, resumably.

Resume is by content, not by position: an architecture counts as done when the store holds a
successful measurement of it on that device in the campaign's graph mode, so rerunning the same command after Ctrl-C, a crash,
SIGKILL or a dropped device measures only what is missing. Each model's result is committed before
the next model starts. Failures are recorded with their kind and retried on the next run.

Each measurement records the model's identity (graph mode, exporter version, degenerate). A measurement of
a model from an older exporter is *stale*: it still counts as done (reported, never silently mixed), and
is measured again only with ``remeasure_stale``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from harness import interrupts
from harness.devices.driver import Driver, RunResult, make_driver
from harness.devices.lease import DeviceLease, Holder, lock_dir_for
from harness.devices.preflight import check_workload
from harness.devices.profile import Profile
from harness.errors import (ConnectionLost, DriverError, DriverUnavailable, ExportError, FailureKind, HarnessError,
                            StoreError)
from harness.models.cache import EXPORTER_VERSION, Artifact, ModelCache
from harness.models.spaces import Arch, SearchSpace
from harness.results.store import Store, utcnow

T = TypeVar("T")
UNSTABLE_CV = 0.10  # pyperf warns when the standard deviation reaches 10% of the mean


class CampaignAborted(HarnessError):
    """Too many consecutive failures: the device is probably broken, so stop instead of burning time."""


@dataclass
class ModelOutcome:
    """What the observer hears after each model."""

    arch: Arch
    position: int
    total: int
    ok: bool
    median_ms: float | None = None
    cv: float | None = None
    exported: bool = False
    failure_kind: str | None = None
    message: str = ""


@dataclass
class CampaignSummary:
    device: str
    space: str
    requested: int
    skipped: int
    campaign_id: int | None = None
    ok: int = 0
    failed: int = 0
    exported: int = 0
    unstable: list[str] = field(default_factory=list)
    unstable_cv: dict[str, float] = field(default_factory=dict)  # key -> run-to-run CV (std / mean)
    failures: dict[str, int] = field(default_factory=dict)
    status: str = "nothing to do"
    elapsed_s: float = 0.0
    conditions: dict[str, Any] = field(default_factory=dict)
    graph_mode: str = "prune"
    stale: int = 0  # skipped architectures whose stored measurement is of an older exporter's model
    degenerate: int = 0  # measured models whose output does not depend on the input

    @property
    def remaining(self) -> int:
        return self.requested - self.skipped - self.ok


class Observer(Protocol):
    def started(self, summary: CampaignSummary, todo: int) -> None: ...
    def model_done(self, outcome: ModelOutcome, summary: CampaignSummary) -> None: ...


class _Silent:
    def started(self, summary: CampaignSummary, todo: int) -> None:
        pass

    def model_done(self, outcome: ModelOutcome, summary: CampaignSummary) -> None:
        pass


def workload_columns(profile: Profile) -> dict[str, Any]:
    """The profile's workload as the store's measurement columns."""
    w = profile.workload
    return {"batch_size": w.batch_size, "input_shape": w.shape_label(), "precision": w.precision,
            "calibration": w.calibration_label()}


def build_graph(space: SearchSpace, arch: Arch, profile: Profile):
    """The architecture's graph at the profile's resolution (channels from the space)."""
    shape = profile.workload.input_shape
    return space.build(arch, (*shape, space.default_input_shape[2]) if shape else None)


def stale_keys(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch]) -> list[str]:
    """Keys among ``archs`` whose latest measurement in the profile's graph mode is of an older exporter."""
    if hasattr(space, "artifact"):  # model files are not exported: never stale
        return []
    versions = store.measured_versions(profile.name, space.name, profile.graph, workload_columns(profile))
    return [a.key for a in archs if versions.get(a.key, EXPORTER_VERSION) < EXPORTER_VERSION]


def plan(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch],
         remeasure: bool = False, remeasure_stale: bool = False) -> list[Arch]:
    """The architectures still to measure, in the requested order: those without a measurement in the
    profile's graph mode, plus stale ones when ``remeasure_stale``, or all with ``remeasure``."""
    if remeasure:
        return list(archs)
    versions = store.measured_versions(profile.name, space.name, profile.graph, workload_columns(profile))
    if hasattr(space, "artifact"):
        remeasure_stale = False  # model files are not exported: never stale
    return [a for a in archs if a.key not in versions
            or (remeasure_stale and versions[a.key] < EXPORTER_VERSION)]


def retrying(fn: Callable[[], T], retry_s: float) -> T:
    """``fn()``, retried with backoff while the store says the problem may pass (busy, full)."""
    deadline, wait = time.monotonic() + retry_s, 0.05
    while True:
        try:
            return fn()
        except StoreError as e:
            if not (e.transient and time.monotonic() + wait < deadline):
                raise
        time.sleep(wait)
        wait = min(wait * 2, 5.0)


def record(store: Store, retry_s: float, campaign_id: int, device: str, arch: Arch, **fields: Any) -> None:
    """Write one finished measurement, retrying while the store is busy or full; if it still cannot be
    written (or Ctrl-C comes while waiting), keep it beside the store, where the next open adds it, and stop
    the campaign: a finished measurement is never dropped."""
    try:
        retrying(lambda: store.record_measurement(campaign_id, device, arch, **fields), retry_s)
    except (StoreError, KeyboardInterrupt) as e:
        kept = store.keep_pending({"campaign_id": campaign_id, "device": device,
                                   "arch": {"space": arch.space, "key": arch.key, "columns": arch.columns},
                                   **fields})
        if isinstance(e, KeyboardInterrupt):
            raise
        raise StoreError(f"{e}\nThe measurement of {arch.key} is kept in {kept} (pending) and is added to "
                         "the store the next time it is opened.") from e


@dataclass
class Measured:
    """One model's attempt on a device, before it is stored: travels from a farm worker to the writer."""

    arch: Arch
    model_format: str
    started_at: str
    duration_s: float
    model_digest: str | None = None
    exported: bool = False
    result: RunResult | None = None
    failure_kind: str | None = None
    failure_message: str = ""
    degenerate: bool | None = None
    identity: dict[str, Any] = field(default_factory=dict)  # graph mode, exporter version, workload

    @property
    def ok(self) -> bool:
        return self.failure_kind is None


def measure_model(driver: Driver, cache: ModelCache, space: SearchSpace, arch: Arch, profile: Profile,
                  artifact: Artifact | None = None) -> Measured:
    """Export (cached), push and time one model (``artifact``: already at hand). Typed failures become a
    failed Measured; a lost connection (or a driver that cannot run at all) is raised: the device, not the
    model, failed."""
    fmt, wl = profile.runtime.model_format, workload_columns(profile)
    started, t0 = utcnow(), time.perf_counter()
    exported, digest, degenerate = False, None, None
    as_files = hasattr(space, "artifact")  # model files (harness.models.files): measured as they are
    identity: dict[str, Any] = (dict(graph_mode=None, exporter_version=None) if as_files
                                else dict(graph_mode=profile.graph, exporter_version=EXPORTER_VERSION))
    identity["workload"] = wl
    try:
        ref = driver.push_arch(arch)
        if ref is not None:  # answered by architecture (replay): no model file, no exporter identity
            identity = dict(graph_mode=None, exporter_version=None, workload=wl)
        else:
            if artifact is None:
                artifact = space.artifact(arch) if as_files else cache.get(
                    build_graph(space, arch, profile), fmt, profile.graph, batch=wl["batch_size"],
                    precision=wl["precision"], calibration=profile.workload.calibration)
            exported, digest, degenerate = artifact.exported, artifact.digest, artifact.degenerate
            ref = driver.push(artifact)
        result = driver.run(ref)
    except (ConnectionLost, DriverUnavailable):  # nothing else can succeed: stop now
        raise
    except (DriverError, ExportError) as e:
        kind = e.kind.value if isinstance(e, DriverError) else FailureKind.EXPORT_ERROR.value
        return Measured(arch, fmt, started, time.perf_counter() - t0, digest, exported, failure_kind=kind,
                        failure_message=str(e), degenerate=degenerate, identity=identity)
    return Measured(arch, fmt, started, time.perf_counter() - t0, digest, exported, result, degenerate=degenerate,
                    identity=identity)


def record_measured(store: Store, retry_s: float, campaign_id: int, device: str, m: Measured) -> None:
    """One model's outcome and all its runs, in one transaction (see :func:`record`)."""
    fields: dict[str, Any] = dict(model_format=m.model_format, model_digest=m.model_digest, started_at=m.started_at,
                                  duration_s=m.duration_s, degenerate=m.degenerate, **m.identity)
    if m.result is None:
        record(store, retry_s, campaign_id, device, m.arch, failure_kind=m.failure_kind or
               FailureKind.DEVICE_ERROR.value, failure_message=m.failure_message, **fields)
        return
    r = m.result
    record(store, retry_s, campaign_id, device, m.arch, summary=r.summary(), init_ms=r.init_ms,
           timed_ms=r.timed_ms, warmup_ms=r.warmup_ms, per_run=r.per_run, n_runs=r.n_runs,
           conditions={"before": r.conditions_before, "after": r.conditions_after},
           energy_mj=r.energy_mj, energy_method=r.energy_method, **fields)


def count_outcome(summary: CampaignSummary, m: Measured, position: int, total: int) -> ModelOutcome:
    """Add one model to the summary's counts and say what the observer hears."""
    if not m.ok:
        kind = m.failure_kind or FailureKind.DEVICE_ERROR.value
        summary.failed += 1
        summary.failures[kind] = summary.failures.get(kind, 0) + 1
        return ModelOutcome(m.arch, position, total, False, exported=m.exported, failure_kind=kind,
                            message=m.failure_message)
    stats = m.result.summary()  # type: ignore[union-attr]
    summary.degenerate += int(bool(m.degenerate))
    summary.ok += 1
    summary.exported += int(m.exported)
    cv = stats["std_ms"] / stats["mean_ms"] if stats["mean_ms"] > 0 else 0.0
    if cv >= UNSTABLE_CV:
        summary.unstable.append(m.arch.key)
        summary.unstable_cv[m.arch.key] = cv
    return ModelOutcome(m.arch, position, total, True, stats["median_ms"], cv, m.exported)


def run_campaign(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch], *,
                 cache: ModelCache, command: str = "", remeasure: bool = False, remeasure_stale: bool = False,
                 observer: Observer | None = None, max_consecutive_failures: int = 5,
                 driver: Driver | None = None, write_retry_s: float = 600.0, lease_wait: float | None = 0.0,
                 on_lease_wait: Callable[[Holder], None] | None = None) -> CampaignSummary:
    """Measure what of ``archs`` the store lacks on the profile's device, holding the device's lease
    (:class:`~harness.devices.lease.DeviceLease`; ``lease_wait`` seconds to wait for another campaign,
    None: as long as it takes)."""
    with DeviceLease(profile.name, lock_dir_for(store.path), command=command, wait=lease_wait,
                     on_wait=on_lease_wait):
        return _run(store, profile, space, archs, cache=cache, command=command, remeasure=remeasure,
                    remeasure_stale=remeasure_stale,
                    observer=observer, max_consecutive_failures=max_consecutive_failures, driver=driver,
                    write_retry_s=write_retry_s)


def _run(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch], *, cache: ModelCache,
         command: str, remeasure: bool, remeasure_stale: bool, observer: Observer | None, max_consecutive_failures: int,
         driver: Driver | None, write_retry_s: float) -> CampaignSummary:
    observer = observer or _Silent()
    todo = plan(store, profile, space, archs, remeasure, remeasure_stale)
    summary = CampaignSummary(profile.measured_name, space.name, len(archs), len(archs) - len(todo), graph_mode=profile.graph)
    if not (remeasure or remeasure_stale):
        summary.stale = len(stale_keys(store, profile, space, archs))
    if not todo:
        return summary
    check_workload(profile, space, todo)  # bad workload: one clear error before anything starts
    t_start = time.perf_counter()
    fmt = profile.runtime.model_format
    interrupts.check()
    try:
        summary.campaign_id = cid = retrying(lambda: store.start_campaign(
            profile.name, space.name, profile.as_dict(), profile.digest(), len(todo), command), write_retry_s)
    except KeyboardInterrupt:  # it may have committed the row before the id came back: close it
        try:
            with interrupts.shielded():
                store.close_own_campaigns(profile.name, "interrupted", "stopped by the user")
        except StoreError:
            pass  # closed as abandoned by the next campaign
        raise
    status, message, consecutive = "failed", "", 0
    try:
        driver = driver or make_driver(profile)
        summary.conditions = driver.prepare()
        retrying(lambda: store.set_campaign_conditions(cid, summary.conditions), write_retry_s)
        observer.started(summary, len(todo))
        for i, arch in enumerate(todo):
            interrupts.check()  # a Ctrl-C that some library swallowed still stops the campaign here
            m = measure_model(driver, cache, space, arch, profile)
            record_measured(store, write_retry_s, cid, profile.name, m)
            observer.model_done(count_outcome(summary, m, i + 1, len(todo)), summary)
            if m.ok:
                consecutive = 0
            else:
                consecutive += 1
                if consecutive >= max_consecutive_failures:
                    raise CampaignAborted(f"{consecutive} models failed in a row on {profile.name}; "
                                          f"last: {m.failure_kind}: {m.failure_message}")
            if profile.policy.cooldown_seconds and i + 1 < len(todo):
                time.sleep(profile.policy.cooldown_seconds)
        status = "finished"
    except KeyboardInterrupt:
        status, message = "interrupted", "stopped by the user"
        raise
    except HarnessError as e:
        message = str(e)
        raise
    finally:
        summary.status = status
        summary.elapsed_s = time.perf_counter() - t_start
        try:
            _close(store, cid, summary, message, min(write_retry_s, 60.0))
        finally:
            if driver is not None:
                # on Ctrl-C the model in flight is abandoned at once instead of waiting for it
                driver.abort() if status == "interrupted" else driver.cleanup()
    return summary


def _close(store: Store, cid: int, summary: CampaignSummary, message: str, retry_s: float) -> None:
    """Record the campaign's end. The write is shielded: a Ctrl-C meanwhile is held until it is done, then
    raised. A busy store is retried; a Ctrl-C while waiting for it gives up (the row is then closed as
    abandoned later), and so does an error when another one is already on its way out."""
    deadline, wait, interrupted = time.monotonic() + retry_s, 0.05, False
    while True:
        written = False
        try:
            with interrupts.shielded():
                store.finish_campaign(cid, summary.status, message)
                written = True
        except KeyboardInterrupt:
            if written or interrupted:  # held while writing, or a second one: the user wants out
                raise
            interrupted = True  # raised inside the write itself: write again, as interrupted
            summary.status, message = "interrupted", "stopped by the user"
            continue
        except StoreError as e:
            if e.transient and time.monotonic() + wait < deadline:
                time.sleep(wait)
                wait = min(wait * 2, 5.0)
                continue
            if summary.status == "finished":
                raise
            return
        break
    if interrupted:
        raise KeyboardInterrupt
