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



def runtime_versions() -> dict:
    out = {"python": sys.version.split()[0]}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
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


def load(req: dict):
    """Returns a zero-argument callable that runs one inference."""
    runtime, path, threads = req["runtime"], req["model"], int(req.get("threads", 1))
    opts = dict(req.get("options") or {})
    if runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
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
        provider = req.get("execution_provider", "CPUExecutionProvider")
        if provider not in ort.get_available_providers():
            raise RuntimeError(f"execution provider {provider} not available; have {ort.get_available_providers()}")
        sess = ort.InferenceSession(path, sess_options=so, providers=[provider])
        specs = [([d if isinstance(d, int) else 1 for d in i.shape], "float32") for i in sess.get_inputs()]
        feeds = dict(zip([i.name for i in sess.get_inputs()], _inputs(specs, int(req.get("seed", 0)))))
        return lambda: sess.run(None, feeds)
    if runtime == "tflite":
        interp = _tflite_interpreter(path, threads, req.get("delegate", "cpu"))
        interp.allocate_tensors()
        details = interp.get_input_details()
        for d, x in zip(details, _inputs([(d["shape"], d["dtype"]) for d in details], int(req.get("seed", 0)))):
            interp.set_tensor(d["index"], x)
        return interp.invoke
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
    return dict(req, threads=_bounded(req, "threads", 1, int, 1, 1024),
                warmup_runs=_bounded(req, "warmup_runs", 0, int, 0, 1_000_000),
                timed_runs=_bounded(req, "timed_runs", 1, int, 1, 10_000_000),
                min_seconds=_bounded(req, "min_seconds", 0.0, float, 0.0, 86_400.0),
                seed=_bounded(req, "seed", 0, int, 0, 2**32 - 1))


def measure(req: dict) -> dict:
    before = dynamic_conditions() if req.get("conditions") else None
    t0 = time.perf_counter()
    invoke = load(req)
    init_ms = (time.perf_counter() - t0) * 1e3
    clock = time.perf_counter_ns
    warmup = []
    for _ in range(int(req.get("warmup_runs", 0))):
        s = clock()
        invoke()
        warmup.append((clock() - s) / 1e6)
    runs, min_ns = int(req.get("timed_runs", 1)), float(req.get("min_seconds", 0.0)) * 1e9
    timed = []
    start = clock()
    while len(timed) < runs or clock() - start < min_ns:
        s = clock()
        invoke()
        timed.append((clock() - s) / 1e6)
    out = {"ok": True, "init_ms": init_ms, "warmup_ms": warmup, "timed_ms": timed}
    if before is not None:
        out.update(conditions_before=before, conditions_after=dynamic_conditions())
    return out


def handle(req) -> dict:
    if not isinstance(req, dict):
        return {"ok": False, "kind": "parse_error", "message": f"a request is a JSON object, not {type(req).__name__}"}
    op = req.get("op", "run")
    if not isinstance(op, str):
        return {"ok": False, "kind": "parse_error", "message": "op must be a string"}
    if op == "hello":
        return {"ok": True, "protocol": PROTOCOL, "pid": os.getpid(), "versions": runtime_versions(),
                "conditions": static_conditions(), "tensorflow_imported": "tensorflow" in sys.modules}
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
        except Exception as e:  # the runtime's own errors: a model it cannot load or run
            return {"ok": False, "kind": "device_error", "message": f"{type(e).__name__}: {e}"}
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
