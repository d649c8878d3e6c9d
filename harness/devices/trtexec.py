"""TensorRT through ``trtexec``, on this machine or over SSH (Jetsons, GPU servers).

Per model: the ONNX file is pushed, an engine is built once per (model, device, TensorRT version,
precision, batch) and kept in an engine cache on the device (``<workdir>/engines``; locally
:func:`engine_root`), then timed with ``--exportTimes`` so every query's
time comes back, not trtexec's summary. The timed value is trtexec's GPU compute time per query
(``computeMs``) with inputs and outputs staying on the device (``--noDataTransfers``); with
``policy.include_transfers`` it is the host latency ``latencyMs`` (H2D + compute + D2H).
TensorRT's version comes from trtexec itself, CUDA's from the toolkit's version file, the GPU from
nvidia-smi (or the Jetson's device tree) and from trtexec's device information.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from harness.devices.driver import CheckReport, Driver, RunResult
from harness.devices.shell import DeviceShell, LocalShell, SSHShell
from harness.devices.ssh import SSHDriver
from harness.devices.trtexec_output import conditions, parse_output, parse_times
from harness.errors import ConnectionLost, DeviceError, DriverError, DriverUnavailable, ParseError
from harness.models.cache import Artifact

PRECISION_FLAGS = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8"]}  # int8: QDQ scales in the ONNX file
CUDA_VERSION_FILES = ("/usr/local/cuda/version.json", "/usr/local/cuda/version.txt")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:48] or "gpu"


class TrtexecSession:
    """trtexec on one device, through a DeviceShell."""

    def __init__(self, profile, shell: DeviceShell, engine_dir: str):
        self.profile, self.shell, self.engine_dir = profile, shell, engine_dir
        opts = profile.runtime.options
        self.binary = profile.runtime.binary or "trtexec"
        self.device_index = int(opts.get("device", 0))
        self.warmup_ms = float(opts.get("warmup_ms", 200))
        self.cuda_graph = bool(opts.get("use_cuda_graph", False))
        self.facts: dict[str, Any] = {}

    def _trtexec(self, args: list[str], timeout: float, what: str):
        try:
            done = self.shell.run([self.binary, *args], timeout=timeout)
        except FileNotFoundError:
            raise DriverUnavailable(
                f"{self.profile.name}: runtime.binary: trtexec not found on the device as {self.binary!r}. Install "
                "TensorRT, or set runtime.binary to its path (JetPack: /usr/src/tensorrt/bin/trtexec)") from None
        if done.code == 126 and not done.stdout.strip():  # the shell's "found, but cannot execute" (it said "not found")
            raise DriverUnavailable(
                f"{self.profile.name}: runtime.binary: {self.binary!r} cannot be run (a folder, or a file without "
                "execute permission: chmod +x it); set runtime.binary to the trtexec program itself")
        out = parse_output(done.stdout)
        if "TensorRT.trtexec" not in done.stdout and not out.errors:  # no "&&&& RUNNING TensorRT.trtexec" line at all
            raise DriverUnavailable(
                f"{self.profile.name}: runtime.binary: {self.binary!r} did not answer as trtexec does (no "
                f"'&&&& PASSED TensorRT.trtexec' line; exit code {done.code}): is it TensorRT's trtexec?")
        if not out.passed:
            errors = "; ".join(out.errors[-3:]) or done.stderr.strip()[-300:] or f"exit code {done.code}"
            raise DeviceError(f"{self.profile.name}: trtexec {what} failed: {errors}",
                              detail=done.stdout[-2000:])
        return out

    def _probe_gpu(self) -> dict[str, Any]:
        try:
            done = self.shell.run(["nvidia-smi", "--query-gpu=name,uuid,driver_version", "--format=csv,noheader",
                                   f"--id={self.device_index}"], timeout=30)
            if done.code == 0 and done.stdout.strip():
                name, gpu_uuid, driver = [p.strip() for p in done.stdout.strip().splitlines()[0].split(",")][:3]
                return {"gpu_name": name, "gpu_uuid": gpu_uuid, "nvidia_driver": driver}
        except (FileNotFoundError, DriverError, ValueError):
            pass
        try:
            model = self.shell.read_text("/proc/device-tree/model").rstrip("\x00").strip()
            return {"gpu_name": model} if model else {}
        except (OSError, DriverError):
            return {}

    def _jetson(self) -> dict[str, Any] | None:
        """A Jetson's power mode and clocks (hwprobe's reading, through this shell: no Python on the device)."""
        from harness.devices import hwprobe

        if isinstance(self.shell, LocalShell):
            return hwprobe.jetson_conditions(os.environ.get("HARNESS_SYSFS_ROOT", "/"))

        def read(path: str) -> str | None:
            try:
                return self.shell.read_text(path).strip().rstrip("\x00")
            except ConnectionLost:
                raise
            except (OSError, DriverError):
                return None

        return hwprobe.jetson_conditions(read)

    def _cuda_version(self) -> str | None:
        for path in CUDA_VERSION_FILES:
            try:
                text = self.shell.read_text(path)
            except (OSError, DriverError):
                continue
            if path.endswith(".json"):
                try:
                    return str(json.loads(text)["cuda"]["version"])
                except (ValueError, KeyError, TypeError):
                    continue
            m = re.search(r"CUDA Version (\S+)", text)
            if m:
                return m.group(1)
        return None

    def prepare(self) -> dict[str, Any]:
        out = self._trtexec(["--help"], timeout=60, what="--help")
        self.facts = {"runtime": "trtexec", "runtime_version": out.tensorrt_version, "tensorrt": out.tensorrt_version,
                      "tensorrt_tag": out.version_tag, "cuda": self._cuda_version(), "trtexec": self.binary,
                      "gpu_index": self.device_index, **self._probe_gpu()}
        if out.device.get("gpu_name") and not self.facts.get("gpu_name"):  # harness's stand-in names itself here
            self.facts["gpu_name"] = out.device["gpu_name"]
        jetson = self._jetson()
        if jetson:  # power mode and clocks decide a Jetson's latencies: recorded, and `devices check` warns
            self.facts["jetson"] = jetson
        self.shell.makedirs(self.engine_dir)
        return dict(self.facts)

    def engine_path(self, model_ref: str) -> str:
        w = self.profile.workload
        device = self.facts.get("gpu_uuid") or f"{self.facts.get('gpu_name') or 'gpu'}-{self.device_index}"
        digest = Path(model_ref).stem
        name = (f"{digest[:24]}-{_slug(device)}-trt{self.facts.get('tensorrt_tag') or 'unknown'}-{w.precision}"
                f"-bs{w.batch_size}.engine")
        return self.shell.join(self.engine_dir, name)

    def build(self, model_ref: str, engine: str) -> float:
        """Build the engine (into a temp name, renamed when complete); returns the build seconds."""
        part = f"{engine}.{uuid.uuid4().hex[:8]}.part"
        t0 = time.perf_counter()
        try:
            self._trtexec([f"--onnx={model_ref}", f"--saveEngine={part}", f"--device={self.device_index}",
                           *PRECISION_FLAGS[self.profile.workload.precision], "--skipInference"],
                          timeout=max(self.profile.policy.timeout_seconds, 600), what="engine build")
            self.shell.rename(part, engine)
        finally:
            self.shell.remove(part)
        return time.perf_counter() - t0

    def time(self, engine: str) -> tuple[Any, list[dict], list[dict]]:
        pol = self.profile.policy
        times = f"{engine}.{uuid.uuid4().hex[:8]}.times.json"
        args = [f"--loadEngine={engine}", f"--device={self.device_index}", f"--warmUp={self.warmup_ms:g}",
                f"--iterations={pol.timed_runs}", f"--duration={pol.min_seconds:g}", "--avgRuns=1",
                f"--exportTimes={times}"]
        if not pol.include_transfers:
            args.append("--noDataTransfers")
        if self.cuda_graph:
            args.append("--useCudaGraph")
        try:
            out = self._trtexec(args, timeout=pol.timeout_seconds, what="timing")
            warm, timed = parse_times(self.shell.read_text(times), self.warmup_ms, out.timed_queries)
        finally:
            self.shell.remove(times)
        return out, warm, timed

    def run(self, model_ref: str) -> RunResult:
        engine = self.engine_path(model_ref)
        built_s = None
        if not self.shell.exists(engine):
            built_s = self.build(model_ref, engine)
        try:
            out, warm, timed = self.time(engine)
        except DeviceError as e:
            if built_s is not None or "Serialization" not in str(e) and "compatible" not in str(e):
                raise
            self.shell.remove(engine)  # a stale or corrupt cached engine: build it again, once
            built_s = self.build(model_ref, engine)
            out, warm, timed = self.time(engine)
        key = "latencyMs" if self.profile.policy.include_transfers else "computeMs"
        info = {"engine": engine, "engine_built_s": built_s, "timed": key, "warmup_queries": len(warm),
                **conditions(out)}
        return RunResult(timed_ms=[q[key] for q in timed], warmup_ms=[q[key] for q in kept_warmup(warm)],
                         init_ms=built_s * 1e3 if built_s is not None else None,
                         conditions_before={"trtexec": info})


WARMUP_KEPT = 50  # warm-up queries stored at each end: the warm-up is by time, 200 ms of 10 us queries = 20,000


def kept_warmup(warm: list[dict]) -> list[dict]:
    """The first and last ``WARMUP_KEPT`` warm-up queries (cold start, and where it settled): trtexec warms up
    for a time, and storing every one of thousands of sub-millisecond queries per model bloats the store."""
    return warm if len(warm) <= 2 * WARMUP_KEPT else warm[:WARMUP_KEPT] + warm[-WARMUP_KEPT:]


class _TrtexecDriverMixin:
    stops_adaptively = False  # trtexec times --iterations (policy.timed_runs) for at least --duration

    def stability(self) -> dict[str, Any]:
        return {}  # no Python runner beside trtexec to sample other processes: `devices check` says so

    def state(self) -> dict[str, Any]:
        return {}  # gating records "not observable"
    session: TrtexecSession | None

    def check(self) -> CheckReport:
        try:
            facts = self.prepare()
        except DriverError as e:
            # a refused or dropped SSH connection reached nothing (it said reachable=True); a missing trtexec on a
            # device that answered did reach it
            reached = not isinstance(e, ConnectionLost) and (not isinstance(e, DriverUnavailable)
                                                              or "trtexec not found" in str(e))
            return CheckReport(False, None if e.before_contact else reached, "trtexec", message=str(e))
        finally:
            self.cleanup()
        from harness.devices.runner_client import condition_warnings

        stand_in = "stand-in" in str(facts.get("gpu_name") or "")
        warnings = condition_warnings(self.profile, {"jetson": facts.get("jetson"), **self._nvml()})
        if stand_in:
            warnings.append("this trtexec is harness's stand-in (`harness sim trtexec`): it times the models with "
                            "onnxruntime on the CPU, for rehearsals; its numbers are no GPU measurements")
        return CheckReport(True, True, "trtexec", facts.get("tensorrt"),
                           details={k: facts.get(k) for k in ("cuda", "gpu_name", "nvidia_driver", "trtexec")},
                           warnings=warnings)

    def _nvml(self) -> dict[str, Any]:
        return {}  # NVML is read on this machine only (LocalTrtexecDriver)


def engine_root() -> Path:
    """Where this machine's engines are cached: $HARNESS_ENGINE_CACHE, else ``engines/`` in $HARNESS_CACHE (the
    model cache a user moved: engines went to ./models/engines of whatever folder the command ran in, and were
    built again from another), else models/engines."""
    from harness.paths import WORKSPACE

    if os.environ.get("HARNESS_ENGINE_CACHE"):
        return Path(os.environ["HARNESS_ENGINE_CACHE"]).expanduser()
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"]).expanduser() / "engines"
    return WORKSPACE.engines


class LocalTrtexecDriver(_TrtexecDriverMixin, Driver):
    """trtexec on this machine; engines cached under :func:`engine_root`."""

    kind = "local"

    def __init__(self, profile):
        super().__init__(profile)
        self.session = None
        self.engine_root = str(engine_root().resolve())

    def prepare(self) -> dict[str, Any]:
        self.session = TrtexecSession(self.profile, LocalShell(), self.engine_root)
        return self.session.prepare()

    def push(self, artifact: Artifact) -> str:
        return str(artifact.path.resolve())

    def _gpu(self) -> dict[str, Any]:
        """NVML's view of the GPU (clocks, temperature, power, locks) on this machine, when there is one."""
        from harness.devices import hwprobe

        nv = hwprobe.load_nvml()
        return {"nvml": hwprobe.nvml_dynamic(nv, self.session.device_index)} if nv is not None else {}

    def _nvml(self) -> dict[str, Any]:
        """For `devices check`: NVML's static and dynamic view (clock locks, persistence), when there is one."""
        from harness.devices import hwprobe

        nv = hwprobe.load_nvml()
        index = int(self.profile.runtime.options.get("device", 0)) if self.profile.runtime.options else 0
        try:
            return {"nvml": {**hwprobe.nvml_static(nv, index), **hwprobe.nvml_dynamic(nv, index)}} if nv else {}
        except Exception as e:  # no such GPU index
            return {"nvml": {"error": f"{type(e).__name__}: {e}"}}

    def run(self, model_ref: str) -> RunResult:
        if self.session is None:
            self.prepare()
        before = self._gpu()
        result = self.session.run(model_ref)
        result.conditions_before.update(before)
        result.conditions_after.update(self._gpu())
        return result

    def cleanup(self) -> None:
        self.session = None


class SSHTrtexecDriver(_TrtexecDriverMixin, SSHDriver):
    """trtexec over SSH: the SSH driver's connection, host-key checks, pushes and reconnects, no Python runner."""

    def __init__(self, profile):
        super().__init__(profile)
        self.session = None

    def _start(self) -> None:  # connect only: trtexec needs no runner on the device
        self._open_session()
        shell = SSHShell(self.client, self.sftp, self.profile.name)
        self.session = TrtexecSession(self.profile, shell, shell.join(self.conn.workdir, "engines"))
        self.hello = {"conditions": self.session.prepare()}

    def prepare(self) -> dict[str, Any]:
        def op() -> dict[str, Any]:
            if self.client is None or self.session is None:
                self._start()
            return dict(self.hello["conditions"])

        return self._with_reconnect("connect", op)

    def run(self, model_ref: str) -> RunResult:
        def op() -> RunResult:
            if self.client is None or self.session is None:
                self._start()
            return self.session.run(model_ref)

        return self._with_reconnect("run", op)

    def cleanup(self) -> None:
        self.session = None
        super().cleanup()


__all__ = ["TrtexecSession", "LocalTrtexecDriver", "SSHTrtexecDriver", "ParseError"]
