"""ADB overhead: a virtual-phone campaign over N cached NB201 models vs the local LiteRT driver on the same models.

Both campaigns use the same policy (local-tflite's: warm-up and timed runs, 1 thread) and the same cached
.tflite files. The virtual phone adds what a real phone costs on top of the timing itself: the ADB protocol
over loopback, content-named pushes with size/hash checks, the phone's conditions read before and after
every model, one benchmark_model process per model (init included) and parsing its output. The local
campaign is timed before and after the virtual-phone one to expose drift.

    python benchmarks/adb_overhead.py [--models 50]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from harness.campaign import run_campaign
from harness.devices.registry import ProfileRegistry
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from harness.sim.adb.server import serving
from harness.testing.conformance import with_policy


def campaign(profile, space, archs, cache: ModelCache, db: Path) -> float:
    with Store(db) as st:
        t0 = time.perf_counter()
        summary = run_campaign(st, profile, space, archs, cache=cache)
        elapsed = time.perf_counter() - t0
    assert summary.ok == len(archs) * summary.rounds and summary.exported == 0, summary  # ok counts visits
    return elapsed


def main() -> None:
    from _cli import parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--models", type=positive, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    reg = ProfileRegistry("/nonexistent")
    # one fixed policy for both: benchmark_model times a fixed count (it cannot stop adaptively), so the local
    # campaign times the same count, in one round, without a paired reference
    fixed = dict(warmup_runs=2, timed_runs=20, min_seconds=0.0, rounds=1, reference="none")
    local = with_policy(reg.get("local-tflite"), **fixed)
    pol = local.policy
    phone = with_policy(reg.get("virtual-phone"), **fixed)
    space = get_space("nb201")
    archs = space.sample(args.models, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ModelCache(Path(tmp) / "cache")
        for a in archs:  # warm the cache: neither campaign exports
            cache.get(space.build(a), "tflite")
        local1 = campaign(local, space, archs, cache, Path(tmp) / "local1.db")
        with serving(phone) as served:
            virtual = campaign(served, space, archs, cache, Path(tmp) / "phone.db")
        local2 = campaign(local, space, archs, cache, Path(tmp) / "local2.db")
    base = (local1 + local2) / 2
    print(f"models: {args.models} cached NB201 .tflite, {local.runtime.threads} thread, "
          f"{pol.warmup_runs} warm-up + {pol.timed_runs} timed runs each")
    print(f"local LiteRT campaign (local-tflite): {local1:.3f} s, {local2:.3f} s (mean {base:.3f} s)")
    print(f"virtual-phone campaign (ADB driver):  {virtual:.3f} s (ADB, pushes, conditions, benchmark_model)")
    print(f"overhead ratio:                       {virtual / base:.2f}x")
    print(f"per-model overhead:                   {(virtual - base) / args.models * 1e3:.1f} ms")


if __name__ == "__main__":
    from _cli import run

    run(main)
