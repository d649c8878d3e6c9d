"""A stand-in device that really sleeps: each model's latency is a seeded, deterministic function of
the model's content, and every reported run is slept for real.

It exists so that farms can be tried and their scheduling measured without hardware: on a 2-core machine
eight sleeping devices overlap perfectly, so lost throughput is the farm's own overhead. It never
pretends to be a real latency: its conditions say ``runtime: sleep``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import time
from typing import Any

from harness.devices.driver import CheckReport, Driver, RunResult
from harness.errors import ConnectionLost, DeviceError, MeasurementTimeout
from harness.models.cache import Artifact


def latency_ms(model_digest: str, mean_ms: float, spread: float, seed: int) -> float:
    """The stand-in latency of a model: uniform in mean * (1 +- spread), fixed by (digest, seed)."""
    h = hashlib.sha256(f"{seed}:{model_digest}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64  # in [0, 1)
    return mean_ms * (1.0 + spread * (2.0 * u - 1.0))


class SleepDriver(Driver):
    kind = "sleep"

    def __init__(self, profile):
        super().__init__(profile)
        self._prepared = False
        self._models = 0

    def check(self) -> CheckReport:
        return CheckReport(True, True, "sleep", "1", details={"host": socket.gethostname()})

    def prepare(self) -> dict[str, Any]:
        self._prepared = True
        c = self.profile.connection
        return {"runtime": "sleep", "runtime_version": "1", "threads": 1, "machine": platform.machine(),
                "host": socket.gethostname(), "pid": os.getpid(),
                "sleep": {"latency_ms": c.latency_ms, "spread": c.spread, "seed": c.seed}}

    def push(self, artifact: Artifact) -> str:
        return artifact.digest

    def run(self, model_ref: str) -> RunResult:
        if not self._prepared:
            raise DeviceError("the sleep device was not prepared")
        c, pol = self.profile.connection, self.profile.policy
        if c.drop_after is not None and self._models >= c.drop_after:
            raise ConnectionLost(f"{self.profile.name}: the device went away after {self._models} models "
                                 "(drop_after fault)")
        self._models += 1
        ms = latency_ms(model_ref, c.latency_ms, c.spread, c.seed)
        if ms * (pol.warmup_runs + pol.timed_runs) > pol.timeout_seconds * 1000:
            time.sleep(pol.timeout_seconds)
            raise MeasurementTimeout(f"{model_ref}: {pol.warmup_runs + pol.timed_runs} runs of {ms:.1f} ms "
                                     f"exceed the {pol.timeout_seconds} s limit")
        runs: list[float] = []
        for _ in range(pol.warmup_runs + pol.timed_runs):
            t0 = time.perf_counter()
            time.sleep(ms / 1000)
            runs.append((time.perf_counter() - t0) * 1000)
        # report the nominal latency (deterministic); the sleeps above make the wall time real
        return RunResult(timed_ms=[ms] * pol.timed_runs, warmup_ms=[ms] * pol.warmup_runs, init_ms=0.0)

    def cleanup(self) -> None:
        self._prepared = False
