"""A stand-in device that really sleeps: each model's latency is a seeded, deterministic function of the
model's content, and every reported run is slept for real.

It exists so that farms can be tried and their scheduling measured without hardware: on a 2-core machine
eight sleeping devices overlap perfectly, so lost throughput is the farm's own overhead. It keeps the
driver contract (the conformance suite runs on it): every run comes back, min_seconds and timeouts are
obeyed, a file that is not a model is a device error. Its conditions say ``stand_in: sleep``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness.devices.driver import CheckReport, Driver, RunResult
from harness.devices.profile import Connection
from harness.errors import ConnectionLost, DeviceError, MeasurementTimeout
from harness.measure.policy import adaptive_stop
from harness.models.cache import Artifact

# how a runtime recognises its file: TFLite's FlatBuffer identifier; ONNX's protobuf starts with ir_version
MAGIC = {"tflite": lambda head: head[4:8] == b"TFL3", "onnx": lambda head: head[:1] == b"\x08"}


class SleepConnection(Connection):
    """A stand-in device that really sleeps a seeded, deterministic latency per model.

    For trying farms and measuring scheduling overhead without hardware; never for real latencies.
    """

    kind: Literal["sleep"]
    latency_ms: float = Field(50.0, gt=0, le=60_000, description="mean latency of one run")
    spread: float = Field(0.5, ge=0, lt=1, description="latencies span latency_ms * (1 +- spread)")
    seed: int = Field(0, description="another seed, other (still deterministic) latencies")
    drop_after: int | None = Field(None, ge=0, description="fault: the device drops (unplugged) after N models")


def latency_ms(model_digest: str, mean_ms: float, spread: float, seed: int) -> float:
    """The stand-in latency of a model: uniform in mean * (1 +- spread), fixed by (digest, seed)."""
    h = hashlib.sha256(f"{seed}:{model_digest}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64  # in [0, 1)
    return mean_ms * (1.0 + spread * (2.0 * u - 1.0))


class SleepDriver(Driver):
    kind = "sleep"
    stops_adaptively = True

    def __init__(self, profile):
        super().__init__(profile)
        self._prepared = False
        self._models = 0
        self._digests: dict[str, str] = {}  # pushed path -> content digest

    def check(self) -> CheckReport:
        return CheckReport(True, True, self.profile.runtime.name, "sleep-1",
                           details={"host": socket.gethostname(), "stand_in": "sleep"})

    def prepare(self) -> dict[str, Any]:
        self._prepared = True
        c, rt = self.profile.connection, self.profile.runtime
        return {"runtime": rt.name, "runtime_version": "sleep-1", "threads": rt.threads, "stand_in": "sleep",
                "machine": platform.machine(), "host": socket.gethostname(), "pid": os.getpid(),
                "sleep": {"latency_ms": c.latency_ms, "spread": c.spread, "seed": c.seed}}

    def push(self, artifact: Artifact) -> str:
        ref = str(artifact.path)
        self._digests[ref] = artifact.digest
        return ref

    def _load(self, ref: str) -> str:
        """The model's digest, after checking the file is there and looks like a model of the format."""
        path = Path(ref)
        try:
            with path.open("rb") as f:
                head = f.read(8)
        except OSError as e:
            raise DeviceError(f"cannot read model {path.name}: {e.strerror}") from None
        check = MAGIC.get(self.profile.runtime.model_format)
        if check is not None and not check(head):
            raise DeviceError(f"{path.name} is not a {self.profile.runtime.model_format} model")
        return self._digests.get(ref) or hashlib.sha256(path.read_bytes()).hexdigest()[:32]

    def run(self, model_ref: str) -> RunResult:
        if not self._prepared:
            raise DeviceError("the sleep device was not prepared")
        c, pol = self.profile.connection, self.profile.policy
        if c.drop_after is not None and self._models >= c.drop_after:
            raise ConnectionLost(f"{self.profile.name}: the device went away after {self._models} models "
                                 "(drop_after fault)")
        self._models += 1
        ms = latency_ms(self._load(model_ref), c.latency_ms, c.spread, c.seed)
        deadline = time.monotonic() + pol.timeout_seconds
        before = self._conditions()

        def sleep_once() -> None:
            if time.monotonic() + ms / 1000 > deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                raise MeasurementTimeout(f"{Path(model_ref).name}: runs of {ms:.1f} ms exceed the "
                                         f"{pol.timeout_seconds:g} s limit")
            time.sleep(ms / 1000)

        for _ in range(pol.warmup_runs):
            sleep_once()
        ad = pol.adaptive
        timed, t0, stop = 0, time.monotonic(), "fixed" if ad is None else "max_runs"
        while timed < (pol.timed_runs if ad is None else ad.max_runs) or \
                (ad is None and time.monotonic() - t0 < pol.min_seconds):
            sleep_once()
            timed += 1
            rule = adaptive_stop([ms] * timed, time.monotonic() - t0, ad) if ad is not None else None
            if rule:
                stop = rule
                break
        # the nominal latency is reported (deterministic); the sleeps above make the wall time real
        return RunResult(timed_ms=[ms] * timed, warmup_ms=[ms] * pol.warmup_runs, init_ms=0.0,
                         conditions_before=before, conditions_after=self._conditions(), stop_rule=stop)

    @staticmethod
    def _conditions() -> dict[str, Any]:
        """A sleeping device has no clock or sensors: the time, and None for what it cannot observe."""
        return {"time_unix": time.time(), "temperatures_c": None, "cpu_freq_mhz": None}

    def cleanup(self) -> None:
        self._prepared = False
