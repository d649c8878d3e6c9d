"""A stand-in ``trtexec`` (TensorRT's benchmarking tool) for machines without an NVIDIA GPU.

It accepts the options the harness uses, builds an "engine" (the ONNX model wrapped with a header that
records the TensorRT version and precision flags), and times it with onnxruntime on the CPU. What it
prints follows TensorRT 8.6's trtexec (``samples/common/sampleReporting.cpp``, ``sampleDevice.cpp``,
``trtexec.cpp``): the ``&&&& RUNNING/PASSED/FAILED TensorRT.trtexec [TensorRT v8601]`` lines, timestamped
``[I]``/``[W]``/``[E]`` log lines, ``=== Device Information ===``, ``TensorRT version: 8.6.1``, the
``=== Performance summary ===`` block and the ``--exportTimes`` JSON (one object per query, warm-up
queries included, with startEnqMs ... endToEndMs). Only the numbers differ: they are CPU times, and the
device is named as this stand-in so no stored result can pass for a GPU measurement.

Standalone on purpose (numpy + onnxruntime, no harness imports): it is copied to SSH test devices.
Run ``python trtexec.py --help``; exit status 0 on success, 1 on failure, as the real tool.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from datetime import datetime

VERSION = (8, 6, 1)
TAG = f"TensorRT v{VERSION[0]}{VERSION[1]}{VERSION[2]:02d}"
MAGIC = b"HARNESS-SIM-TRT-ENGINE\n"
DEVICE_NAME = "harness trtexec stand-in (CPU, onnxruntime)"


def _log(level: str, msg: str) -> None:
    stamp = datetime.now().strftime("%m/%d/%Y-%H:%M:%S")
    for line in str(msg).split("\n"):
        print(f"[{stamp}] [{level}] {line}")


def _parse(argv: list[str]) -> dict[str, str | bool]:
    opts: dict[str, str | bool] = {}
    for a in argv:
        if not a.startswith("--"):
            raise ValueError(f"Unknown option: {a}")
        key, eq, value = a[2:].partition("=")
        opts[key] = value if eq else True
    known = {"onnx", "saveEngine", "loadEngine", "fp16", "int8", "best", "noTF32", "shapes", "warmUp", "iterations",
             "duration", "avgRuns", "exportTimes", "noDataTransfers", "useCudaGraph", "device", "skipInference",
             "buildOnly", "separateProfileRun", "verbose", "help", "useSpinWait", "percentile", "memPoolSize",
             "timingCacheFile", "builderOptimizationLevel"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"Unknown option: --{unknown[0]}")
    return opts


def _device_info(device: int) -> None:
    _log("I", "=== Device Information ===")
    _log("I", "Available Devices: ")
    _log("I", f'  Device 0: "{DEVICE_NAME}" UUID: GPU-00000000-0000-0000-0000-000000000000')
    if device != 0:
        _log("E", f"Cannot find device ID {device}!")
        raise SystemExit(1)
    _log("I", f"Selected Device: {DEVICE_NAME}")
    _log("I", "Selected Device ID: 0")
    _log("I", "Selected Device UUID: GPU-00000000-0000-0000-0000-000000000000")
    _log("I", "Compute Capability: 0.0")
    _log("I", f"SMs: {os.cpu_count() or 1}")
    _log("I", "Device Global Memory: 0 MiB")
    _log("I", "Shared Memory per SM: 0 KiB")
    _log("I", "Memory Bus Width: 0 bits (ECC disabled)")
    _log("I", "Application Compute Clock Rate: 0 GHz")
    _log("I", "Application Memory Clock Rate: 0 GHz")
    _log("I", "")
    _log("I", "Note: The application clock rates do not reflect the actual clock rates that the GPU is currently "
              "running at.")


def _build(onnx_path: str, opts: dict) -> bytes:
    import onnx

    model = onnx.load(onnx_path)  # raises on a file that is not ONNX, as the parser would fail
    _log("I", "[TRT] ----------------------------------------------------------------")
    _log("I", f"[TRT] Input filename:   {onnx_path}")
    _log("I", f"[TRT] ONNX IR version:  0.0.{model.ir_version}")
    _log("I", f"[TRT] Opset version:    {model.opset_import[0].version}")
    _log("I", f"[TRT] Producer name:    {model.producer_name}")
    _log("I", "[TRT] ----------------------------------------------------------------")
    flags = {"fp16": bool(opts.get("fp16") or opts.get("best")), "int8": bool(opts.get("int8") or opts.get("best"))}
    header = json.dumps({"tensorrt": list(VERSION), "flags": flags}).encode() + b"\n"
    with open(onnx_path, "rb") as f:
        return MAGIC + header + f.read()


def _load(engine_path: str) -> tuple[dict, bytes]:
    with open(engine_path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        _log("E", "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization (Serialization "
                  "assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
        raise SystemExit(1)
    header, _, onnx_bytes = data[len(MAGIC):].partition(b"\n")
    meta = json.loads(header)
    if tuple(meta["tensorrt"]) != VERSION:
        _log("E", "6: The engine plan file is not compatible with this version of TensorRT, expecting library "
                  f"version {'.'.join(map(str, VERSION))} got {'.'.join(map(str, meta['tensorrt']))}, please "
                  "rebuild.")
        raise SystemExit(1)
    return meta, onnx_bytes


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _perf(values: list[float]) -> str:
    xs = sorted(values)
    n = len(xs)

    def pct(p: float) -> float:  # sampleReporting.cpp's findPercentile
        exclude = int((1 - p / 100) * n)
        return xs[max(n - 1 - exclude, 0)]

    return (f"min = {_fmt(xs[0])} ms, max = {_fmt(xs[-1])} ms, mean = {_fmt(statistics.fmean(xs))} ms, "
            f"median = {_fmt(statistics.median(xs))} ms, percentile(90%) = {_fmt(pct(90))} ms, "
            f"percentile(95%) = {_fmt(pct(95))} ms, percentile(99%) = {_fmt(pct(99))} ms")


def _infer(onnx_bytes: bytes, opts: dict) -> None:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, sess_options=so, providers=["CPUExecutionProvider"])
    inputs = {i.name: np.random.default_rng(0).uniform(-1, 1, [d if isinstance(d, int) else 1 for d in i.shape])
              .astype(np.float32) for i in sess.get_inputs()}
    transfers = not opts.get("noDataTransfers")
    warmup_ms = float(opts.get("warmUp", 200))
    iterations = int(opts.get("iterations", 10))
    duration_s = float(opts.get("duration", 3))
    for i in sess.get_inputs():
        _log("I", f"Set shape of input tensor {i.name} to: {'x'.join(str(d) for d in inputs[i.name].shape)}")
    _log("I", "Starting inference")
    t0 = time.perf_counter()
    ms = lambda: (time.perf_counter() - t0) * 1e3  # noqa: E731
    trace, bench_start = [], None
    while True:
        enq_start = ms()
        staged = {k: v.copy() for k, v in inputs.items()} if transfers else inputs  # H2D: a copy of the inputs
        h2d_end = ms()
        outputs = sess.run(None, staged)
        compute_end = ms()
        if transfers:
            [o.copy() for o in outputs]  # D2H
        d2h_end = ms()
        trace.append({"startEnqMs": enq_start, "endEnqMs": h2d_end, "startH2dMs": enq_start, "endH2dMs": h2d_end,
                      "startComputeMs": h2d_end, "endComputeMs": compute_end, "startD2hMs": compute_end,
                      "endD2hMs": d2h_end})
        if h2d_end >= warmup_ms and bench_start is None:
            bench_start = len(trace) - 1
        if bench_start is not None:
            timed = len(trace) - bench_start
            if timed >= iterations and d2h_end - trace[bench_start]["startH2dMs"] >= duration_s * 1e3:
                break
    warm = bench_start
    timed = trace[warm:]
    for t in trace:
        t.update(h2dMs=t["endH2dMs"] - t["startH2dMs"], computeMs=t["endComputeMs"] - t["startComputeMs"],
                 d2hMs=t["endD2hMs"] - t["startD2hMs"])
        t.update(latencyMs=t["h2dMs"] + t["computeMs"] + t["d2hMs"], endToEndMs=t["endD2hMs"] - t["startH2dMs"])
    bench_ms = timed[-1]["endD2hMs"] - timed[0]["startH2dMs"]
    _log("I", f"Warmup completed {warm} queries over {_fmt(warmup_ms)} ms")
    _log("I", f"Timing trace has {len(timed)} queries over {_fmt(bench_ms / 1000)} s")
    _log("I", "")
    _log("I", "=== Trace details ===")
    avg = int(opts.get("avgRuns", 10))
    _log("I", f"Trace averages of {avg} runs:")
    for k in range(0, len(timed) - avg + 1, avg):
        chunk = timed[k:k + avg]
        mean = lambda key: statistics.fmean(c[key] for c in chunk)  # noqa: E731
        _log("I", f"Average on {avg} runs - GPU latency: {_fmt(mean('computeMs'))} ms - Host latency: "
                  f"{_fmt(mean('latencyMs'))} ms (enqueue {_fmt(mean('endEnqMs') - mean('startEnqMs'))} ms)")
    _log("I", "")
    _log("I", "=== Performance summary ===")
    _log("I", f"Throughput: {_fmt(len(timed) / bench_ms * 1000)} qps")
    _log("I", f"Latency: {_perf([t['latencyMs'] for t in timed])}")
    _log("I", f"Enqueue Time: {_perf([t['endEnqMs'] - t['startEnqMs'] for t in timed])}")
    _log("I", f"H2D Latency: {_perf([t['h2dMs'] for t in timed])}")
    _log("I", f"GPU Compute Time: {_perf([t['computeMs'] for t in timed])}")
    _log("I", f"D2H Latency: {_perf([t['d2hMs'] for t in timed])}")
    _log("I", f"Total Host Walltime: {_fmt(bench_ms / 1000)} s")
    _log("I", f"Total GPU Compute Time: {_fmt(sum(t['computeMs'] for t in timed) / 1000)} s")
    _log("I", "Explanations of the performance metrics are printed in the verbose logs.")
    _log("I", "")
    if opts.get("exportTimes"):
        with open(str(opts["exportTimes"]), "w") as f:  # the real tool's layout: one object per line
            f.write("[\n")
            for i, t in enumerate(trace):
                f.write(("  " if i == 0 else ", ") + "{ " + ", ".join(f'"{k}" : {v:.6g}' for k, v in t.items())
                        + " }\n")
            f.write("]\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["trtexec", *argv])
    print(f"&&&& RUNNING TensorRT.trtexec [{TAG}] # {command}", flush=True)
    try:
        opts = _parse(argv)
    except ValueError as e:
        _log("E", str(e))
        print(f"&&&& FAILED TensorRT.trtexec [{TAG}] # {command}")
        return 1
    if opts.get("help"):
        # not in real trtexec's --help: a `devices check` of this stand-in says what it is before any campaign
        _log("I", f"Selected Device: {DEVICE_NAME}")
        print("=== Model Options ===\n  --onnx=<file>  ONNX model\n=== Build Options ===\n  --fp16 --int8 --best"
              "\n  --saveEngine=<file>\n=== Inference Options ===\n  --loadEngine=<file> --warmUp=<ms> "
              "--iterations=<N> --duration=<s> --exportTimes=<file> --noDataTransfers --useCudaGraph")
        print(f"&&&& PASSED TensorRT.trtexec [{TAG}] # {command}")
        return 0
    try:
        _log("I", "=== Model Options ===")
        _log("I", f"Format: {'ONNX' if opts.get('onnx') else '*'}")
        _log("I", f"Model: {opts.get('onnx', '')}")
        _device_info(int(opts.get("device", 0)))
        _log("I", f"TensorRT version: {'.'.join(map(str, VERSION))}")
        if opts.get("onnx"):
            engine = _build(str(opts["onnx"]), opts)
            _log("I", "Engine built in 0.1 sec.")
            if opts.get("saveEngine"):
                with open(str(opts["saveEngine"]), "wb") as f:
                    f.write(engine)
                _log("I", f"Engine saved to {opts['saveEngine']}")
            onnx_bytes = engine[len(MAGIC):].partition(b"\n")[2]
        elif opts.get("loadEngine"):
            onnx_bytes = _load(str(opts["loadEngine"]))[1]
            _log("I", f"Loaded engine size: {len(onnx_bytes) >> 20} MiB")
        else:
            raise ValueError("Model missing or format not recognized")
        if opts.get("skipInference") or opts.get("buildOnly"):
            _log("I", "Skipped inference phase since --skipInference is added.")
        else:
            _infer(onnx_bytes, opts)
    except SystemExit:
        print(f"&&&& FAILED TensorRT.trtexec [{TAG}] # {command}")
        return 1
    except Exception as e:  # the real tool reports and fails; no Python traceback on its stdout
        _log("E", f"{type(e).__name__}: {e}")
        print(f"&&&& FAILED TensorRT.trtexec [{TAG}] # {command}")
        return 1
    print(f"&&&& PASSED TensorRT.trtexec [{TAG}] # {command}")
    return 0


def install(folder: str, python: str | None = None) -> str:
    """Write an executable ``trtexec`` into ``folder`` that runs this stand-in (for PATH or a profile)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "trtexec")
    here = os.path.abspath(__file__)
    with open(path, "w") as f:
        f.write(f"#!{python or sys.executable} -P\nimport runpy, sys\nsys.argv[0] = 'trtexec'\n"
                f"runpy.run_path({here!r}, run_name='__main__')\n")
    os.chmod(path, 0o755)
    return path


if __name__ == "__main__":
    sys.exit(main())
