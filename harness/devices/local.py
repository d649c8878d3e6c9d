"""Local driver: onnxruntime and LiteRT on this machine, in a worker process.

The worker (``runner.py --serve``) is a separate interpreter so that the runtime's threads and memory
are isolated from the campaign, TensorFlow is never imported on the timing path, a model that hangs
can be killed at the policy's timeout, and a crashing runtime is a device error rather than a crash
of the campaign. The worker lives for the whole campaign, so per-model overhead is one JSON round trip.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from threading import Thread
from typing import Any

from harness.devices import conditions
from harness.devices.driver import CheckReport, Driver, RunResult
from harness.errors import DeviceError, MeasurementTimeout, ParseError
from harness.models.cache import Artifact

RUNNER = Path(__file__).with_name("runner.py")
_ERRORS = {"parse_error": ParseError, "device_error": DeviceError}


class LocalDriver(Driver):
    kind = "local"

    def __init__(self, profile):
        super().__init__(profile)
        self._proc: subprocess.Popen | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self.hello: dict[str, Any] = {}

    # --- worker process -----------------------------------------------------------------
    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-P", str(RUNNER), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        Thread(target=self._drain, args=(self._proc,), daemon=True).start()
        self.hello = self._call({"op": "hello"}, timeout=60)

    def _drain(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            self._stderr.append(line.rstrip())

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _call(self, req: dict, timeout: float) -> dict:
        if self._proc is None or self._proc.poll() is not None:
            if req.get("op") != "hello":
                self._start()
            else:
                raise DeviceError("local worker is not running")
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            self._kill()
            raise DeviceError("local worker exited", detail="\n".join(self._stderr)) from None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self._kill()
                raise MeasurementTimeout(f"no answer from the local worker within {timeout:g} s; worker killed")
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            self._proc = None
            tail = "\n".join(list(self._stderr)[-10:])
            raise DeviceError(f"local worker died (exit code {code})", detail=tail)
        try:
            resp = json.loads(line)
        except json.JSONDecodeError:
            raise ParseError(f"local worker sent an unreadable line: {line[:200]!r}") from None
        if not resp.get("ok"):
            raise _ERRORS.get(resp.get("kind"), DeviceError)(resp.get("message", "unknown worker error"))
        return resp

    # --- Driver interface ---------------------------------------------------------------
    def _runtime_version(self) -> str | None:
        return self.hello.get("versions", {}).get(self.profile.runtime.name)

    def check(self) -> CheckReport:
        rt = self.profile.runtime.name
        try:
            self.prepare()
        except (DeviceError, MeasurementTimeout) as e:
            return CheckReport(False, True, rt, message=f"worker failed to start: {e}")
        finally:
            self.cleanup()
        version = self._runtime_version()
        ok = version is not None
        return CheckReport(ok, True, rt, version, details={"versions": self.hello.get("versions")},
                           message="" if ok else f"runtime {rt} is not installed in {sys.executable}")

    def prepare(self) -> dict[str, Any]:
        if self._proc is None:
            self._start()
        rt = self.profile.runtime
        return {
            **conditions.static_conditions(),
            "runtime": rt.name,
            "runtime_version": self._runtime_version(),
            "threads": rt.threads,
            "delegate": rt.delegate if rt.name == "tflite" else None,
            "execution_provider": rt.execution_provider if rt.name == "onnxruntime" else None,
            "worker_python": self.hello.get("versions", {}).get("python"),
        }

    def push(self, artifact: Artifact) -> str:
        return str(artifact.path.resolve())

    def run(self, model_ref: str) -> RunResult:
        rt, pol = self.profile.runtime, self.profile.policy
        req = {"op": "run", "model": model_ref, "runtime": rt.name, "threads": rt.threads,
               "delegate": rt.delegate, "execution_provider": rt.execution_provider,
               "options": rt.options, "warmup_runs": pol.warmup_runs, "timed_runs": pol.timed_runs,
               "min_seconds": pol.min_seconds, "seed": pol.input_seed}
        before = conditions.dynamic_conditions()
        started = time.perf_counter()
        resp = self._call(req, timeout=pol.timeout_seconds)
        after = conditions.dynamic_conditions()
        after["wall_s"] = time.perf_counter() - started
        return RunResult(timed_ms=resp["timed_ms"], warmup_ms=resp["warmup_ms"], init_ms=resp["init_ms"],
                         conditions_before=before, conditions_after=after)

    def cleanup(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
