"""Does `harness search --confidence` keep its promise? Reliability of its P(under the budget).

For each device of a public table held out as the target (the others are sources, as in
benchmarks/closed_loop.py), the closed loop runs as `harness transfer` would (default settings; measurements
looked up in the table) and leaves its predictor; `search` then judges each unmeasured architecture's prediction
with that predictor's leave-one-out error (log-normal, sigma the RMS of the LOO log errors), for budgets at the
10/25/50/75 % quantiles of the target's latencies. Printed: claimed P against the observed share of architectures
truly under the budget, per bin of P, and what `--confidence 0.9` keeps.

    python benchmarks/search_confidence.py [--table oneproxy] [--seeds 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from closed_loop import measured_rows, target_pool  # noqa: E402
from transfer import TABLES, load  # noqa: E402

from harness.analysis import closed_loop as cl  # noqa: E402
from harness.analysis.search import predictor_sigma  # noqa: E402

BUDGET_QUANTILES = (0.1, 0.25, 0.5, 0.75)


def main() -> None:
    from _cli import parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--table", default="oneproxy", choices=[t for t in TABLES if t != "fbnet"])
    ap.add_argument("--seeds", type=positive, default=1)
    ap.add_argument("--accuracy", default="acc_cifar100_test_200ep")
    ap.add_argument("--cache", type=Path, default=Path("models/cache"))
    args = ap.parse_args()
    tab = load(args.table, args.cache)
    acc = pd.read_csv(TABLES[args.table][1], usecols=[args.accuracy])[args.accuracy].to_numpy(dtype=float)
    parts = []
    for t in range(tab.n_targets):
        pool, y = target_pool(tab, t, acc, [j for j in range(len(tab.names)) if j != t])
        for seed in range(args.seeds):
            cfg = cl.LoopConfig(seed=seed)
            hist, model = cl.simulate(pool, y, cfg)
            sigma = predictor_sigma({"metrics": {"round": hist[-1].to_json()}})  # as search reads a saved loop
            pred = np.exp(cl.predict_log(model, pool))
            measured = set(measured_rows(hist, pool, cfg))
            rest = np.array([i for i in range(len(y)) if i not in measured])
            for q in BUDGET_QUANTILES:
                budget = np.quantile(y, q)
                p = norm.cdf((np.log(budget) - np.log(pred[rest])) / sigma)
                parts.append(pd.DataFrame({"target": tab.names[t], "p": p, "under": y[rest] <= budget}))
        print(f"  {tab.names[t]:26s} loop stopped at {hist[-1].n_samples} samples", flush=True)
    df = pd.concat(parts, ignore_index=True)
    df["P(under) claimed"] = pd.cut(df.p, [0, .1, .5, .7, .8, .9, .95, .99, 1.0], include_lowest=True)
    print(f"\n== {args.table}: {tab.n_targets} targets x {args.seeds} seed(s) x budgets at the "
          f"{', '.join(f'{q:.0%}' for q in BUDGET_QUANTILES)} latency quantiles")
    print(df.groupby("P(under) claimed", observed=True)
          .agg(mean_claimed=("p", "mean"), observed_under=("under", "mean"), architectures=("p", "size"))
          .round(3).to_string())
    kept = df[df.p >= 0.9]
    per = kept.groupby("target").under.mean()
    print(f"--confidence 0.9 keeps {len(kept)}: {kept.under.mean():.4f} truly under the budget; worst target "
          f"{per.idxmin()} {per.min():.3f}")


if __name__ == "__main__":
    from _cli import run

    run(main)
