"""A lab device: a deterministic fake device with known physics, for testing measurement *method*.

It implements the Driver interface on a virtual clock (nothing sleeps), with

* known true latencies (explicit per model, else derived from the model file's size),
* a thermal model: continuous load heats it; after ``throttle_after_s`` seconds of load it runs
  ``throttle`` slower (reached over ``ramp_s``), and idle time cools it at ``cool_ratio`` x the heating rate,
* per-model run-to-run noise (``noise`` default, ``noisy`` per model), injected outlier runs,
* a background hog: within ``[start, end)`` of virtual time a share of runs is preempted (they take a
  scheduler slice longer and report it as off-CPU time, as the real runner does) and loadavg is high,

and applies the same adaptive stopping rule as the real runner (``harness.devices.runner``). Tests use
it to check that gating waits, sentinels fire on the right window, rounds cancel drift and adaptive
repeats stop early on quiet models and late on noisy ones. (A minimal sleep-based device for farm
throughput lives elsewhere; this one is about physics.)
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from harness.devices.driver import CheckReport, Driver, RunResult
from harness.devices.profile import Profile
from harness.measure.policy import adaptive_stop
from harness.models.cache import Artifact


class VirtualClock:
    """Time that passes only when the device runs or someone sleeps; sleeping lets the device cool."""

    def __init__(self) -> None:
        self.t = 0.0
        self.device: LabDevice | None = None

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.device is not None:
            self.device.idle(seconds)
        self.t += seconds


@dataclass
class Physics:
    noise: float = 0.01  # relative sd of a run
    noisy: dict[str, float] = field(default_factory=dict)  # model digest -> relative sd
    throttle: float = 0.0  # relative slowdown when hot
    throttle_after_s: float = 60.0
    ramp_s: float = 0.0
    cool_ratio: float = 1.0
    outlier_rate: float = 0.0
    outlier_factor: float = 5.0
    hog: tuple[float, float] | None = None  # virtual-time window with a CPU hog
    hog_share: float = 0.5  # share of runs preempted during the hog
    slice_ms: float = 4.0
    ambient_c: float = 30.0
    heat_c_per_s: float = 0.5
    init_ms: float = 5.0
    # relative sd of a whole visit: each session runs at its own speed (onnxruntime's CUDA provider on an H200:
    # two visits of a model differed by a median 13 % while each visit's runs agreed within 1 %)
    session_sd: float = 0.0


class LabDevice(Driver):
    kind = "lab"
    stops_adaptively = True

    def __init__(self, profile: Profile, physics: Physics | None = None, *, true_ms: dict[str, float] | None = None,
                 clock: VirtualClock | None = None, seed: int = 0):
        super().__init__(profile)
        self.physics = physics or Physics()
        self.true_ms = dict(true_ms or {})
        self.clock = clock or VirtualClock()
        self.clock.device = self
        self.load_s = 0.0  # seconds of accumulated load (heat)
        self.seed = seed
        self.visits: dict[str, int] = {}
        self.runs_done = 0
        self.reference: str | None = None  # set by the campaign (policy.reference): timed right before each run

    # --- physics ------------------------------------------------------------------------
    def latency_of(self, ref: str) -> float:
        return self.true_ms[ref]

    def slowdown(self) -> float:
        p = self.physics
        over = self.load_s - p.throttle_after_s
        if p.throttle <= 0 or over < 0:
            return 1.0
        return 1.0 + p.throttle * (1.0 if p.ramp_s <= 0 else min(1.0, over / p.ramp_s))

    def temperature_c(self) -> float:
        return self.physics.ambient_c + self.physics.heat_c_per_s * self.load_s

    def hog_active(self) -> bool:
        h = self.physics.hog
        return h is not None and h[0] <= self.clock.t < h[1]

    def idle(self, seconds: float) -> None:
        self.load_s = max(0.0, self.load_s - seconds * self.physics.cool_ratio)

    def _busy(self, ms: float) -> None:
        self.clock.t += ms / 1e3
        self.load_s += ms / 1e3

    # --- Driver interface ---------------------------------------------------------------
    def check(self) -> CheckReport:
        return CheckReport(True, True, self.profile.runtime.name, "lab", details={"device": "lab device"})

    def prepare(self) -> dict[str, Any]:
        return {"runtime": self.profile.runtime.name, "runtime_version": "lab", "threads": self.profile.runtime.threads,
                "cpu_model": "lab device (virtual clock)"}

    def push(self, artifact: Artifact) -> str:
        if artifact.digest not in self.true_ms:  # no explicit latency: derive one from the file
            self.true_ms[artifact.digest] = 0.2 + artifact.path.stat().st_size / 20_000
        return artifact.digest

    def state(self) -> dict[str, Any]:
        return {"temperatures_c": {"lab": self.temperature_c()}, "loadavg_1m": 2.0 if self.hog_active() else 0.1}

    def run(self, model_ref: str) -> RunResult:
        p, pol = self.physics, self.profile.policy
        n_visit = self.visits[model_ref] = self.visits.get(model_ref, 0) + 1
        rng = random.Random(int(hashlib.sha256(f"{self.seed}:{model_ref}:{n_visit}".encode()).hexdigest()[:12], 16))
        sd = p.noisy.get(model_ref, p.noise)
        session = max(0.05, 1 + rng.gauss(0, p.session_sd)) if p.session_sd else 1.0
        before = self.state()
        self._busy(p.init_ms)

        def one() -> tuple[float, float]:
            ms = self.latency_of(model_ref) * session * self.slowdown() * max(0.05, 1 + rng.gauss(0, sd))
            if p.outlier_rate and rng.random() < p.outlier_rate:
                ms *= p.outlier_factor
            wait = 0.0
            if self.hog_active() and rng.random() < p.hog_share:
                wait = p.slice_ms
                ms += wait
            self._busy(ms)
            self.runs_done += 1
            return ms, wait

        ref_timed: list[float] = []

        def ref_one() -> None:  # the paired reference shares the visit's speed (the session factor, heat)
            ms = self.latency_of(self.reference) * session * self.slowdown() * max(0.05, 1 + rng.gauss(0, p.noise))
            self._busy(ms)
            ref_timed.append(ms)

        warm = [one()[0] for _ in range(pol.warmup_runs)]
        timed, waits, clean = [], [], []
        ad = pol.adaptive
        t0, stop = self.clock.t, "fixed"
        limit = ad.max_runs if ad else pol.timed_runs
        while len(timed) < limit or (ad is None and self.clock.t - t0 < pol.min_seconds):
            if self.reference is not None:
                ref_one()
            ms, wait = one()
            timed.append(ms)
            waits.append(wait)
            if wait <= 0.02 * ms:
                clean.append(ms)
            if ad is not None:
                rule = adaptive_stop(clean, self.clock.t - t0, ad)
                if rule:
                    stop = rule
                    break
        else:
            if ad is not None:
                stop = "max_runs"
        return RunResult(timed_ms=timed, warmup_ms=warm, init_ms=p.init_ms, conditions_before=before,
                         conditions_after=self.state(), wait_ms=waits, stop_rule=stop,
                         reference_ms=ref_timed or None, reference_wait_ms=[0.0] * len(ref_timed) or None,
                         neighbours={"wall_s": (self.clock.t - t0) or 1e-9, "cpus": 1,
                                     "others_cpu_s": 0.9 * (self.clock.t - t0) if self.hog_active() else 0.0,
                                     "steal_s": 0.0})

    def cleanup(self) -> None:
        pass
