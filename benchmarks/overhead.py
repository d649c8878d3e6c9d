"""Harness overhead: a campaign over N cached NB201 models on local-onnx vs a bare onnxruntime loop.

Both do the same work per model (create a session with the profile's options, the same warm-up and
timed runs with the same threads). The ratio is wall time of the whole campaign (worker start-up,
conditions, SQLite commits included) over the bare loop's; measured in one run, bare loop timed twice
(before and after) to expose drift.

    python benchmarks/overhead.py [--models 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from harness.campaign import run_campaign
from harness.devices.registry import ProfileRegistry
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store


def bare_loop(paths: list[Path], threads: int, warmup: int, runs: int) -> float:
    t0 = time.perf_counter()
    for p in paths:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        feeds = {"input": x}
        for _ in range(warmup):
            sess.run(None, feeds)
        timed = []
        for _ in range(runs):
            s = time.perf_counter_ns()
            sess.run(None, feeds)
            timed.append(time.perf_counter_ns() - s)
        float(np.median(timed))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    profile = ProfileRegistry().get("local-onnx")
    pol, space = profile.policy, get_space("nb201")
    archs = space.sample(args.models, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ModelCache(Path(tmp) / "cache")
        paths = [cache.get(space.build(a), "onnx").path for a in archs]  # warm the cache
        bare1 = bare_loop(paths, profile.runtime.threads, pol.warmup_runs, pol.timed_runs)
        with Store(Path(tmp) / "h.db") as st:
            t0 = time.perf_counter()
            summary = run_campaign(st, profile, space, archs, cache=cache)
            campaign = time.perf_counter() - t0
            assert summary.ok == args.models and summary.exported == 0
        bare2 = bare_loop(paths, profile.runtime.threads, pol.warmup_runs, pol.timed_runs)
    bare = (bare1 + bare2) / 2
    print(f"models: {args.models} cached NB201 on local-onnx "
          f"({profile.runtime.threads} thread, {pol.warmup_runs} warm-up + {pol.timed_runs} timed runs each)")
    print(f"bare onnxruntime loop: {bare1:.3f} s, {bare2:.3f} s (mean {bare:.3f} s)")
    print(f"harness campaign:      {campaign:.3f} s (worker start, conditions, store commits included)")
    print(f"overhead ratio:        {campaign / bare:.3f}x  (goal <= 1.10x)")
    print(f"per-model overhead:    {(campaign - bare) / args.models * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
