"""Drivers that talk to ``runner.py --serve`` over a line channel (a local pipe or an SSH channel).

The runner is a long-lived worker on the device: per model the driver sends one JSON request and
reads one JSON line back, so per-model overhead is one round trip, not an interpreter start plus a
runtime import. Subclasses only say how to open the channel and how to push a model.
"""

from __future__ import annotations

import re
import json
from abc import abstractmethod
from typing import Any, Protocol

from harness.devices import protocol
from harness.devices.driver import CheckReport, Driver, RunResult
from harness.errors import (ConnectionLost, DeviceError, DriverError, DriverUnavailable, MeasurementTimeout,
                            ParseError)

_ERRORS = {"parse_error": ParseError, "device_error": DeviceError, "unavailable": DriverUnavailable}


class LineChannel(Protocol):
    """A bidirectional text channel to a running ``runner.py --serve``."""

    def send(self, line: str) -> None: ...

    def receive(self, timeout: float) -> str | None:
        """One line; None on timeout; '' when the other side has gone."""

    def close(self, force: bool = False) -> None:
        """Stop the runner: politely (end of input) or, with ``force``, at once."""

    def diagnostics(self) -> str:
        """Recent stderr of the worker, for error messages."""


def condition_warnings(profile, gpu: dict[str, Any]) -> list[str]:
    """What `devices check` warns about: unlocked GPU clocks, a Jetson not at full clocks or in another
    power mode than the profile's ``policy.power_mode``."""
    out = []
    nv = gpu.get("nvml") or {}
    if nv.get("clocks_locked") is False:
        out.append(f"GPU clocks are not locked on {nv.get('gpu_name') or 'the GPU'} (SM {nv.get('sm_clock_mhz')} MHz "
                   f"of {nv.get('max_sm_clock_mhz')}): boost makes latencies drift; lock them with "
                   "`sudo nvidia-smi -lgc <MHz>` (and -lmc) for stable rankings")
    if nv.get("persistence_mode") is False:
        out.append("GPU persistence mode is off: the driver may unload between models (`sudo nvidia-smi -pm 1`)")
    jet = gpu.get("jetson") or {}
    if jet.get("jetson_clocks") is False:
        out.append("jetson_clocks is not on: CPU/GPU/EMC clocks scale with load (`sudo jetson_clocks`)")
    want = profile.policy.power_mode
    if want is not None and jet and str(want) not in (str(jet.get("power_mode")), str(jet.get("power_mode_id"))):
        out.append(f"power mode is {jet.get('power_mode')} (id {jet.get('power_mode_id')}), the profile's "
                   f"policy.power_mode is {want}: `sudo nvpmodel -m <id>` or change the profile")
    return out


PYTHON_LESS_DELEGATES = ("gpu", "nnapi", "hexagon")  # benchmark_model only (harness.devices.runner refuses them)


class RunnerDriver(Driver):
    """The Driver interface on top of a runner worker; subclasses open the channel and push models."""

    lost_error: type[DeviceError] = DeviceError  # what a dead channel means for this transport
    stops_adaptively = True  # harness's runner applies the adaptive rule run by run

    probe_path: str | None = None  # hwprobe.py on the device (None: beside the runner)

    def __init__(self, profile):
        super().__init__(profile)
        self._channel: LineChannel | None = None
        self.hello: dict[str, Any] = {}
        self.reference: str | None = None  # device path of the paired reference model (see campaign)

    def gpu_index(self) -> int:
        return int(self.profile.runtime.provider_options.get("device_id", 0))

    @abstractmethod
    def _open_channel(self) -> LineChannel:
        """Start the runner on the device and return a channel to it."""

    def _start(self) -> None:
        self._channel = self._open_channel()
        self.hello = self._call({"op": "hello", "probe": self.probe_path}, timeout=120,
                                answer=protocol.HelloAnswer).model_dump()

    def _drop(self, force: bool = True) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close(force)

    def _call(self, req: dict, timeout: float, answer: type | None = None) -> Any:
        """One request, one answer; the answer is validated against ``answer`` (a protocol model)."""
        if self._channel is None:
            self._start()
        channel = self._channel
        assert channel is not None
        try:
            channel.send(json.dumps(req) + "\n")
            line = channel.receive(timeout)
        except OSError as e:
            self._drop()
            raise self.lost_error(f"{self.profile.name}: lost the runner: {e}") from None
        if line is None:
            self._drop()
            raise MeasurementTimeout(f"no answer from {self.profile.name} within {timeout:g} s; runner stopped")
        if not line:
            detail = channel.diagnostics()
            self._drop()
            last = [s.strip() for s in detail.splitlines() if s.strip()][-3:]
            said = f": {' / '.join(last)}" if last else ""
            if req.get("op") == "hello":
                # it ended on the device with an exit status: the interpreter or the runtime, a setting that
                # reconnecting would only repeat (it retried twice with backoff); -1 or none: the connection went
                ended = re.search(r"\(exit code \d+\)", detail)
                raise (DriverUnavailable if ended else self.lost_error)(
                    f"{self.profile.name}: the runner did not start{said}{self.start_hint()}", detail=detail)
            raise self.lost_error(f"{self.profile.name}: the runner went away{said}", detail=detail)
        resp = protocol.decode(line, self.profile.name)
        if not resp["ok"]:
            error = protocol.ErrorAnswer.model_validate(resp)
            raise _ERRORS.get(error.kind, DeviceError)(error.message)
        return protocol.validated(answer, resp, line, self.profile.name) if answer is not None else resp

    def start_hint(self) -> str:
        """What to check when the runner does not start (the SSH driver names connection.python)."""
        return ""

    def runtime_version(self) -> str | None:
        return self.hello.get("versions", {}).get(self.profile.runtime.name)

    # --- Driver interface ---------------------------------------------------------------
    def check(self) -> CheckReport:
        rt = self.profile.runtime.name
        try:
            self.prepare()
            self.check_energy()
        except DriverError as e:
            versions = self.hello.get("versions") or {}  # the runner answered before the check failed: say what it has
            return CheckReport(False, None if e.before_contact else not isinstance(e, ConnectionLost), rt,
                               versions.get(rt), details={"versions": versions} if versions else {},
                               message=str(e))
        finally:
            self.cleanup()
        version = self.runtime_version()
        ok = version is not None
        gpu = self.hello.get("gpu") or {}
        return CheckReport(ok, True, rt, version, warnings=condition_warnings(self.profile, gpu),
                           details={"versions": self.hello.get("versions"),
                                    "device": self.hello.get("conditions", {}).get("device_model")
                                    or self.hello.get("conditions", {}).get("cpu_model"),
                                    **({"gpu": gpu} if gpu else {})},
                           message="" if ok else f"runtime {rt} is not installed for the runner's Python")

    def check_provider(self) -> None:
        """The profile's onnxruntime provider must be installed on the device: fail before any model."""
        rt, versions = self.profile.runtime, self.hello.get("versions", {})
        available = self.hello.get("onnxruntime_providers")
        if rt.name != "onnxruntime" or available is None or rt.execution_provider in available:
            return
        raise DriverUnavailable(
            f"{self.profile.name}: runtime.execution_provider {rt.execution_provider} is not available in "
            f"onnxruntime {versions.get('onnxruntime')} on the device (it has {', '.join(available)}). Install "
            "the build that has it (onnxruntime-gpu for CUDA/TensorRT) for the runner's Python, or set "
            "runtime.execution_provider to one of those.")

    def check_delegate(self) -> None:
        """LiteRT's GPU, NNAPI and Hexagon delegates cannot be loaded from Python: refuse before any model (every
        model would fail with device_error after `devices check` said ok)."""
        rt = self.profile.runtime
        if rt.name == "tflite" and rt.delegate in PYTHON_LESS_DELEGATES:
            raise DriverUnavailable(
                f"{self.profile.name}: runtime.delegate {rt.delegate} cannot be loaded by LiteRT's Python API, which "
                "harness's runner uses (it has cpu, xnnpack and reference). Time it with TFLite's benchmark_model: "
                "an ADB profile, or connection.benchmark_model on an SSH profile (README: 'ARM boards with "
                "benchmark_model').")

    def check_energy(self) -> None:
        """policy.energy must be meterable on the device (a missing RAPL was refused only when a campaign began)."""
        pol = self.profile.policy
        if pol.energy == "off":
            return
        rt = self.profile.runtime
        self._call({"op": "energy", "energy": pol.energy, "gpu_index": self.gpu_index(), "probe": self.probe_path,
                    "runtime": rt.name, "delegate": rt.delegate, "execution_provider": rt.execution_provider},
                   timeout=60)

    def prepare(self) -> dict[str, Any]:
        self.check_delegate()
        if self._channel is None:
            self._start()
        self.check_provider()
        rt = self.profile.runtime
        return {
            **self.hello.get("conditions", {}),
            "runtime": rt.name,
            "runtime_version": self.runtime_version(),
            "threads": rt.threads,
            "delegate": rt.delegate if rt.name == "tflite" else None,
            "execution_provider": rt.execution_provider if rt.name == "onnxruntime" else None,
            "onnxruntime_build": self.hello.get("versions", {}).get("onnxruntime_build"),
            "runner_python": self.hello.get("versions", {}).get("python"),
        }

    def run(self, model_ref: str) -> RunResult:
        rt, pol = self.profile.runtime, self.profile.policy
        req = {"op": "run", "model": model_ref, "runtime": rt.name, "threads": rt.threads,
               "delegate": rt.delegate, "execution_provider": rt.execution_provider,
               "provider_options": rt.provider_options, "precision": self.profile.workload.precision,
               "include_transfers": pol.include_transfers, "options": rt.options, "warmup_runs": pol.warmup_runs,
               "timed_runs": pol.timed_runs, "min_seconds": pol.min_seconds, "seed": pol.input_seed,
               "conditions": True, "energy": pol.energy if self.meter_energy else "off", "energy_seconds": pol.energy_seconds,
               "gpu_index": self.gpu_index(), "probe": self.probe_path, "adaptive": pol.adaptive.model_dump() if pol.adaptive else None, "reference": self.reference}
        resp = self._call(req, timeout=pol.timeout_seconds, answer=protocol.RunAnswer)
        extra = resp.model_extra or {}
        energy = extra.get("energy_mj")
        return RunResult(timed_ms=resp.timed_ms, warmup_ms=resp.warmup_ms, init_ms=resp.init_ms,
                         conditions_before={**resp.conditions_before, "session": extra.get("session")},
                         conditions_after=resp.conditions_after,
                         energy_mj=float(energy) if isinstance(energy, (int, float)) and energy >= 0 else None,
                         energy_method=extra.get("energy_method") if isinstance(energy, (int, float)) else None,
                         energy_facts=extra.get("energy_facts") if isinstance(extra.get("energy_facts"), dict) else None,
                         wait_ms=resp.wait_ms, stop_rule=resp.stop_rule, neighbours=resp.neighbours,
                         reference_ms=resp.reference_ms, reference_wait_ms=resp.reference_wait_ms)

    def stability(self) -> dict[str, Any]:
        facts = {k: v for k, v in self._call({"op": "stability"}, timeout=30).items() if k != "ok"}
        return {"kind": self.kind, **facts}

    def state(self) -> dict[str, Any]:
        """The device's dynamic conditions now (temperature, frequency, load), for gating."""
        return {k: v for k, v in self._call({"op": "state"}, timeout=30).items() if k != "ok"}

    def cleanup(self) -> None:
        self._drop(force=False)

    def abort(self) -> None:
        self._drop(force=True)  # kill the runner now; then whatever else the transport holds
        self.cleanup()
