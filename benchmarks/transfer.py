"""Leave-one-device-out transfer: how well does each method rank an unseen device from K measurements?

For every device of a public table: it is the target, all others are sources. K target architectures are
measured (drawn by a sampling strategy), the rest are ranked by each method; SRCC against the target's
real latencies on the architectures NOT among the K. Mean over seeds per target, then mean and worst
over targets. Methods (the same library code as `harness adapt`):

  proxy-alone   the source whose SRCC on the K samples is best, its raw latency ranking
  adaproxy      OneProxy's AdaProxy on that same single proxy (one-hot linear, L1-penalised correction)
  target-only   ridge on one-hot + graph features of the K samples only
  ours-1proxy   multi-proxy ridge restricted to that single proxy (+ one-hot correction), blended with
                the target's own structure model by leave-one-out error
  ours-all      the same with every source (source choice and one-hot weight by LOO)

    python benchmarks/transfer.py [--seeds 5] [--k 5 10 20 50] [--table oneproxy|hwnb|fbnet ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from harness.analysis import sampling
from harness.analysis.features import GraphFeatures, onehot
from harness.analysis.transfer import fit_adaproxy, fit_linear, fit_multiproxy, rank_sources
from harness.models.spaces import get_space

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TABLES = {
    "oneproxy": ("nb201", DATA / "oneproxy" / "nb201_oneproxy_18dev_1999.csv.gz"),
    "hwnb": ("nb201", DATA / "hwnasbench" / "nb201_hwnasbench_cifar10_4dev_15625.csv.gz"),
    "fbnet": ("fbnet", DATA / "hwnasbench" / "fbnet_hwnasbench_cifar100_4dev_5000.csv.gz"),
}
METHODS = ("proxy-alone", "adaproxy", "target-only", "ours-1proxy", "ours-all")


def load(table: str, cache: Path):
    space_name, path = TABLES[table]
    space = get_space(space_name)
    df = pd.read_csv(path)
    key_col = space.key_columns[0]
    archs = [space.parse(str(k)) for k in df[key_col]]
    devices = [c for c in df.columns if c.endswith("_ms")]
    lat = df[devices].to_numpy(dtype=float)
    x = onehot(space, archs)
    gf = GraphFeatures(space, cache)
    feats = np.hstack([x, gf.matrix(archs, gf.vocabulary(archs))])
    # sources with gaps (e.g. Edge TPU) are completed by their own predictor, as `harness adapt` does
    filled = lat.copy()
    for j in range(lat.shape[1]):
        gaps = np.isnan(lat[:, j])
        if gaps.any():
            filled[gaps, j] = fit_linear(feats[~gaps], lat[~gaps, j]).predict(feats[gaps])
    return [d[:-3] for d in devices], lat, filled, x, feats


def run_one(k: int, seed: int, t: int, names, lat, filled, x, feats, strategy: str) -> dict[str, float]:
    y = lat[:, t]
    valid = np.flatnonzero(~np.isnan(y))
    src = [j for j in range(len(names)) if j != t]
    s_all = filled[:, src]
    pool_log = np.log(np.clip(s_all[valid], 1e-3, None))
    pick = valid[sampling.select(k, pool_log, x[valid], strategy, seed)]
    rest = np.setdiff1d(valid, pick)
    ranked = rank_sources(s_all[pick], y[pick], [names[j] for j in src])
    best = src[[names[j] for j in src].index(ranked[0][0])]
    out = {}

    def score(pred: np.ndarray) -> float:
        return float(spearmanr(pred, y[rest]).statistic)

    out["proxy-alone"] = score(filled[rest, best])
    ok = ~np.isnan(lat[:, best])
    out["adaproxy"] = score(fit_adaproxy(x[ok], lat[ok, best], x[pick], y[pick], seed=seed).predict(x[rest]))
    out["target-only"] = score(fit_linear(feats[pick], y[pick]).predict(feats[rest]))
    m1 = fit_multiproxy(filled[pick][:, [best]], x[pick], y[pick], [names[best]], structure=feats[pick])
    out["ours-1proxy"] = score(m1.predict(filled[rest][:, [best]], x[rest], feats[rest]))
    mall = fit_multiproxy(s_all[pick], x[pick], y[pick], [names[j] for j in src], structure=feats[pick])
    cols = [src[[names[j] for j in src].index(n)] for n in mall.sources]
    out["ours-all"] = score(mall.predict(filled[rest][:, cols], x[rest], feats[rest]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", nargs="+", default=["oneproxy", "fbnet"], choices=list(TABLES))
    ap.add_argument("--k", nargs="+", type=int, default=[5, 10, 20, 50])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--strategy", default="random", choices=sampling.STRATEGIES)
    ap.add_argument("--compare-strategies", action="store_true",
                    help="also compare sampling strategies for ours-all at K=20")
    ap.add_argument("--cache", type=Path, default=Path("models/cache"))
    args = ap.parse_args()
    for table in args.table:
        t0 = time.perf_counter()
        names, lat, filled, x, feats = load(table, args.cache)
        ks = [k for k in args.k if k < len(lat) // 2]
        print(f"\n== {table}: {len(names)} devices x {len(lat)} architectures, leave-one-device-out, "
              f"{args.seeds} seeds, sampling={args.strategy}")
        rows = []
        for k in ks:
            per_target = {m: [] for m in METHODS}
            print(f"  K={k} ...", flush=True)
            for t in range(len(names)):
                runs = [run_one(k, s, t, names, lat, filled, x, feats, args.strategy) for s in range(args.seeds)]
                for m in METHODS:
                    per_target[m].append(np.mean([r[m] for r in runs]))
            for m in METHODS:
                v = np.array(per_target[m])
                rows.append({"K": k, "method": m, "mean": v.mean(), "worst": v.min(),
                             "worst target": names[int(v.argmin())]})
        df = pd.DataFrame(rows)
        print(df.pivot(index="method", columns="K", values="mean").loc[list(METHODS)].round(3)
              .to_string(header=[f"mean K={k}" for k in ks]))
        print(df.pivot(index="method", columns="K", values="worst").loc[list(METHODS)].round(3)
              .to_string(header=[f"worst K={k}" for k in ks]))
        if 20 in ks:
            w = df[(df.K == 20) & (df.method == "ours-all")].iloc[0]
            print(f"hardest target at K=20 for ours-all: {w['worst target']}")
        if args.compare_strategies and 20 in ks:
            for strategy in sampling.STRATEGIES:
                vals = [np.mean([run_one(20, s, t, names, lat, filled, x, feats, strategy)["ours-all"]
                                 for s in range(args.seeds)]) for t in range(len(names))]
                print(f"sampling {strategy:10s} ours-all K=20: mean {np.mean(vals):.3f} worst {np.min(vals):.3f}")
        print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
