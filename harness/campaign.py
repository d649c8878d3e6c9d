"""A campaign: measure a list of architectures on one device, resumably.

Resume is by content, not by position: an (architecture, round) visit counts as done when the store
holds a successful measurement of it on that device in the campaign's graph mode, so rerunning the same
command after Ctrl-C, a crash,
SIGKILL or a dropped device measures only what is missing. Each model's result is committed before
the next model starts. Failures are recorded with their kind and retried on the next run.

Each measurement records the model's identity (graph mode, exporter version, degenerate). A measurement of
a model from an older exporter is *stale*: it still counts as done (reported, never silently mixed), and
is measured again only with ``remeasure_stale``.
"""

from __future__ import annotations

import collections
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from harness import interrupts
from harness.devices.driver import Driver, RunResult, make_driver, prepared, result_problem, run_stats
from harness.devices.lease import Holder, leases_for, lock_dir_for
from harness.devices.preflight import check_workload, precision_caveat
from harness.devices.profile import Policy, Profile, measurement_changes
from harness.errors import (AccessRefused, ConnectionLost, DriverError, DriverUnavailable, ExportError, FailureKind,
                            HarnessError, StoreError)
from harness.measure import sentinels
from harness.measure.clock import Clock, RealClock
from harness.measure.gating import GateOutcome, wait_until_quiet
from harness.measure.schedule import plan_visits
from harness.measure.stats import Estimate, estimate
from harness.models.cache import EXPORTER_VERSION, Artifact, ModelCache
from harness.models.spaces import Arch, SearchSpace
from harness.results.store import Store, utcnow

T = TypeVar("T")
UNSTABLE_CV = 0.10  # pyperf warns when the standard deviation reaches 10% of the mean
UNSTABLE_REL_CI = 0.05  # a visit whose median is known no better than +-5 % (95 % CI) is unstable


class CampaignAborted(HarnessError):
    """Too many consecutive failures: the device is probably broken, so stop instead of burning time."""


class DeviceNotQuiet(HarnessError):
    """The device stayed over the gate's limits for the whole bounded wait and the policy says stop."""


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
    round: int = 1
    rel_ci: float | None = None
    suspect: str | None = None


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
    labels: dict[str, str] = field(default_factory=dict)  # key -> how to name it on screen (an index if any)
    failures: dict[str, int] = field(default_factory=dict)
    status: str = "nothing to do"
    elapsed_s: float = 0.0
    conditions: dict[str, Any] = field(default_factory=dict)
    runs: int = 0
    suspect: int = 0
    gate_wait_s: float = 0.0
    gate_timeouts: int = 0
    paused_s: float = 0.0
    graph_mode: str = "prune"
    stale: int = 0  # skipped architectures whose stored measurement is of an older exporter's model
    degenerate_keys: set[str] = field(default_factory=set)  # measured architectures whose output ignores the input
    rounds: int = 1  # visits per architecture: ``ok`` and ``failed`` count visits
    profile_changes: list[str] = field(default_factory=list)  # stored ones were measured with another setup
    changed_archs: int = 0  # how many of the kept architectures that was
    fixed_runs: int | None = None  # the policy is adaptive but the driver times this fixed count per visit
    unused_timed_runs: int | None = None  # the profile set timed_runs beside adaptive, which decides on this device
    watched: int = 0  # successful visits whose runner saw the other processes' CPU use (a suspect check was made)
    no_ci: int = 0  # successful visits with too few clean runs for a CI of the median: their noise is unknown
    repaired: int = 0  # cached model files that had changed on disk and were exported again
    visit_medians: dict[str, list[float]] = field(default_factory=dict)  # key -> each ok visit's median here
    visit_rel_cis: dict[str, list[float | None]] = field(default_factory=dict)  # key -> each one's CI half / median
    not_measurable: int = 0  # failed visits the device can never measure (a replay table's gaps)
    no_energy: int = 0  # successful visits of a policy with energy on whose energy pass gave no figure
    no_energy_why: str | None = None  # the first such visit's reason (the meter's own words)
    energy_mj: list[float] = field(default_factory=list)  # each metered visit's energy per inference
    energy_method: str | None = None
    energy_given_up: bool = False  # the first passes' counter never moved: the rest of the campaign ran none
    other_plan: int = 0  # architectures measured again because their visits were of another rounds plan
    cuda_graph_setting: str | None = None  # the profile's CUDA-graph switch when it times a GPU: advice names it
    last_failure: str | None = None  # the latest failed visit's kind and message: what `campaigns` shows
    caveat: str | None = None  # the device computes in another precision than the workload names (preflight)
    unused: list[str] = field(default_factory=list)  # profile fields set that this device's tool does not read

    @property
    def degenerate(self) -> int:
        """Measured architectures (not visits) whose model's output does not depend on its input."""
        return len(self.degenerate_keys)


class Observer(Protocol):
    """What a campaign tells its caller; it may also have ``waiting(reasons)``, called while the gate holds the
    next model, and ``model_starting(arch)`` (the CLI shows both on the progress line: an int8 export calibrates
    for seconds before its first run)."""

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
            "calibration": profile.int8_calibration().label() if w.precision == "int8" else None}


def build_graph(space: SearchSpace, arch: Arch, profile: Profile):
    """The architecture's graph at the profile's resolution (channels from the space)."""
    shape = profile.workload.input_shape
    return space.build(arch, (*shape, space.default_input_shape[2]) if shape else None)


def stale_keys(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch]) -> list[str]:
    """Keys among ``archs`` whose latest measurement in the profile's graph mode is of an older exporter."""
    if hasattr(space, "artifact"):  # model files are not exported: never stale
        return []
    versions = store.measured_versions(profile.name, space.name, profile.graph, workload_columns(profile))
    return [a.key for a in archs if _older(versions.get(a.key))]


def _older(version: int | None) -> bool:
    """Measured on a model from an older exporter (None: no model of ours, e.g. a replayed table)."""
    return version is not None and version < EXPORTER_VERSION


def plan(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch],
         remeasure: bool = False, remeasure_stale: bool = False,
         rounds: int | None = None, any_plan: bool = False) -> list[tuple[Arch, int]]:
    """The (architecture, round) visits still to make: rounds in seeded shuffled orders; visits measured in
    the profile's graph mode and workload are skipped (stale ones too, unless ``remeasure_stale``), none
    with ``remeasure``. ``any_plan``: a visit measured under another rounds plan counts too (the farm measures
    one visit each; an architecture a single-device campaign measured in 3 rounds is not missing)."""
    r = rounds or profile.policy.rounds
    done: set[tuple[str, int]] = set()
    if hasattr(space, "artifact"):
        remeasure_stale = False  # model files are not exported: never stale
    if not remeasure:
        versions = store.measured_rounds(profile.name, space.name, None if any_plan else r, profile.graph,
                                         workload_columns(profile))
        done = {k for k, v in versions.items() if not (remeasure_stale and _older(v))}
    return plan_visits(archs, r, profile.policy.round_seed, done)


def reference_arch(space: SearchSpace, choice: str) -> Arch:
    """The paired reference model: ``auto`` = a fixed, cheap-to-mid architecture of the space (by MACs)."""
    if choice != "auto":
        return space.parse(choice)
    size = space.size()
    pool = sorted(space.sample(min(31, size) if size else 31, 0), key=lambda a: (space.build(a).macs(), a.key))
    return pool[len(pool) // 3]


# /proc/stat counts CPU time in 10 ms ticks: a 10 ms visit read 0 or 1 tick of the neighbours, so a busy neighbour
# was missed in about half the visits and a quiet machine read "112 % of the CPUs" in 5-9 % of them (walk L). A
# visit shorter than this is judged on the pooled counters of the device's latest visits up to this much wall time.
NEIGHBOUR_WINDOW_S = 0.5
_recent: dict[str, collections.deque] = {}  # device -> the latest visits' neighbour counters (this process)


def neighbour_window_reset(device: str) -> None:
    """Start a campaign's pooling afresh: another campaign's visits, maybe hours old, are no window of this one."""
    _recent.pop(device, None)


def _pooled(device: str | None, nb: dict) -> dict:
    """``nb``, or for a short visit the sum of the device's latest visits' counters (at least NEIGHBOUR_WINDOW_S)."""
    if device is None:
        return nb
    recent = _recent.setdefault(device, collections.deque(maxlen=200))
    recent.append(nb)
    if nb["wall_s"] >= NEIGHBOUR_WINDOW_S:
        return nb
    pooled = {"wall_s": 0.0, "others_cpu_s": 0.0, "steal_s": 0.0, "cpus": nb.get("cpus", 1)}
    for past in reversed(recent):
        for k in ("wall_s", "others_cpu_s", "steal_s"):
            pooled[k] += past.get(k, 0.0) or 0.0
        if pooled["wall_s"] >= NEIGHBOUR_WINDOW_S:
            break
    return pooled


def judge(result: RunResult, policy: Policy, device: str | None = None) -> tuple[Estimate, str | None]:
    """The visit's estimate and, when the device was not alone, why the visit is suspect. ``device``: pool a
    short visit's neighbour counters with the device's latest visits (NEIGHBOUR_WINDOW_S)."""
    est = estimate(result.timed_ms, result.wait_ms, exclude_preempted=policy.preempted_runs == "exclude",
                   outlier_k=policy.outlier_k)
    reasons = []
    n = len(result.timed_ms)
    if result.wait_ms is not None and est.n_preempted * 2 > n:
        reasons.append(f"preempted in {est.n_preempted} of {n} runs")
    nb = result.neighbours or {}
    if nb.get("wall_s"):
        nb = _pooled(device, nb)
        cap = nb["wall_s"] * max(1, nb.get("cpus", 1))
        others, steal = min(nb.get("others_cpu_s", 0) / cap, 1.0), min(nb.get("steal_s", 0) / cap, 1.0)
        if others > policy.max_neighbour_cpu:  # shown at most 100 %: tick rounding read 438 % on 2 CPUs
            reasons.append(f"other processes used {others:.0%} of the CPUs")
        if steal > policy.max_steal:
            reasons.append(f"hypervisor steal {steal:.0%}")
    said = (result.conditions_after or {}).get("tool_errors")
    if said:  # the device's tool printed ERROR lines yet exited 0 (benchmark_model): not a clean visit
        reasons.append(f"the device's tool reported errors: {'; '.join(map(str, said))[:300]}")
    return est, "; ".join(reasons) or None


def _ref_estimate(result: RunResult, policy: Policy):
    if not result.reference_ms:
        return None
    return estimate(result.reference_ms, result.reference_wait_ms,
                    exclude_preempted=policy.preempted_runs == "exclude", outlier_k=policy.outlier_k)


def _ref_median(result: RunResult, policy: Policy) -> float | None:
    est = _ref_estimate(result, policy)
    return est.median_ms if est is not None else None


class _Sentinels:
    """Runs the sentinel checks of one campaign (see harness.measure.sentinels)."""

    def __init__(self, store: Store, cid: int, profile: Profile, space: SearchSpace, archs: Sequence[Arch],
                 cache: ModelCache, driver: Driver, clock: Clock, retry_s: float):
        assert profile.policy.sentinels is not None
        self.retry_s = retry_s  # its writes wait out a busy store as measurements do (a 36 s lock failed a campaign)
        self.pol, self.policy = profile.policy.sentinels, profile.policy
        self.store, self.cid, self.profile, self.driver, self.clock = store, cid, profile, driver, clock
        self.archs = sentinels.choose(space, archs, self.pol)
        self.refs = {a.key: driver.push(artifact_for(cache, space, a, profile)) for a in self.archs}
        self.monitor = sentinels.Monitor(self.pol.band)
        self.window: list[int] = []  # measurement ids since the last good check
        self.since = 0
        self.paused_s = 0.0

    def _check(self, done: int, phase: str) -> list[sentinels.Check]:
        out = []
        for a in self.archs:
            self.driver.meter_energy = False  # a timing check: no energy pass
            est, _ = judge(self.driver.run(self.refs[a.key]), self.policy)
            c = self.monitor.check(a.key, est.median_ms, est.rel_ci)
            retrying(lambda: self.store.record_sentinel(
                self.cid, self.profile.name, a, models_done=done, median_ms=c.median_ms, baseline_ms=c.baseline_ms,
                in_band=c.in_band, phase=phase, band=c.effective_band), self.retry_s)
            out.append(c)
        return out

    def start(self) -> None:
        self._check(0, "baseline")

    def after_model(self, measurement_id: int | None, done: int) -> None:
        if measurement_id is not None:
            self.window.append(measurement_id)
        self.since += 1
        if self.since < self.pol.every:
            return
        self.since = 0
        checks = self._check(done, "check")
        bad = [c for c in checks if not c.in_band]
        if not bad:
            self.window = []
            return
        what = ", ".join(f"{c.key[:24]} {c.deviation:+.1%}" for c in bad)
        window = list(self.window)
        retrying(lambda: self.store.mark_suspect(window, f"sentinel out of band after model {done}: {what}"),
                 self.retry_s)
        retrying(lambda: self.store.record_event(self.cid, "sentinel_drift", {
            "models_done": done, "marked": len(window), "out_of_band": {c.key: c.deviation for c in bad}}),
            self.retry_s)
        self.window = []
        if self.pol.on_drift != "pause":
            return
        t0 = self.clock.now()
        recovered = False
        steps = math.ceil(self.pol.max_pause_s / self.pol.pause_step_s)  # bounded on any clock
        for k in range(steps):
            self.clock.sleep(min(self.pol.pause_step_s, self.pol.max_pause_s - k * self.pol.pause_step_s))
            if all(c.in_band for c in self._check(done, "pause")):
                recovered = True
                break
        waited = self.clock.now() - t0
        self.paused_s += waited
        retrying(lambda: self.store.record_event(self.cid, "pause", {"models_done": done, "waited_s": round(waited, 3),
                                                                     "recovered": recovered}), self.retry_s)


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


def record(store: Store, retry_s: float, campaign_id: int, device: str, arch: Arch, **fields: Any) -> int:
    """Write one finished measurement, retrying while the store is busy or full; if it still cannot be
    written (or Ctrl-C comes while waiting), keep it beside the store, where the next open adds it, and stop
    the campaign: a finished measurement is never dropped."""
    try:
        return retrying(lambda: store.record_measurement(campaign_id, device, arch, **fields), retry_s)
    except (StoreError, KeyboardInterrupt) as e:
        try:
            kept = store.keep_pending({"campaign_id": campaign_id, "device": device,
                                       "arch": {"space": arch.space, "key": arch.key, "columns": arch.columns},
                                       **fields})
        except OSError as keep:  # a full disk takes the store and the folder beside it: say what is lost
            why = "stopped by the user" if isinstance(e, KeyboardInterrupt) else str(e)
            raise StoreError(f"{why}; the measurement of {arch.label} could not be kept aside either "
                             f"({keep.strerror or keep}: {keep.filename or store.pending_dir}), so it is lost: free "
                             "space and rerun the same command, which measures it again (everything stored "
                             "before is kept)") from e
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
    round_no: int = 1  # which visit of a rounds plan (see harness.measure.schedule)
    rounds: int = 1
    gate: GateOutcome | None = None  # how long the device took to get quiet before this model
    permanent: bool = False  # failed because the device can never measure it (errors.NotMeasurable)
    repaired: bool = False  # its cached model file had changed on disk and was exported again
    assessed: tuple[Estimate, str | None] | None = None  # (estimate, why suspect), once judged

    @property
    def ok(self) -> bool:
        return self.failure_kind is None


def push_reference(driver: Driver, cache: ModelCache, space: SearchSpace, profile: Profile,
                   conditions: dict[str, Any]) -> bool:
    """Put the policy's paired reference model on a driver that times one before every run (the local, SSH and
    ADB runners), noting its key in ``conditions``; False when there is none. A campaign and the farm's device
    sessions both call it: the farm measured without it, so its latencies were not normalised as one device's."""
    if profile.policy.reference == "none" or not hasattr(driver, "reference") or hasattr(space, "artifact"):
        return False
    ref_arch = reference_arch(space, profile.policy.reference)
    driver.reference = driver.push(artifact_for(cache, space, ref_arch, profile))  # type: ignore[attr-defined]
    conditions["reference"] = ref_arch.key
    return True


def artifact_for(cache: ModelCache, space: SearchSpace, arch: Arch, profile: Profile) -> Artifact:
    """The model file to measure: a model file as it is, else the export at the profile's workload (cached)."""
    if hasattr(space, "artifact"):
        return space.artifact(arch)  # type: ignore[attr-defined]
    wl = profile.workload
    return cache.get(build_graph(space, arch, profile), profile.runtime.model_format, profile.graph,
                     batch=wl.batch_size, precision=wl.precision, calibration=profile.int8_calibration())


def measure_model(driver: Driver, cache: ModelCache, space: SearchSpace, arch: Arch, profile: Profile,
                  artifact: Artifact | None = None, pushed: dict[str, tuple] | None = None) -> Measured:
    """Export (cached), push and time one model (``artifact``: already at hand; ``pushed``: what earlier
    rounds pushed, reused since pushing is the slow part on phones). Typed failures become a failed Measured;
    a lost connection (or a driver that cannot run at all) is raised: the device, not the model, failed."""
    fmt, wl = profile.runtime.model_format, workload_columns(profile)
    started, t0 = utcnow(), time.perf_counter()
    exported, digest, degenerate = False, None, None
    as_files = hasattr(space, "artifact")  # model files (harness.models.files): measured as they are
    identity: dict[str, Any] = (dict(graph_mode=None, exporter_version=None) if as_files
                                else dict(graph_mode=profile.graph, exporter_version=EXPORTER_VERSION))
    identity["workload"] = wl
    try:
        if pushed is not None and arch.key in pushed:  # a later round: on the device already
            ref, digest, degenerate, identity = pushed[arch.key]
        else:
            ref = driver.push_arch(arch)
            if ref is not None:  # answered by architecture (replay): no model file, no exporter identity
                identity = dict(graph_mode=None, exporter_version=None, workload=wl)
            else:
                if artifact is None:
                    artifact = artifact_for(cache, space, arch, profile)
                exported, digest, degenerate = artifact.exported, artifact.digest, artifact.degenerate
                ref = driver.push(artifact)
            if pushed is not None:
                pushed[arch.key] = (ref, digest, degenerate, identity)
        result = driver.run(ref)
        bad = result_problem(result)
        if bad is not None:  # a plug-in's NaN, text or negative runs: a typed failure, never stored, never a traceback
            raise DriverError(f"the {profile.connection.kind} driver returned {bad}; nothing of it was stored")
    except (ConnectionLost, DriverUnavailable, AccessRefused):  # nothing else can succeed: stop now
        raise
    except (DriverError, ExportError) as e:
        if pushed is not None:
            pushed.pop(arch.key, None)
        kind = e.kind.value if isinstance(e, DriverError) else FailureKind.EXPORT_ERROR.value
        return Measured(arch, fmt, started, time.perf_counter() - t0, digest, exported, failure_kind=kind,
                        failure_message=str(e), degenerate=degenerate, identity=identity,
                        permanent=bool(getattr(e, "permanent", False)))
    except Exception as e:  # a driver's own bug (a plug-in raising RuntimeError): a typed failure, not a traceback
        if pushed is not None:
            pushed.pop(arch.key, None)
        return Measured(arch, fmt, started, time.perf_counter() - t0, digest, exported,
                        failure_kind=FailureKind.DEVICE_ERROR.value, degenerate=degenerate, identity=identity,
                        failure_message=f"unexpected {type(e).__name__} from the {profile.connection.kind} driver: {e}")
    return Measured(arch, fmt, started, time.perf_counter() - t0, digest, exported, result, degenerate=degenerate,
                    identity=identity, repaired=bool(artifact is not None and artifact.repaired))


def visit_stats(r: RunResult, est: Estimate) -> dict[str, float | None]:
    """What the store keeps of a visit: median, mean, spread, min and p90 of the runs the estimate is of (preempted
    runs left out as the median leaves them out, so a CV is not one slow run); an aggregate (benchmark_model's
    statistics) is the device's own figure, kept as it is."""
    return run_stats(est.used) if r.per_run and est.used else r.summary()


def assess(m: Measured, policy: Policy, device: str | None = None) -> tuple[Estimate, str | None]:
    """The successful visit's estimate (preempted runs and outliers flagged) and why it is suspect, if it is
    (``device``: judged with its latest visits when short, see :func:`judge`)."""
    if m.assessed is None:
        assert m.result is not None
        est, suspect = judge(m.result, policy, device)
        if m.gate is not None and m.gate.timed_out:
            suspect = "; ".join(filter(None, [suspect, "device not quiet: " + "; ".join(m.gate.reasons)]))
        m.assessed = (est, suspect)
    return m.assessed


def record_measured(store: Store, retry_s: float, campaign_id: int, device: str, m: Measured,
                    policy: Policy | None = None) -> int | None:
    """One model's outcome and all its runs, in one transaction (see :func:`record`); the measurement's id."""
    policy = policy or Policy()
    fields: dict[str, Any] = dict(model_format=m.model_format, model_digest=m.model_digest, started_at=m.started_at,
                                  duration_s=m.duration_s, degenerate=m.degenerate, round_no=m.round_no,
                                  rounds=m.rounds, **m.identity)
    if m.result is None:
        return record(store, retry_s, campaign_id, device, m.arch, failure_kind=m.failure_kind or
                      FailureKind.DEVICE_ERROR.value, failure_message=m.failure_message, **fields)
    r = m.result
    est, suspect = assess(m, policy, device)
    stats = visit_stats(r, est)
    gated = policy.gate.active and m.gate is not None
    return record(
        store, retry_s, campaign_id, device, m.arch, summary=stats, init_ms=r.init_ms,
        timed_ms=r.timed_ms, warmup_ms=r.warmup_ms, per_run=r.per_run, n_runs=r.n_runs,
        conditions={"before": r.conditions_before, "after": r.conditions_after, "neighbours": r.neighbours,
                    **({"energy": r.energy_facts} if r.energy_facts else {}),
                    **({"gate": m.gate.as_dict()} if gated else {})},  # type: ignore[union-attr]
        energy_mj=r.energy_mj, energy_method=r.energy_method, run_flags=est.flags if r.per_run else None, wait_ms=r.wait_ms,
        extra={"stop_rule": r.stop_rule,
               **({"ci_low_ms": est.ci_low_ms, "ci_high_ms": est.ci_high_ms, "n_used": est.n_used,
                   "n_preempted": est.n_preempted, "n_outliers": est.n_outliers} if r.per_run else {}),
               "suspect": suspect, "gate_wait_s": m.gate.waited_s if gated else None,  # type: ignore[union-attr]
               "ref_median_ms": _ref_median(r, policy)},
        **fields)


ENERGY_GIVE_UP_PASSES = 3  # energy passes without a figure, and none with one, before a campaign stops metering


def energy_counter_dead(passes_without: int, passes_with: int) -> bool:
    """A counter that gave no figure in the first ENERGY_GIVE_UP_PASSES passes and none since is dead here: no more
    passes (each costs up to 2 x energy_seconds + 1 s). Campaigns and the farm's device sessions both ask this."""
    return passes_with == 0 and passes_without >= ENERGY_GIVE_UP_PASSES


def count_outcome(summary: CampaignSummary, m: Measured, position: int, total: int,
                  policy: Policy | None = None) -> ModelOutcome:
    """Add one model to the summary's counts and say what the observer hears."""
    if not m.ok:
        kind = m.failure_kind or FailureKind.DEVICE_ERROR.value
        summary.failed += 1
        summary.failures[kind] = summary.failures.get(kind, 0) + 1
        summary.not_measurable += int(m.permanent)
        summary.last_failure = f"{kind}: {m.failure_message}" if m.failure_message else kind
        return ModelOutcome(m.arch, position, total, False, exported=m.exported, failure_kind=kind,
                            message=m.failure_message, round=m.round_no)
    r = m.result
    assert r is not None
    est, suspect = assess(m, policy or Policy())
    stats = visit_stats(r, est)
    if m.degenerate:  # a set: with rounds, each architecture is visited several times
        summary.degenerate_keys.add(m.arch.key)
    summary.ok += 1
    summary.exported += int(m.exported)
    summary.repaired += int(m.repaired)
    summary.runs += r.n_runs or len(r.timed_ms)  # a statistics-only tool (benchmark_model) reports its count
    summary.watched += int(bool((r.neighbours or {}).get("wall_s")))
    if suspect:
        summary.suspect += 1
    if r.energy_facts is not None and r.energy_mj is None:
        summary.no_energy += 1
        summary.no_energy_why = summary.no_energy_why or str(r.energy_facts.get("why") or "no reading")
    if r.energy_mj is not None:
        summary.energy_mj.append(float(r.energy_mj))
        summary.energy_method = r.energy_method
    rel = est.rel_ci if r.per_run else None  # an aggregate's CI over runs is not known
    cv = stats["std_ms"] / stats["mean_ms"] if stats["std_ms"] is not None and stats["mean_ms"] > 0 else None
    if (r.per_run and rel is None) or (not r.per_run and (r.n_runs or 0) < 2):  # no spread to judge its noise by
        summary.no_ci += 1
    if (rel is not None and rel > UNSTABLE_REL_CI) or (rel is None and cv is not None and cv >= UNSTABLE_CV):
        summary.unstable.append(m.arch.key)
        # the worst visit of the architecture: with rounds a later, steadier visit overwrote it ("CV 16 %" for 35 %)
        summary.unstable_cv[m.arch.key] = max(cv or 0.0, summary.unstable_cv.get(m.arch.key, 0.0))
        summary.labels[m.arch.key] = m.arch.label
    median = est.median_ms if r.per_run else stats["median_ms"]
    ref = _ref_estimate(r, policy or Policy())
    if median is not None and median > 0 and (ref is None or ref.median_ms > 0):
        # with a paired reference the stored latency is median / reference median: drift the pair shares cancels
        value = median / ref.median_ms if ref is not None else median
        summary.visit_medians.setdefault(m.arch.key, []).append(float(value))
        summary.visit_rel_cis.setdefault(m.arch.key, []).append(
            None if rel is None else float(math.hypot(rel, ref.rel_ci or 0.0) if ref is not None else rel))
    return ModelOutcome(m.arch, position, total, True, median, cv, m.exported, round=m.round_no,
                        rel_ci=rel, suspect=suspect)


@dataclass(frozen=True)
class VisitDisagreement:
    """First and second visits of one architecture that differ by more than their own runs say they could."""

    archs: int  # architectures visited at least twice in the campaign
    median_diff: float  # per architecture: |second visit / first - 1|; the median over architectures
    worst_diff: float
    within: float  # the median of the two visits' CIs combined (half-width of their difference, relative)


# a median difference this many times its own CI, and at least MIN_DIFF, is worth a note
DISAGREE_RATIO, DISAGREE_MIN_DIFF, DISAGREE_MIN_ARCHS = 3.0, 0.05, 5


def visit_disagreement(summary: CampaignSummary) -> VisitDisagreement | None:
    """Whether first and second visits disagree beyond their own noise: the device's speed moves between visits,
    which no count of runs inside a visit shows. On an H200 with onnxruntime's CUDA provider (bs1, no reference)
    two visits of NB201 models differed by a median 13 % (worst 61 %) while each visit's own CI was +-1 %
    (benchmarks/gpu_check.py, 50 architectures); 200-run blocks of one session moved as much as new sessions
    did (benchmarks/gpu_session_probe.py): the host launching the kernels, not the session. With a paired
    reference the visits are compared as the store normalises them (median / reference median)."""
    diffs, withins = [], []
    for key, values in summary.visit_medians.items():
        if len(values) < 2:
            continue
        diffs.append(abs(values[1] / values[0] - 1))
        rels = summary.visit_rel_cis.get(key, [])[:2]
        if len(rels) == 2 and None not in rels:
            withins.append(math.hypot(*rels))  # type: ignore[arg-type]
    if len(diffs) < DISAGREE_MIN_ARCHS or not withins:
        return None
    diffs.sort()
    withins.sort()
    median, within = diffs[len(diffs) // 2], withins[len(withins) // 2]
    if median < DISAGREE_MIN_DIFF or median < DISAGREE_RATIO * within:
        return None
    return VisitDisagreement(len(diffs), median, diffs[-1], within)


RANK_AGREEMENT_MIN_ARCHS, RANK_AGREEMENT_WARN = 8, 0.9


def round_agreement(summary: CampaignSummary) -> tuple[float, int] | None:
    """SRCC between the campaign's first and second visits of each architecture visited twice (reference-
    normalised as stored), and over how many: the ranking's own noise floor on this device, None below
    RANK_AGREEMENT_MIN_ARCHS. On an H200 at batch 1 it was -0.34 over 30 NB201 architectures (adaptive policy,
    paired reference): the architectures differed by less than the device moved, and nothing else said so."""
    pairs = [(v[0], v[1]) for v in summary.visit_medians.values() if len(v) >= 2]
    if len(pairs) < RANK_AGREEMENT_MIN_ARCHS:
        return None
    from scipy.stats import spearmanr

    first, second = zip(*pairs)
    r = spearmanr(first, second).statistic
    return (float(r), len(pairs)) if r == r else None  # NaN: every visit alike in one of the rounds


def changed_setup(store: Store, profile: Profile, space: str, keys: Iterable[str] | None = None) -> tuple[list[str], int]:
    """How the setups behind the device's stored latencies of ``keys`` (architecture keys; all when None) differ
    from ``profile`` (runtime, machine), as ``field: old -> new``, and how many of those architectures were
    measured with a setup that differs; ``([], 0)`` when all were measured as the profile now says."""
    now = profile.as_dict()
    wanted = None if keys is None else set(keys)
    changes: set[str] = set()
    archs: set[str] = set()
    for text, measured in store.measured_profiles(profile.name, space, workload_columns(profile)).items():
        hit = [k for k in measured if wanted is None or k in wanted]
        differ = measurement_changes(json.loads(text), now) if hit else []
        if differ:
            changes.update(differ)
            archs.update(hit)
    return sorted(changes), len(archs)


def run_campaign(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch], *,
                 cache: ModelCache, command: str = "", remeasure: bool = False, remeasure_stale: bool = False,
                 observer: Observer | None = None, max_consecutive_failures: int = 5,
                 driver: Driver | None = None, write_retry_s: float = 600.0, lease_wait: float | None = 0.0,
                 on_lease_wait: Callable[[Holder], None] | None = None, rounds: int | None = None,
                 clock: Clock | None = None) -> CampaignSummary:
    """Measure what of ``archs`` the store lacks on the profile's device, holding the device's lease
    (:class:`~harness.devices.lease.DeviceLease`; ``lease_wait`` seconds to wait for another campaign,
    None: as long as it takes). ``rounds`` overrides the profile's; ``clock`` is the lab simulator's."""
    if rounds is not None:
        profile = profile.model_copy(update={"policy": profile.policy.model_copy(update={"rounds": rounds})})
    with ExitStack() as held:
        for lease in leases_for(profile, lock_dir_for(store.path), command=command, wait=lease_wait,
                                on_wait=on_lease_wait):
            held.enter_context(lease)
        return _run(store, profile, space, archs, cache=cache, command=command, remeasure=remeasure,
                    remeasure_stale=remeasure_stale,
                    observer=observer, max_consecutive_failures=max_consecutive_failures, driver=driver,
                    write_retry_s=write_retry_s, clock=clock or RealClock())


def _run(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch], *, cache: ModelCache,
         command: str, remeasure: bool, remeasure_stale: bool, observer: Observer | None, max_consecutive_failures: int,
         driver: Driver | None, write_retry_s: float, clock: Clock) -> CampaignSummary:
    observer = observer or _Silent()
    pol = profile.policy
    todo = plan(store, profile, space, archs, remeasure, remeasure_stale)
    pending = {a.key for a, _ in todo}
    summary = CampaignSummary(profile.measured_name, space.name, len(archs), sum(a.key not in pending for a in archs),
                              graph_mode=profile.graph, rounds=pol.rounds,
                              cuda_graph_setting=profile.runtime.cuda_graph_setting)
    if not remeasure and pending:  # measured before under another rounds plan (a farm's one visit): said, not silent
        wl = workload_columns(profile)
        any_plan = {k for k, _ in store.measured_rounds(profile.name, space.name, None, profile.graph, wl)}
        this_plan = {k for k, _ in store.measured_rounds(profile.name, space.name, pol.rounds, profile.graph, wl)}
        summary.other_plan = len(pending & (any_plan - this_plan))  # a resumed campaign's own visits are not that
    if not (remeasure or remeasure_stale):
        summary.stale = len(stale_keys(store, profile, space, archs))
        if summary.skipped:  # some are kept as measured: were they measured with another setup?
            summary.profile_changes, summary.changed_archs = changed_setup(
                store, profile, space.name, [a.key for a in archs if a.key not in pending])
    if not todo:
        return summary
    # bad workload: one clear error before anything starts
    check_workload(profile, space, list({a.key: a for a, _ in todo}.values()))
    t_start = time.perf_counter()
    interrupts.check()
    driver = driver or make_driver(profile)
    # judged on what was asked, not on what is left: a finished campaign's rerun has only the table's gaps left;
    # before the campaign's row: a refusal left a failed campaign behind each time
    refused = driver.cannot_answer(space.name, list(archs))
    if refused:  # a device that can say up front it has nothing for this list (a replay table of another space)
        raise HarnessError(refused)
    status, message, consecutive = "failed", "", 0
    cid: int | None = None
    try:
        # inside the try that closes the campaign: a Ctrl-C landing between the row's commit and the next line
        # (the real-SIGINT test once left a campaign "running" under load) is closed like any other
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
        driver = driver or make_driver(profile)
        summary.conditions = prepared(driver)
        summary.caveat = precision_caveat(profile, summary.conditions)
        neighbour_window_reset(profile.name)  # pool this campaign's visits only (another's, hours old, is no window)
        if pol.adaptive is not None and not type(driver).stops_adaptively:
            summary.fixed_runs = pol.timed_runs  # the device's tool times a fixed count: the CLI says so
        elif pol.adaptive is not None and "timed_runs" in pol.model_fields_set:
            summary.unused_timed_runs = pol.timed_runs  # adaptive stopping decides: the CLI says timed_runs is unused
        if profile.runtime.name == "trtexec":  # accepted by the schema, read by harness's runner only
            if "warmup_runs" in pol.model_fields_set:
                summary.unused.append("policy.warmup_runs (trtexec warms up for runtime.options.warmup_ms)")
            if "threads" in profile.runtime.model_fields_set:
                summary.unused.append("runtime.threads (TensorRT runs on the GPU)")
        retrying(lambda: store.set_campaign_conditions(cid, summary.conditions), write_retry_s)
        observer.started(summary, len(todo))
        watch = (_Sentinels(store, cid, profile, space, archs, cache, driver, clock, write_retry_s) if pol.sentinels
                 else None)
        if watch:
            watch.start()
        refs: dict[str, tuple] = {}  # arch key -> (device ref, digest, degenerate, identity)
        metered: set[str] = set()  # architectures whose energy this campaign has (policy.energy_visits: first)
        if push_reference(driver, cache, space, profile, summary.conditions):
            retrying(lambda: store.set_campaign_conditions(cid, summary.conditions), write_retry_s)
        starting = getattr(observer, "model_starting", None)  # optional: "exporting/timing X" on a progress line
        for i, (arch, rnd) in enumerate(todo):
            gate = wait_until_quiet(pol.gate, driver.state, clock, getattr(observer, "waiting", None))
            if gate.waited_s or gate.timed_out:
                summary.gate_wait_s += gate.waited_s
                if gate.timed_out:
                    summary.gate_timeouts += 1
                    retrying(lambda: store.record_event(cid, "gate_timeout", {"arch": arch.key, **gate.as_dict()}),
                             write_retry_s)
                    if pol.gate.on_timeout == "stop":
                        raise DeviceNotQuiet(f"{profile.name} did not get under the gate limits within "
                                             f"{pol.gate.max_wait_s:g} s: {'; '.join(gate.reasons)}")
            interrupts.check()  # a Ctrl-C that some library swallowed still stops the campaign here
            if starting is not None:
                starting(arch)
            # the energy pass (energy_seconds per visit) on an architecture's first visit here, or until one gave a
            # figure; a counter that did not move in the first passes is dead here: no more passes (each costs seconds)
            summary.energy_given_up = energy_counter_dead(summary.no_energy, len(summary.energy_mj))
            driver.meter_energy = not summary.energy_given_up and (pol.energy_visits == "all" or arch.key not in metered)
            m = measure_model(driver, cache, space, arch, profile, pushed=refs if pol.rounds > 1 else None)
            if m.ok and m.result is not None and m.result.energy_mj is not None:
                metered.add(arch.key)
            m.round_no, m.rounds, m.gate = rnd, pol.rounds, gate
            mid = record_measured(store, write_retry_s, cid, profile.name, m, pol)
            observer.model_done(count_outcome(summary, m, i + 1, len(todo), pol), summary)
            if m.ok:
                consecutive = 0
                if watch:
                    watch.after_model(mid, i + 1)
            elif not m.permanent:  # a row the replay table lacks says nothing about the device's health
                consecutive += 1
                if consecutive >= max_consecutive_failures:
                    raise CampaignAborted(f"{consecutive} {'visits' if pol.rounds > 1 else 'models'} failed in a row "
                                          f"on {profile.name}; "
                                          f"last: {m.failure_kind}: {m.failure_message}")
            if pol.cooldown_seconds and i + 1 < len(todo):
                clock.sleep(pol.cooldown_seconds)
        status = "finished"
        if summary.failed > summary.not_measurable and not summary.ok:  # was listed as finished by `campaigns`
            status = "failed"
            message = (f"every one of {summary.failed} visit(s) failed: "
                       + ", ".join(f"{k}={v}" for k, v in sorted(summary.failures.items()))
                       + (f"; last: {summary.last_failure}" if summary.last_failure else ""))
        if watch:
            summary.paused_s = watch.paused_s
            # a sentinel out of band marks the visits since its last good check: count those too
            summary.suspect = max(summary.suspect, store.suspect_visits(cid))
    except KeyboardInterrupt:
        status, message = "interrupted", "stopped by the user"
        raise
    except HarnessError as e:
        message = str(e)
        raise
    except Exception as e:  # e.g. an OSError from a cache folder: `harness campaigns` says why it failed
        message = f"{type(e).__name__}: {e}"
        raise
    finally:
        summary.status = status
        summary.elapsed_s = time.perf_counter() - t_start
        try:
            if cid is not None:
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
