"""Export throughput: seconds per model for TFLite and ONNX, cold and cached, and what that means for
a 1000-architecture campaign (export time vs timing time).

Export is direct construction from the shared Graph (ONNX via onnx.helper, TFLite via the flatbuffer
schema shipped in ai-edge-litert), with no TensorFlow import and no converter run.

    python benchmarks/export.py [--models 100]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from harness.models.cache import ModelCache
from harness.models.spaces import get_space


def measured_timing_ms(space, archs) -> float:
    """Per-model cost of measuring with local-onnx's default policy (session + warm-up + timed runs, once per
    round: the default visits every model ``policy.rounds`` times; one visit alone overstated export's share)."""
    from harness.devices.driver import make_driver
    from harness.devices.registry import ProfileRegistry

    profile = ProfileRegistry().get("local-onnx")
    with tempfile.TemporaryDirectory() as tmp:
        cache = ModelCache(Path(tmp))
        arts = [cache.get(space.build(a), "onnx") for a in archs]
        with make_driver(profile) as d:
            t = time.perf_counter()
            for art in arts:
                d.run(d.push(art))
            return (time.perf_counter() - t) / len(arts) * 1e3 * profile.policy.rounds


def main() -> None:
    from _cli import parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--models", type=positive, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing-ms-per-model", type=float, default=None,
                    help="per-model timing cost to compare with (default: measured on 20 models, local-onnx)")
    args = ap.parse_args()
    space = get_space("nb201")
    archs = space.sample(args.models, args.seed)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = ModelCache(Path(tmp))
        t = time.perf_counter()
        graphs = [space.build(a) for a in archs]
        build = (time.perf_counter() - t) / len(archs)
        for fmt in ("onnx", "tflite"):
            cold, warm = [], []
            for g in graphs:
                t = time.perf_counter()
                art = cache.get(g, fmt)
                cold.append(time.perf_counter() - t)
                assert art.exported
            for g in graphs:
                t = time.perf_counter()
                art = cache.get(space.build(space.parse(g.name.split("_")[1])), fmt)
                warm.append(time.perf_counter() - t)
                assert not art.exported
            rows[fmt] = (statistics.mean(cold), max(cold), statistics.mean(warm))
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.*")) / 2 / len(archs) / 1e6
    print(f"{args.models} NB201 architectures; graph build {build * 1e3:.2f} ms/model; "
          f"mean file size {size:.2f} MB")
    print(f"{'format':8} {'cold mean':>10} {'cold max':>10} {'cached (build + lookup)':>24}")
    for fmt, (mean, mx, warm) in rows.items():
        print(f"{fmt:8} {mean * 1e3:8.1f} ms {mx * 1e3:8.1f} ms {warm * 1e3:21.2f} ms")
    timing = args.timing_ms_per_model or measured_timing_ms(space, archs[:20])
    n = 1000
    export_s = n * (rows["onnx"][0] + build)
    print(f"timing one model on local-onnx (its default policy, cached file): {timing:.1f} ms")
    print(f"1000-architecture campaign: export {export_s:.0f} s once (0 when cached), timing ~{n * timing / 1e3:.0f} s"
          f" -> export is {export_s / (export_s + n * timing / 1e3):.0%} of a cold campaign")
    print("reference: a Keras -> TFLite converter run costs 3-9 s per model on this machine (issue #4)")


if __name__ == "__main__":
    from _cli import run

    run(main)
