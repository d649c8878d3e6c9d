"""A campaign: measure a list of architectures on one device, resumably.

Resume is by content, not by position: an architecture counts as done when the store holds a
successful measurement of it on that device, so rerunning the same command after Ctrl-C, a crash,
SIGKILL or a dropped device measures only what is missing. Each model's result is committed before
the next model starts. Failures are recorded with their kind and retried on the next run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.devices.driver import Driver, RunResult, make_driver
from harness.devices.profile import Profile
from harness.errors import ConnectionLost, DriverError, ExportError, FailureKind, HarnessError
from harness.models.cache import ModelCache
from harness.models.spaces import Arch, SearchSpace
from harness.results.store import Store, utcnow

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
    failures: dict[str, int] = field(default_factory=dict)
    status: str = "nothing to do"
    elapsed_s: float = 0.0
    conditions: dict[str, Any] = field(default_factory=dict)

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

    @property
    def ok(self) -> bool:
        return self.failure_kind is None


def measure_model(driver: Driver, cache: ModelCache, space: SearchSpace, arch: Arch, fmt: str) -> Measured:
    """Export (cached), push and time one model. Typed failures become a failed Measured; a lost
    connection is raised, because the device, not the model, failed."""
    started, t0 = utcnow(), time.perf_counter()
    exported, digest = False, None
    try:
        artifact = cache.get(space.build(arch), fmt)
        exported, digest = artifact.exported, artifact.digest
        result = driver.run(driver.push(artifact))
    except ConnectionLost:
        raise
    except (DriverError, ExportError) as e:
        kind = e.kind.value if isinstance(e, DriverError) else FailureKind.EXPORT_ERROR.value
        return Measured(arch, fmt, started, time.perf_counter() - t0, digest, exported,
                        failure_kind=kind, failure_message=str(e))
    return Measured(arch, fmt, started, time.perf_counter() - t0, digest, exported, result)


def record_measured(store: Store, campaign_id: int, device: str, m: Measured) -> None:
    """One model's outcome and all its runs, in one transaction."""
    if m.result is None:
        store.record_measurement(campaign_id, device, m.arch, model_format=m.model_format,
                                 model_digest=m.model_digest, started_at=m.started_at, duration_s=m.duration_s,
                                 failure_kind=m.failure_kind or FailureKind.DEVICE_ERROR.value,
                                 failure_message=m.failure_message)
        return
    r = m.result
    store.record_measurement(
        campaign_id, device, m.arch, model_format=m.model_format, model_digest=m.model_digest,
        started_at=m.started_at, duration_s=m.duration_s, summary=r.summary(), init_ms=r.init_ms,
        timed_ms=r.timed_ms, warmup_ms=r.warmup_ms,
        conditions={"before": r.conditions_before, "after": r.conditions_after})


def count_outcome(summary: CampaignSummary, m: Measured, position: int, total: int) -> ModelOutcome:
    """Add one model to the summary's counts and say what the observer hears."""
    if not m.ok:
        kind = m.failure_kind or FailureKind.DEVICE_ERROR.value
        summary.failed += 1
        summary.failures[kind] = summary.failures.get(kind, 0) + 1
        return ModelOutcome(m.arch, position, total, False, exported=m.exported, failure_kind=kind,
                            message=m.failure_message)
    stats = m.result.summary()  # type: ignore[union-attr]
    summary.ok += 1
    summary.exported += int(m.exported)
    cv = stats["std_ms"] / stats["mean_ms"] if stats["mean_ms"] > 0 else 0.0
    if cv >= UNSTABLE_CV:
        summary.unstable.append(m.arch.key)
    return ModelOutcome(m.arch, position, total, True, stats["median_ms"], cv, m.exported)


def plan(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch],
         remeasure: bool = False) -> list[Arch]:
    """The architectures still to measure, in the requested order."""
    if remeasure:
        return list(archs)
    done = store.measured_keys(profile.name, space.name)
    return [a for a in archs if a.key not in done]


def run_campaign(store: Store, profile: Profile, space: SearchSpace, archs: Sequence[Arch], *,
                 cache: ModelCache, command: str = "", remeasure: bool = False,
                 observer: Observer | None = None, max_consecutive_failures: int = 5,
                 driver: Driver | None = None) -> CampaignSummary:
    observer = observer or _Silent()
    todo = plan(store, profile, space, archs, remeasure)
    summary = CampaignSummary(profile.name, space.name, len(archs), len(archs) - len(todo))
    if not todo:
        return summary
    t_start = time.perf_counter()
    fmt = profile.runtime.model_format
    summary.campaign_id = cid = store.start_campaign(profile.name, space.name, profile.as_dict(),
                                                     profile.digest(), len(todo), command)
    driver = driver or make_driver(profile)
    status, message, consecutive = "failed", "", 0
    try:
        summary.conditions = driver.prepare()
        store.set_campaign_conditions(cid, summary.conditions)
        observer.started(summary, len(todo))
        for i, arch in enumerate(todo):
            m = measure_model(driver, cache, space, arch, fmt)
            record_measured(store, cid, profile.name, m)
            outcome = count_outcome(summary, m, i + 1, len(todo))
            observer.model_done(outcome, summary)
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
        driver.cleanup()
        summary.status = status
        summary.elapsed_s = time.perf_counter() - t_start
        store.finish_campaign(cid, status, message)
    return summary
