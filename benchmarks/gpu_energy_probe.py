"""GPU energy probe: how often NVML's energy counter moves, and energy per inference of one NB201 model with
onnxruntime's CUDA provider read three ways — the harness's pass between the counter's steps, a window over
100 timed runs (what harness did before), and a long 5 s window (the steps' error at most 4 %).
GPU machines with onnxruntime-gpu and nvidia-ml-py only; elsewhere it says why and exits 0.

    python benchmarks/gpu_energy_probe.py [--arch 6452]
"""

from __future__ import annotations

import tempfile
import time


def counter_cadence(nv, h, seconds: float = 2.0) -> tuple[int, float]:
    """How many times the counter moved in ``seconds`` and the median time between moves (ms)."""
    seen, last, t0 = [], None, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        v = nv.nvmlDeviceGetTotalEnergyConsumption(h)
        if v != last:
            seen.append(time.perf_counter())
            last = v
    gaps = sorted(b - a for a, b in zip(seen[1:], seen[2:]))
    return len(seen) - 1, (gaps[len(gaps) // 2] * 1e3 if gaps else float("nan"))


def main() -> int:
    from _cli import parser  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--arch", default="6452", help="NB201 index or key")
    args = ap.parse_args()
    from harness.devices import hwprobe

    nv = hwprobe.load_nvml()
    if nv is None:
        print("no NVIDIA GPU here (NVML not available): nothing to probe; run this on a GPU machine")
        return 0
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider: install onnxruntime-gpu")
        return 0
    from harness.devices import runner
    from harness.models.cache import ModelCache
    from harness.models.spaces import get_space

    h = nv.nvmlDeviceGetHandleByIndex(0)
    moves, gap = counter_cadence(nv, h)
    print(f"idle: the energy counter moved {moves} times in 2 s, every {gap:.1f} ms (median)")
    space = get_space("nb201")
    art = ModelCache(tempfile.mkdtemp()).get(space.build(space.parse(args.arch)), "onnx")
    invoke, _ = runner.load({"runtime": "onnxruntime", "model": str(art.path),
                             "execution_provider": "CUDAExecutionProvider"})
    for _ in range(200):
        invoke()
    meter = hwprobe.energy_meter("nvml", "/", nv, 0)
    t0, n = time.perf_counter(), 0
    meter.start()
    while time.perf_counter() - t0 < 5.0:
        invoke()
        n += 1
    ref = meter.stop(n)
    print(f"long window 5 s: {ref:.3f} mJ per inference over {n} runs ({(time.perf_counter() - t0) / n * 1e3:.3f} ms each)")
    old = []
    for _ in range(8):
        meter.start()
        for _ in range(100):
            invoke()
        old.append(meter.stop(100))
    print("window over 100 timed runs (before):", [round(x, 1) for x in old])
    for secs in (0.5, 1.0):
        new = [meter.measure(invoke, secs) for _ in range(5)]
        print(f"pass of {secs} s between steps (now):", [round(p, 2) for p, _ in new if p is not None], new[0][1])
    return 0


if __name__ == "__main__":
    from _cli import run

    run(main)
