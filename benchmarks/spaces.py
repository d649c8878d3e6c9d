"""Per search space: cold export seconds per model (ONNX and TFLite) and the local latency distribution
(local-onnx: onnxruntime, 1 thread, its default policy) over a small seeded sample.

The MobileNet-family spaces run at ImageNet resolutions (160-224 px, 0.1-1 G MACs), so their files and
timings are one to two orders of magnitude above the CIFAR spaces'.

    python benchmarks/spaces.py [--models 10] [--spaces nb201,fbnet,mbv2,ofa_mbv3,proxyless]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.devices.driver import make_driver
from harness.devices.registry import ProfileRegistry
from harness.models.cache import ModelCache
from harness.models.spaces import SPACES, get_space


def bench_space(name: str, n: int, seed: int, profile) -> dict[str, float]:
    space = get_space(name)
    archs = space.sample(n, seed)
    graphs = [space.build(a) for a in archs]
    out: dict[str, float] = {"mmacs": statistics.median(g.macs() for g in graphs) / 1e6}
    with tempfile.TemporaryDirectory() as tmp:
        cache = ModelCache(Path(tmp))
        arts = {}
        for fmt in ("onnx", "tflite"):
            cold = []
            for g in graphs:
                t = time.perf_counter()
                art = cache.get(g, fmt)
                cold.append(time.perf_counter() - t)
                assert art.exported, "a fresh cache must export"
                arts.setdefault(fmt, []).append(art)
            out[f"{fmt}_s"] = statistics.mean(cold)
        out["mb"] = statistics.mean(a.path.stat().st_size for a in arts["onnx"]) / 1e6
        with make_driver(profile) as d:
            medians = [d.run(d.push(art)).median_ms for art in arts["onnx"]]
    out["p10"], out["median"], out["p90"] = np.percentile(medians, [10, 50, 90])
    return out


def main() -> None:
    from _cli import parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--models", type=positive, default=10, help="architectures per space (seeded sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spaces", default=",".join(SPACES), help="comma-separated space names")
    args = ap.parse_args()
    profile = ProfileRegistry().get("local-onnx")
    print(f"{args.models} architectures per space (seed {args.seed}); latency on local-onnx "
          f"({profile.runtime.threads} thread, one visit per model: "
          + (f"{profile.policy.adaptive.min_runs}-{profile.policy.adaptive.max_runs} timed runs, adaptive)"
             if profile.policy.adaptive is not None else f"{profile.policy.timed_runs} timed runs)"))
    header = (f"{'space':10} {'MMACs':>7} {'ONNX MB':>8} {'export ONNX':>12} {'export TFLite':>14} "
              f"{'p10 ms':>8} {'median ms':>10} {'p90 ms':>8}")
    print(header)
    print("-" * len(header))
    for name in args.spaces.split(","):
        r = bench_space(name.strip(), args.models, args.seed, profile)
        print(f"{name:10} {r['mmacs']:7.1f} {r['mb']:8.2f} {r['onnx_s'] * 1e3:9.1f} ms {r['tflite_s'] * 1e3:11.1f} ms "
              f"{r['p10']:8.2f} {r['median']:10.2f} {r['p90']:8.2f}")


if __name__ == "__main__":
    from _cli import run

    run(main)
