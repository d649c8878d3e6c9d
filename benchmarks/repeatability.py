"""Repeatability: two campaigns over the same architectures on one profile; SRCC between them.

    python benchmarks/repeatability.py [--device local-onnx] [--models 100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from scipy.stats import kendalltau, spearmanr

from harness.campaign import run_campaign
from harness.devices.registry import ProfileRegistry
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.paths import WORKSPACE
from harness.results.export import latency_table
from harness.results.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="local-onnx")
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    profile = ProfileRegistry(WORKSPACE.devices).get(args.device)
    space = get_space("nb201")
    archs = space.sample(args.models, args.seed)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "h.db") as st:
        cache = ModelCache(Path(tmp) / "cache")
        runs = []
        for i in (1, 2):
            p = profile.model_copy(update={"name": f"{profile.name}-run{i}"})
            s = run_campaign(st, p, space, archs, cache=cache)
            runs.append(p.name)
            print(f"campaign {i}: {s.ok} ok, {s.failed} failed, {s.elapsed_s:.1f} s, "
                  f"{len(s.unstable)} with spread >= 10%")
        df = latency_table(st, "nb201", runs).dropna()
    a, b = df[f"{runs[0]}_ms"], df[f"{runs[1]}_ms"]
    rel = ((a - b).abs() / ((a + b) / 2)).median()
    print(f"{args.device}: SRCC between the two campaigns = {spearmanr(a, b).statistic:.4f}, "
          f"Kendall tau = {kendalltau(a, b).statistic:.4f} on {len(df)} architectures; "
          f"median relative difference {rel:.1%}")


if __name__ == "__main__":
    main()
