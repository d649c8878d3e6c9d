"""Times one model with onnxruntime or LiteRT and returns every run.

This file is deliberately standalone (standard library + numpy + the runtime, no harness imports):
the local driver runs it as a worker process (``--serve``: JSON lines on stdin/stdout) and remote
drivers copy it to the device and run it once per model (``--request JSON``). It never imports
TensorFlow when LiteRT (``ai_edge_litert``) or ``tflite_runtime`` is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

PROTOCOL = 1

# --- conditions of the machine the runner is on (pyperf's metadata idea) ------------------------
# Static facts are read once per campaign; dynamic ones (frequency, temperature, load) before and
# after every model, because thermal drift is what flips rankings. Each probe is best-effort: a
# missing file means the fact is absent, not an error.

_CPU = Path("/sys/devices/system/cpu")
_THERMAL = Path("/sys/class/thermal")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_model() -> str | None:
    text = _read(Path("/proc/cpuinfo")) or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Model"):
            return value.strip()
    return platform.processor() or None


def governors() -> dict[str, str]:
    out = {}
    for d in sorted(_CPU.glob("cpu[0-9]*")):
        g = _read(d / "cpufreq" / "scaling_governor")
        if g:
            out[d.name] = g
    return out


def frequencies_mhz() -> dict[str, float]:
    out = {}
    for d in sorted(_CPU.glob("cpu[0-9]*")):
        f = _read(d / "cpufreq" / "scaling_cur_freq")
        if f and f.isdigit():
            out[d.name] = int(f) / 1000.0
    if not out:  # virtual machines often hide cpufreq; /proc/cpuinfo still has a nominal MHz
        mhz = [line.split(":")[1].strip() for line in (_read(Path("/proc/cpuinfo")) or "").splitlines()
               if line.startswith("cpu MHz")]
        out = {f"cpu{i}": float(v) for i, v in enumerate(mhz)}
    return out


def max_frequencies_mhz() -> dict[str, float]:
    out = {}
    for d in sorted(_CPU.glob("cpu[0-9]*")):
        f = _read(d / "cpufreq" / "cpuinfo_max_freq")
        if f and f.isdigit():
            out[d.name] = int(f) / 1000.0
    return out


def zone_names(zones: list[tuple[str, str | None]]) -> dict[str, str]:
    """(zone folder, its type) -> the zone's name in conditions: its type, with ``#2``, ``#3``... when types
    repeat (boards and phones have several ``cpu-thermal`` or ``tsens`` zones), the folder when untyped.
    Shared by every driver (the ADB driver imports it), so one zone has one name everywhere."""
    seen: dict[str, int] = {}
    out = {}
    for folder, kind in zones:
        t = kind or folder
        seen[t] = seen.get(t, 0) + 1
        out[folder] = t if seen[t] == 1 else f"{t}#{seen[t]}"
    return out


def temperatures_c() -> dict[str, float]:
    folders = sorted(_THERMAL.glob("thermal_zone*"), key=lambda z: (len(z.name), z.name))  # zone2 before zone10
    names = zone_names([(z.name, _read(z / "type")) for z in folders])
    out = {}
    for z in folders:
        t = _read(z / "temp")
        if t and t.lstrip("-").isdigit():
            out[names[z.name]] = int(t) / 1000.0
    return out


def device_model() -> str | None:
    """Board name on Jetsons and Raspberry Pis (device tree), else None."""
    model = _read(Path("/proc/device-tree/model"))
    return model.rstrip("\x00") if model else None


def static_conditions() -> dict[str, Any]:
    return {
        "device_model": device_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "governors": governors() or None,
    }


def dynamic_conditions() -> dict[str, Any]:
    out: dict[str, Any] = {"time_unix": round(time.time(), 3), "cpu_freq_mhz": frequencies_mhz() or None,
                           "temperatures_c": temperatures_c() or None}
    try:
        out["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        out["loadavg_1m"] = None
    return out



def onnx_providers() -> list[str] | None:
    """onnxruntime's installed execution providers (None without onnxruntime)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def runtime_versions() -> dict:
    out = {"python": sys.version.split()[0]}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
        build = getattr(onnxruntime, "get_build_info", lambda: "")()
        if build:
            out["onnxruntime_build"] = str(build)  # names the CUDA/cuDNN versions of GPU builds
    except ImportError:
        pass
    try:
        import ai_edge_litert

        out["tflite"] = f"ai-edge-litert {getattr(ai_edge_litert, '__version__', 'unknown')}"
    except ImportError:
        try:
            import tflite_runtime

            out["tflite"] = f"tflite-runtime {tflite_runtime.__version__}"
        except ImportError:
            pass
    return out


def _tflite_interpreter(path: str, threads: int, delegate: str):
    try:
        from ai_edge_litert import interpreter as tfl
    except ImportError:
        try:
            from tflite_runtime import interpreter as tfl  # type: ignore
        except ImportError:
            import tensorflow.lite as tfl  # type: ignore  # last resort on devices with full TF only
    if delegate in ("gpu", "nnapi", "hexagon"):
        raise RuntimeError(f"delegate {delegate!r} is not available from Python; use a benchmark_model profile")
    kwargs = {"model_path": path, "num_threads": threads}
    if delegate == "reference":
        kwargs["experimental_op_resolver_type"] = tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return tfl.Interpreter(**kwargs)


def _inputs(specs, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape, dtype in specs]


# providers whose tensors live in GPU memory (same table as harness.devices.profile.GPU_PROVIDERS)
GPU_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}


class ProviderMismatch(RuntimeError):
    """onnxruntime would run the model on another provider than the one asked for (it falls back silently)."""


def _provider_options(provider: str, req: dict) -> dict:
    opts = {str(k): str(v) for k, v in (req.get("provider_options") or {}).items()}
    precision = req.get("precision", "fp32")
    if provider == "TensorrtExecutionProvider":  # TensorRT builds at the asked precision, caching engines
        opts.setdefault("trt_fp16_enable", "True" if precision == "fp16" else "False")
        opts.setdefault("trt_int8_enable", "True" if precision == "int8" else "False")
        opts.setdefault("trt_engine_cache_enable", "True")
        opts.setdefault("trt_engine_cache_path", os.path.abspath("trt_engine_cache"))
    return opts


# how a provider's missing or mismatched shared libraries read in onnxruntime's errors (dlopen, its own loader)
LIBRARY_MISSING = ("cannot open shared object", "could not be loaded", "failed to load library", "error loading",
                   "libcudnn", "libcublas", "libcudart", "libnvinfer", "undefined symbol")

_PRELOADED: list[bool] = []


def preload_gpu_libraries(ort) -> None:
    """onnxruntime-gpu installed with pip finds the pip-installed CUDA/cuDNN libraries only when asked
    (``preload_dlls``, onnxruntime >= 1.21); without it the provider cannot start and the session would fall
    back to the CPU (refused below). Once per worker; its messages go to stderr (fd 1 is the protocol's)."""
    if _PRELOADED or not hasattr(ort, "preload_dlls"):
        return
    _PRELOADED.append(True)
    try:
        ort.preload_dlls()
    except Exception:  # a system CUDA install needs none of this; the provider check below still judges
        pass


def onnx_session(req: dict):
    """An InferenceSession on exactly the asked provider; ProviderMismatch if onnxruntime would use another."""
    import onnxruntime as ort

    opts = dict(req.get("options") or {})
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(req.get("threads", 1))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = str(opts.pop("graph_optimization_level", "all"))
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    for k, v in opts.items():
        so.add_session_config_entry(str(k), str(v))
    provider = req.get("execution_provider") or "CPUExecutionProvider"
    available = ort.get_available_providers()
    if provider not in available:
        raise ProviderMismatch(f"runtime.execution_provider {provider} is not available in onnxruntime "
                               f"{ort.__version__} here (available: {', '.join(available)})")
    if provider in GPU_PROVIDERS:
        preload_gpu_libraries(ort)
    fallback_key = "session.disable_cpu_ep_fallback"
    if provider != "CPUExecutionProvider" and fallback_key not in opts:
        so.add_session_config_entry(fallback_key, "1")  # a node placed on the CPU fails the session
    providers = [(provider, _provider_options(provider, req))]
    try:
        sess = ort.InferenceSession(req["model"], sess_options=so, providers=providers)
    except Exception as e:
        if "fallback to CPU EP has been explicitly disabled" in str(e):
            raise ProviderMismatch(
                f"runtime.execution_provider {provider} cannot run every node of the model; onnxruntime would "
                f"run some on the CPU. Set runtime.options {fallback_key}: 0 to allow that (the latency is then "
                "a mix of devices)") from None
        if e.__cause__ is not None and provider != "CPUExecutionProvider":
            # onnxruntime's Python retries a provider that failed on its fallback list and raises the retry's
            # error from the first: on an H200 without TensorRT the user saw only "Conflicting session
            # configuration: explicitly added the CPU EP ..., but also disabled fallback to the CPU EP"
            first = " ".join(str(e.__cause__).split())[:400]
            if any(p in first.lower() for p in LIBRARY_MISSING):  # the device cannot: stop the campaign
                raise ProviderMismatch(
                    f"runtime.execution_provider {provider} could not start here ({first}); harness times only "
                    "the provider asked for, so onnxruntime's retry on others was refused. Check that the "
                    "provider's libraries are on the runner's library path: CUDA and cuDNN (pip install "
                    "onnxruntime-gpu[cuda,cudnn])" + (", and TensorRT's libnvinfer of the version this "
                    "onnxruntime-gpu was built for" if provider == "TensorrtExecutionProvider" else "")) from None
            # anything else (a provider option, one model the provider cannot build): this model fails alone
            raise RuntimeError(f"runtime.execution_provider {provider} could not build a session for this model: "
                               f"{first}") from None
        raise
    active = sess.get_providers()
    if not active or active[0] != provider:  # e.g. CUDA libraries missing: onnxruntime fell back to CPU
        raise ProviderMismatch(f"runtime.execution_provider {provider} was asked for but onnxruntime runs the "
                               f"session on {', '.join(active) or 'nothing'} (it falls back when the provider "
                               "cannot start: check the CUDA/cuDNN/TensorRT libraries)")
    return sess


def bound_invoke(sess, feeds: dict, device: str, device_id: int = 0):
    """Inputs copied to ``device`` once and outputs allocated there (IO binding), so each call times the
    inference only; outputs are synchronised explicitly after each run (GPU work is asynchronous)."""
    import onnxruntime as ort

    io = sess.io_binding()
    for name, x in feeds.items():
        io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, device, device_id))
    for out in sess.get_outputs():
        io.bind_output(out.name, device, device_id)
    io.synchronize_inputs()

    def invoke():
        sess.run_with_iobinding(io)
        io.synchronize_outputs()

    invoke.binding = io  # type: ignore[attr-defined]  # for checks: outputs via copy_outputs_to_cpu()
    return invoke


def load(req: dict):
    """Returns (a zero-argument callable that runs one inference, facts about the session)."""
    runtime, path, threads = req["runtime"], req["model"], int(req.get("threads", 1))
    if runtime == "onnxruntime":
        sess = onnx_session(req)
        specs = [([d if isinstance(d, int) else 1 for d in i.shape], "float32") for i in sess.get_inputs()]
        feeds = dict(zip([i.name for i in sess.get_inputs()], _inputs(specs, int(req.get("seed", 0)))))
        provider = sess.get_providers()[0]
        device = GPU_PROVIDERS.get(provider)
        info = {"providers": sess.get_providers(), "io_binding": False, "include_transfers": False}
        if device and not req.get("include_transfers"):
            device_id = int((req.get("provider_options") or {}).get("device_id", 0))
            info.update(io_binding=True, device=f"{device}:{device_id}")
            return bound_invoke(sess, feeds, device, device_id), info
        info["include_transfers"] = bool(device)  # sess.run copies inputs in and outputs out every call
        return (lambda: sess.run(None, feeds)), info
    if runtime == "tflite":
        interp = _tflite_interpreter(path, threads, req.get("delegate", "cpu"))
        interp.allocate_tensors()
        details = interp.get_input_details()
        for d, x in zip(details, _inputs([(d["shape"], d["dtype"]) for d in details], int(req.get("seed", 0)))):
            interp.set_tensor(d["index"], x)
        return interp.invoke, {"delegate": req.get("delegate", "cpu")}
    raise ValueError(f"unknown runtime {runtime!r}")


def _bounded(req: dict, key: str, default, kind, lo, hi):
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{key} must be a number, got {str(value)[:40]!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{key} must be between {lo} and {hi}, got {value!r}")
    return kind(value)


def validate(req: dict) -> dict:
    """Check and normalise a run request before anything touches the runtime."""
    if req.get("runtime") not in ("onnxruntime", "tflite"):
        raise ValueError(f"unknown runtime {str(req.get('runtime'))[:40]!r}")
    if not isinstance(req.get("model"), str) or not req["model"]:
        raise ValueError("model must be a path")
    if not isinstance(req.get("options") or {}, dict):
        raise ValueError("options must be an object")
    for key in ("delegate", "execution_provider"):
        if req.get(key) is not None and not isinstance(req[key], str):
            raise ValueError(f"{key} must be a string")
    ad = req.get("adaptive")
    if ad is not None:
        if not isinstance(ad, dict):
            raise ValueError("adaptive must be an object")
        ad = {"target_rel_ci": _bounded(ad, "target_rel_ci", None, float, 1e-9, 1.0),
              "min_runs": _bounded(ad, "min_runs", None, int, 1, 10_000_000),
              "max_runs": _bounded(ad, "max_runs", None, int, 1, 10_000_000),
              "max_seconds": _bounded(ad, "max_seconds", None, float, 1e-6, 86_400.0)}
        if ad["min_runs"] > ad["max_runs"]:
            raise ValueError("adaptive.min_runs must not exceed adaptive.max_runs")
    if req.get("reference") is not None and not isinstance(req["reference"], str):
        raise ValueError("reference must be a path")
    return dict(req, adaptive=ad, threads=_bounded(req, "threads", 1, int, 1, 1024),
                warmup_runs=_bounded(req, "warmup_runs", 0, int, 0, 1_000_000),
                timed_runs=_bounded(req, "timed_runs", 1, int, 1, 10_000_000),
                min_seconds=_bounded(req, "min_seconds", 0.0, float, 0.0, 86_400.0),
                seed=_bounded(req, "seed", 0, int, 0, 2**32 - 1))


# --- the stopping rule (kept here because this file runs alone on devices; harness.measure.stats
# re-exports it, and a test checks it against an independent computation) ---------------------

_RANKS: dict[int, tuple[int, int] | None] = {}


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based order-statistic ranks (lo, hi) of a distribution-free CI for the median of n runs.

    The interval [x_(lo), x_(hi)] covers the true median with probability >= ``confidence`` for any
    continuous distribution (binomial argument, as in Conover); None when n is too small (n < 6 at 95 %).
    """
    key = n if confidence == 0.95 else None
    if key is not None and key in _RANKS:
        return _RANKS[key]
    from math import comb

    total, tail, k = 2 ** n, 0, 0
    alpha = (1 - confidence) / 2
    # largest k with P(B <= k - 1) <= alpha, B ~ Binomial(n, 1/2): x_(k) (1-based) is the lower bound
    while k < n and (tail + comb(n, k)) / total <= alpha:
        tail += comb(n, k)
        k += 1
    out = None if k == 0 else (k - 1, n - k)
    if key is not None:
        _RANKS[key] = out
    return out


def median_rel_ci(xs: list[float]) -> float:
    """Half-width of the 95 % CI of the median as a fraction of the median (inf when undefined)."""
    ranks = median_ci_ranks(len(xs))
    if ranks is None:
        return float("inf")
    s = sorted(xs)
    n = len(s)
    med = (s[(n - 1) // 2] + s[n // 2]) / 2
    return (s[ranks[1]] - s[ranks[0]]) / 2 / med if med > 0 else float("inf")


# --- noisy neighbours: who else used the CPU while we timed ------------------------------------

class WaitProbe:
    """Time this process's threads were kept off the CPU during a run, from /proc/<tid>/schedstat (ns).

    A run during which our threads waited for a CPU was slowed by another process (or, in a virtual
    machine, by the hypervisor's steal), not by the model: such runs are flagged ``preempted`` and left
    out of the estimate (kept raw in the store). With one runtime thread the inference runs on the
    calling thread, so wall time minus that thread's CPU time counts steal too; with a pool, the
    threads' run-queue delays are summed.
    """

    def __init__(self, single_thread: bool) -> None:
        self.fds: list[int] = []
        self.single = single_thread
        try:
            if single_thread:  # CPU clock of this thread (schedstat's runtime is only updated per tick)
                self.fds.append(os.open("/proc/thread-self/schedstat", os.O_RDONLY))
                time.thread_time_ns()
            else:
                for tid in os.listdir("/proc/self/task"):
                    self.fds.append(os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY))
        except OSError:
            self.close()

    def __call__(self) -> int | None:
        """single thread: on-CPU ns of the calling thread; pool: summed run-queue delay ns."""
        if not self.fds:
            return None
        try:
            if self.single:
                return time.thread_time_ns()
            return sum(int(os.pread(fd, 96, 0).split()[1]) for fd in self.fds)
        except (OSError, ValueError, IndexError):
            return None

    def off_cpu_ms(self, p0: int, p1: int, wall_ns: int) -> float:
        return max(0, wall_ns - (p1 - p0)) / 1e6 if self.single else (p1 - p0) / 1e6

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def cpu_times() -> dict[str, float] | None:
    """Whole-machine busy and steal seconds (/proc/stat) and this process's CPU seconds."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    busy = sum(fields[:8]) - idle - steal
    t = os.times()
    return {"busy_s": busy / hz, "steal_s": steal / hz, "self_s": t.user + t.system, "wall_s": time.monotonic()}


def neighbours(before: dict | None, after: dict | None) -> dict[str, Any] | None:
    """Other processes' CPU time and the hypervisor's steal while this model was timed."""
    if before is None or after is None:
        return None
    wall = max(after["wall_s"] - before["wall_s"], 1e-9)
    others = max(0.0, (after["busy_s"] - before["busy_s"]) - (after["self_s"] - before["self_s"]))
    steal = max(0.0, after["steal_s"] - before["steal_s"])
    return {"wall_s": wall, "others_cpu_s": others, "steal_s": steal, "cpus": os.cpu_count() or 1}


def _proc_cpu() -> dict[int, tuple[str, float]]:
    out = {}
    hz = os.sysconf("SC_CLK_TCK")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        fields = text[text.rfind(")") + 2:].split()
        out[int(d)] = (name, (int(fields[11]) + int(fields[12])) / hz)
    return out


def _turbo() -> bool | None:
    no_turbo = _read(_CPU / "intel_pstate" / "no_turbo")
    if no_turbo is not None:
        return no_turbo == "0"
    boost = _read(_CPU / "cpufreq" / "boost")
    return boost == "1" if boost is not None else None


def stability_facts(window_s: float = 0.5) -> dict[str, Any]:
    """What endangers stable timing here (judged by harness.measure.stability): governor, turbo, load,
    busy processes and steal over ``window_s``."""
    facts: dict[str, Any] = {"governors": governors() or None, "turbo": _turbo(), "cpu_count": os.cpu_count(),
                             "isolated_cpus": _read(_CPU / "isolated")}
    try:
        facts["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        facts["loadavg_1m"] = None
    c0, p0 = cpu_times(), _proc_cpu()
    time.sleep(window_s)
    c1, p1 = cpu_times(), _proc_cpu()
    if c0 and c1:
        wall = max(c1["wall_s"] - c0["wall_s"], 1e-9) * (os.cpu_count() or 1)
        facts["steal_share"] = (c1["steal_s"] - c0["steal_s"]) / wall
    busy = []
    for pid, (name, t1) in p1.items():
        if pid == os.getpid() or pid not in p0:
            continue
        share = (t1 - p0[pid][1]) / max(window_s, 1e-9)
        if share >= 0.10:
            busy.append({"pid": pid, "name": name, "cpu_share": round(share, 3)})
    facts["busy_processes"] = sorted(busy, key=lambda p: -p["cpu_share"])[:8]
    return facts


_REFERENCES: dict[str, Any] = {}


def _reference(req: dict):
    """The reference model's loaded session (kept for the worker's life: it runs with every model)."""
    path = req.get("reference")
    if not path:
        return None
    key = json.dumps([path, req["runtime"], req.get("threads"), req.get("options"), req.get("delegate"),
                      req.get("execution_provider"), req.get("provider_options"), req.get("precision"),
                      req.get("include_transfers")], sort_keys=True)
    if key not in _REFERENCES:
        invoke, _ = load(dict(req, model=path))
        for _ in range(max(1, int(req.get("warmup_runs", 0)))):
            invoke()
        _REFERENCES.clear()
        _REFERENCES[key] = invoke
    return _REFERENCES[key]


# --- GPU / Jetson conditions and energy (hwprobe.py: beside this file, or its path in the request) --------

_PROBE: dict[str, Any] = {}


class Unavailable(RuntimeError):
    """Something the profile asks for does not exist on this device (failure kind ``unavailable``)."""


def probe(req: dict | None = None):
    """The hwprobe module (standalone, loaded by path) or None; NVML initialised once per process."""
    if "module" not in _PROBE:
        path = (req or {}).get("probe") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "hwprobe.py")
        mod = None
        if os.path.isfile(path):
            import importlib.util

            spec = importlib.util.spec_from_file_location("harness_hwprobe", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)  # type: ignore[union-attr]
        _PROBE["module"] = mod
        _PROBE["nvml"] = mod.load_nvml() if mod is not None else None
    return _PROBE["module"]


def sysfs_root() -> str:
    return os.environ.get("HARNESS_SYSFS_ROOT", "/")  # a recorded tree in tests; the device's own otherwise


def gpu_conditions(req: dict, static: bool = False) -> dict[str, Any]:
    """NVML's view of the GPU and a Jetson's power mode, clocks and frequencies (absent when not there)."""
    mod = probe(req)
    if mod is None:
        return {}
    out: dict[str, Any] = {}
    nv, index = _PROBE.get("nvml"), int(req.get("gpu_index", 0))
    if nv is not None:
        try:
            out["nvml"] = {**(mod.nvml_static(nv, index) if static else {}), **mod.nvml_dynamic(nv, index)}
        except Exception as e:  # no such GPU index: say so instead of failing the model
            out["nvml"] = {"error": f"{type(e).__name__}: {e}"}
    jetson = mod.jetson_conditions(sysfs_root())
    if jetson:
        out["jetson"] = jetson
    return out


def energy_meter(req: dict):
    method = req.get("energy") or "off"
    if method == "off":
        return None
    mod = probe(req)
    on_gpu = req.get("execution_provider") in GPU_PROVIDERS or req.get("delegate") == "gpu"
    meter = (mod.energy_meter(method, sysfs_root(), _PROBE.get("nvml"), int(req.get("gpu_index", 0)), gpu=on_gpu)
             if mod else None)
    if meter is None:
        what = "auto found no energy counter" if method == "auto" else f"{method} is not available"
        raise Unavailable(f"policy.energy: {what} on this device (nvml: NVIDIA driver with "
                          "nvidia-ml-py; jetson_ina: INA3221 rails in sysfs; rapl: /sys/class/powercap readable; "
                          "battery: /sys/class/power_supply/battery); use policy.energy: off or another method")
    return meter


def measure(req: dict) -> dict:
    before = {**dynamic_conditions(), **gpu_conditions(req)} if req.get("conditions") else None
    meter = energy_meter(req)
    t0 = time.perf_counter()
    invoke, session = load(req)
    init_ms = (time.perf_counter() - t0) * 1e3
    clock = time.perf_counter_ns
    ref = _reference(req)
    waits_probe = WaitProbe(int(req.get("threads", 1)) == 1)  # after load: the pool threads exist now
    cpu0 = cpu_times()
    try:
        warmup = []
        for _ in range(int(req.get("warmup_runs", 0))):
            s = clock()
            invoke()
            warmup.append((clock() - s) / 1e6)
        timed: list[float] = []
        waits: list[float] = []
        clean: list[float] = []
        ad = req.get("adaptive")
        if ad is None:
            runs, min_ns, max_ns, stop = int(req.get("timed_runs", 1)), float(req.get("min_seconds", 0.0)) * 1e9, None, "fixed"
        else:
            runs, min_ns, max_ns, stop = ad["max_runs"], 0.0, ad["max_seconds"] * 1e9, "max_runs"
        threshold = float(req.get("preempt_threshold", 0.02))
        ref_timed: list[float] = []
        ref_waits: list[float] = []
        start = clock()
        while len(timed) < runs or clock() - start < min_ns:
            if ref is not None:  # the reference runs right before each run: both see the same machine
                w0 = waits_probe()
                s = clock()
                ref()
                e = clock()
                w1 = waits_probe()
                ref_timed.append((e - s) / 1e6)
                if w0 is not None and w1 is not None:
                    ref_waits.append(waits_probe.off_cpu_ms(w0, w1, e - s))
            w0 = waits_probe()
            s = clock()
            invoke()
            e = clock()
            w1 = waits_probe()
            ms = (e - s) / 1e6
            timed.append(ms)
            if w0 is not None and w1 is not None:
                wait = waits_probe.off_cpu_ms(w0, w1, e - s)
                waits.append(wait)
                if wait <= threshold * ms:
                    clean.append(ms)
            else:
                clean.append(ms)
            if ad is not None:
                if len(clean) >= ad["min_runs"] and len(clean) % 2 == 0 \
                        and median_rel_ci(clean) <= ad["target_rel_ci"]:
                    stop = "ci_reached"
                    break
                if e - start >= max_ns:
                    stop = "max_seconds"
                    break
        # what the timed runs saw, before the energy pass: the neighbours' CPU share over the timed runs alone
        # (a 1 s pass would dilute a 40 ms visit's 29x) and the conditions right after them
        seen = neighbours(cpu0, cpu_times())
        after = {**dynamic_conditions(), **gpu_conditions(req)} if before is not None else None
        energy_mj, energy_facts = None, None
        if meter is not None:  # a pass of its own: no reference mixed in, long enough for the meter's steps
            energy_mj, energy_facts = meter.measure(invoke, float(req.get("energy_seconds", 1.0)))
    finally:
        waits_probe.close()
    out = {"ok": True, "init_ms": init_ms, "warmup_ms": warmup, "timed_ms": timed, "session": session,
           "wait_ms": waits if len(waits) == len(timed) else None, "stop_rule": stop, "neighbours": seen}
    if ref is not None:
        out.update(reference_ms=ref_timed, reference_wait_ms=ref_waits if len(ref_waits) == len(ref_timed) else None)
    if meter is not None:  # millijoules per inference (one invoke, i.e. one batch), over the energy pass
        out.update(energy_mj=energy_mj, energy_method=meter.method, energy_facts=energy_facts)
    if before is not None:
        out.update(conditions_before=before, conditions_after=after)
    return out


def handle(req) -> dict:
    if not isinstance(req, dict):
        return {"ok": False, "kind": "parse_error", "message": f"a request is a JSON object, not {type(req).__name__}"}
    op = req.get("op", "run")
    if not isinstance(op, str):
        return {"ok": False, "kind": "parse_error", "message": "op must be a string"}
    if op == "hello":
        return {"ok": True, "protocol": PROTOCOL, "pid": os.getpid(), "versions": runtime_versions(),
                "conditions": static_conditions(), "tensorflow_imported": "tensorflow" in sys.modules,
                "onnxruntime_providers": onnx_providers(), "gpu": gpu_conditions(req, static=True)}
    if op == "stability":
        return {"ok": True, **stability_facts(float(req.get("window_s", 0.5)))}
    if op == "state":
        return {"ok": True, **dynamic_conditions(), "max_freq_mhz": max_frequencies_mhz() or None}
    if op == "energy":  # can policy.energy be metered here? (`devices check`, before any campaign)
        try:
            meter = energy_meter(req)
        except Unavailable as e:
            return {"ok": False, "kind": "unavailable", "message": str(e)}
        return {"ok": True, "method": getattr(meter, "method", None)}
    if op == "sha256":  # lets a remote driver skip re-pushing a model that is already there
        import hashlib

        if not isinstance(req.get("path"), str):
            return {"ok": False, "kind": "parse_error", "message": "sha256 needs a path (a string)"}
        try:
            digest = hashlib.sha256()
            with open(str(req["path"]), "rb") as f:  # no hashlib.file_digest: devices run old Pythons
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            return {"ok": True, "sha256": digest.hexdigest()}
        except OSError as e:
            return {"ok": False, "kind": "device_error", "message": f"cannot read {req.get('path')!r}: {e}"}
    if op == "run":
        try:
            req = validate(req)
        except (KeyError, ValueError, TypeError, ArithmeticError) as e:
            return {"ok": False, "kind": "parse_error", "message": f"bad request: {e}"}
        try:
            return measure(req)
        except (ProviderMismatch, Unavailable) as e:
            return {"ok": False, "kind": "unavailable", "message": str(e)}
        except Exception as e:  # the runtime's own errors: a model it cannot load or run
            msg, model = f"{type(e).__name__}: {e}", str(req.get("model") or "")
            if model and model not in msg:  # LiteRT's "not a valid Flatbuffer buffer" names no file
                msg = f"{model}: {msg}"
            if "cudaStreamEndCapture" in msg or "during capture" in msg:  # seen on an H200, 2 of 79 NB201 models
                option = ("trt_cuda_graph_enable" if req.get("execution_provider") == "TensorrtExecutionProvider"
                          else "enable_cuda_graph")
                msg = (f"CUDA graph capture failed for this model (runtime.provider_options {option}): an "
                       "operation in it cannot be captured; measure it without CUDA graphs. " + msg)
            return {"ok": False, "kind": "device_error", "message": msg}
    return {"ok": False, "kind": "parse_error", "message": f"unknown op {op[:40]!r}"}


def answer(line: str, handler: Callable[[dict], dict] | None = None) -> dict:
    """One request line -> one answer (``handler``, default :func:`handle`); nothing a client sends can end
    the worker."""
    try:
        req = json.loads(line)
    except (ValueError, RecursionError) as e:
        return {"ok": False, "kind": "parse_error", "message": f"bad JSON: {str(e)[:200]}"}
    try:
        return (handler or handle)(req)
    except Exception as e:  # a bug here must cost one request, not the worker
        return {"ok": False, "kind": "device_error", "message": f"runner error: {type(e).__name__}: {str(e)[:200]}"}


def _protocol_stream():
    """A private copy of stdout for JSON; fd 1 then points at stderr so runtime chatter can't corrupt it."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return proto


def serve(handler: Callable[[dict], dict] | None = None) -> None:
    """JSON-lines loop: one request per line in, one response (``handler(request)``, default :func:`handle`)
    per line out. Also the virtual phone's benchmark worker (``harness.sim.adb.bench``)."""
    import signal

    handler = handler or handle
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the campaign's to handle, not the worker's
    proto = _protocol_stream()
    import io

    for line in io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"):  # bad bytes: a bad request
        if not line.strip():
            continue
        proto.write(json.dumps(answer(line, handler)) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", action="store_true", help="answer JSON requests on stdin, one per line")
    ap.add_argument("--request", help="one JSON request; print one JSON response")
    args = ap.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.request:
        _protocol_stream().write(json.dumps(answer(args.request)) + "\n")
        return 0
    ap.error("give --serve or --request")
    return 2


if __name__ == "__main__":
    sys.exit(main())
