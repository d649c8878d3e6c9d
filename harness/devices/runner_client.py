"""Drivers that talk to ``runner.py --serve`` over a line channel (a local pipe or an SSH channel).

The runner is a long-lived worker on the device: per model the driver sends one JSON request and
reads one JSON line back, so per-model overhead is one round trip, not an interpreter start plus a
runtime import. Subclasses only say how to open the channel and how to push a model.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any, Protocol

from harness.devices import protocol
from harness.devices.driver import CheckReport, Driver, RunResult
from harness.errors import ConnectionLost, DeviceError, DriverError, MeasurementTimeout, ParseError

_ERRORS = {"parse_error": ParseError, "device_error": DeviceError}


class LineChannel(Protocol):
    """A bidirectional text channel to a running ``runner.py --serve``."""

    def send(self, line: str) -> None: ...

    def receive(self, timeout: float) -> str | None:
        """One line; None on timeout; '' when the other side has gone."""

    def close(self, force: bool = False) -> None:
        """Stop the runner: politely (end of input) or, with ``force``, at once."""

    def diagnostics(self) -> str:
        """Recent stderr of the worker, for error messages."""


class RunnerDriver(Driver):
    """The Driver interface on top of a runner worker; subclasses open the channel and push models."""

    lost_error: type[DeviceError] = DeviceError  # what a dead channel means for this transport

    def __init__(self, profile):
        super().__init__(profile)
        self._channel: LineChannel | None = None
        self.hello: dict[str, Any] = {}
        self.reference: str | None = None  # device path of the paired reference model (see campaign)

    @abstractmethod
    def _open_channel(self) -> LineChannel:
        """Start the runner on the device and return a channel to it."""

    def _start(self) -> None:
        self._channel = self._open_channel()
        self.hello = self._call({"op": "hello"}, timeout=120, answer=protocol.HelloAnswer).model_dump()

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
            raise self.lost_error(f"{self.profile.name}: the runner went away", detail=detail)
        resp = protocol.decode(line, self.profile.name)
        if not resp["ok"]:
            error = protocol.ErrorAnswer.model_validate(resp)
            raise _ERRORS.get(error.kind, DeviceError)(error.message)
        return protocol.validated(answer, resp, line, self.profile.name) if answer is not None else resp

    def runtime_version(self) -> str | None:
        return self.hello.get("versions", {}).get(self.profile.runtime.name)

    # --- Driver interface ---------------------------------------------------------------
    def check(self) -> CheckReport:
        rt = self.profile.runtime.name
        try:
            self.prepare()
        except DriverError as e:
            return CheckReport(False, not isinstance(e, ConnectionLost), rt, message=str(e))
        finally:
            self.cleanup()
        version = self.runtime_version()
        ok = version is not None
        return CheckReport(ok, True, rt, version,
                           details={"versions": self.hello.get("versions"),
                                    "device": self.hello.get("conditions", {}).get("device_model")
                                    or self.hello.get("conditions", {}).get("cpu_model")},
                           message="" if ok else f"runtime {rt} is not installed for the runner's Python")

    def prepare(self) -> dict[str, Any]:
        if self._channel is None:
            self._start()
        rt = self.profile.runtime
        return {
            **self.hello.get("conditions", {}),
            "runtime": rt.name,
            "runtime_version": self.runtime_version(),
            "threads": rt.threads,
            "delegate": rt.delegate if rt.name == "tflite" else None,
            "execution_provider": rt.execution_provider if rt.name == "onnxruntime" else None,
            "runner_python": self.hello.get("versions", {}).get("python"),
        }

    def run(self, model_ref: str) -> RunResult:
        rt, pol = self.profile.runtime, self.profile.policy
        req = {"op": "run", "model": model_ref, "runtime": rt.name, "threads": rt.threads,
               "delegate": rt.delegate, "execution_provider": rt.execution_provider,
               "options": rt.options, "warmup_runs": pol.warmup_runs, "timed_runs": pol.timed_runs,
               "min_seconds": pol.min_seconds, "seed": pol.input_seed, "conditions": True,
               "adaptive": pol.adaptive.model_dump() if pol.adaptive else None,
               "reference": self.reference}
        resp = self._call(req, timeout=pol.timeout_seconds, answer=protocol.RunAnswer)
        return RunResult(timed_ms=resp.timed_ms, warmup_ms=resp.warmup_ms, init_ms=resp.init_ms,
                         conditions_before=resp.conditions_before, conditions_after=resp.conditions_after,
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
