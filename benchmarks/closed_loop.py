"""The closed loop on leave-one-device-out with replayed public tables.

For every device of a table: it is the target (its column answers the "measurements"), every other device
is a source. The loop (harness.analysis.closed_loop, the code behind `harness transfer`) runs until it
stops; at that point its predicted front (measured latencies where known) is judged against the target's
true front: hypervolume ratio and recall (harness.analysis.pareto.check). Beside it: a fixed K = 20
(diverse sampling, same predictor) and a fixed K = the loop's own sample count. Also the seconds per round.

    python benchmarks/closed_loop.py [--table oneproxy hwnb] [--seeds 3] [--accuracy acc_cifar100_test_200ep]
                                     [--measured benchmarks/data/nb201_local_proxies_1999.csv.gz]

``--measured``: the devices measured with harness are the targets instead (the table's devices the sources):
devices no public table has, as in benchmarks/transfer.py's ``unseen`` protocol.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import TABLES, load  # noqa: E402

from harness.analysis import closed_loop as cl  # noqa: E402
from harness.analysis import pareto  # noqa: E402
from harness.errors import HarnessError  # noqa: E402


def target_pool(tab, t: int, acc: np.ndarray, src: list[int]) -> tuple[cl.Pool, np.ndarray]:
    """The pool `harness transfer` builds for target column ``t`` (sources ``src``; constant-output networks and
    architectures without a value or an accuracy left out) and the target's true latencies over it."""
    truth = tab.lat[:, t]
    ok = np.isfinite(truth) & np.isfinite(acc) & ~tab.constant
    pool = cl.Pool([str(i) for i in np.flatnonzero(ok)], tab.filled[ok][:, src], [tab.names[j] for j in src],
                   tab.x[ok], tab.both[ok], acc[ok], tab.feats.shape[1], tab.gcols_both)
    return pool, truth[ok]


def measured_rows(history: list[cl.Round], pool: cl.Pool, cfg: cl.LoopConfig) -> list[int]:
    """Pool rows a simulated loop measured: its first batch and every batch but the last round's next one."""
    return [i for r in history[:-1] for i in r.next_batch] + cl.first_batch(pool, cfg.first_batch, cfg.seed).tolist()


def fixed_k(pool: cl.Pool, truth: np.ndarray, k: int, seed: int) -> np.ndarray:
    rows = cl.first_batch(pool, k, seed)
    rows = rows[np.isfinite(truth[rows])]
    model = cl._fit(pool, rows, truth[rows])
    lat = np.exp(cl.predict_log(model, pool))
    lat[rows] = truth[rows]
    return lat


def main() -> None:
    from _cli import fraction, parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--table", nargs="+", default=["oneproxy", "hwnb"], choices=[t for t in TABLES if t != "fbnet"])
    ap.add_argument("--seeds", type=positive, default=3)
    ap.add_argument("--accuracy", default="acc_cifar100_test_200ep")
    ap.add_argument("--first-batch", type=int, default=cl.LoopConfig.first_batch)
    ap.add_argument("--batch", type=int, default=cl.LoopConfig.batch)
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--explore", type=int, default=cl.LoopConfig.explore)
    ap.add_argument("--pick", default=cl.LoopConfig.pick, choices=cl.PICKS)
    ap.add_argument("--explore-by", default=cl.LoopConfig.explore_by, choices=cl.EXPLORE_BY)
    ap.add_argument("--hv-target", type=fraction, default=cl.LoopConfig.hv_target,
                    help="stop when the expected HV ratio of the predicted front reaches this (0-1]")
    ap.add_argument("--targets", nargs="*", help="only these devices as targets")
    ap.add_argument("--measured", type=Path, nargs="*", default=[],
                    help="CSV(s) of devices measured with harness: they are the targets, the table's devices the sources")
    ap.add_argument("--cache", type=Path, default=Path("models/cache"))
    args = ap.parse_args()
    for table in args.table:
        tab = load(table, args.cache, args.measured)  # the pool reads both views: plain view first, then the second
        names, lat = tab.names, tab.lat
        acc = pd.read_csv(TABLES[table][1], usecols=[args.accuracy])[args.accuracy].to_numpy(dtype=float)
        who = (f"{len(names) - tab.n_targets} measured devices as targets, the table's {tab.n_targets} as sources"
               if args.measured else f"{len(names)} devices")
        print(f"\n== {table}: {who} x {len(lat)} architectures; loop first batch {args.first_batch}, "
              f"batch {args.batch}, budget {args.budget}, explore {args.explore} by {args.explore_by}, pick {args.pick}, hv target "
              f"{args.hv_target}; {args.seeds} seeds")
        rows, round_s = [], []
        targets = range(tab.n_targets, len(names)) if args.measured else range(tab.n_targets)
        unknown = sorted(set(args.targets or ()) - {names[t] for t in targets})
        if unknown:  # it ran no target and failed on the empty table (AttributeError)
            raise HarnessError(f"--targets {', '.join(unknown)}: not a target of {table}; its targets: "
                               f"{', '.join(names[t] for t in targets)}")
        for t in targets:
            name = names[t]
            if args.targets and name not in args.targets:
                continue
            src = list(range(tab.n_targets)) if args.measured else [j for j in range(len(names)) if j != t]
            pool, y = target_pool(tab, t, acc, src)
            for seed in range(args.seeds):
                cfg = cl.LoopConfig(first_batch=args.first_batch, batch=args.batch, budget=args.budget, seed=seed,
                                    explore=args.explore, pick=args.pick, hv_target=args.hv_target,
                                    explore_by=args.explore_by)
                hist, model = cl.simulate(pool, y, cfg)
                round_s += [r.seconds for r in hist]
                last = hist[-1]
                lat_loop = np.exp(cl.predict_log(model, pool))
                measured = measured_rows(hist, pool, cfg)
                lat_loop[measured] = y[measured]
                c_loop = pareto.check(lat_loop, y, pool.accuracy)
                c_20 = pareto.check(fixed_k(pool, y, 20, seed), y, pool.accuracy)
                c_n = pareto.check(fixed_k(pool, y, last.n_samples, seed), y, pool.accuracy)
                rows.append({"target": name, "seed": seed, "samples": last.n_samples, "stop": last.stop,
                             "rounds": len(hist), "hv": c_loop.hv_ratio, "recall": c_loop.recall,
                             "conf": last.confidence, "exp_hv": last.expected_hv, "hv_fixed20": c_20.hv_ratio, "recall_fixed20": c_20.recall,
                             "hv_fixedn": c_n.hv_ratio, "recall_fixedn": c_n.recall})
            r = pd.DataFrame([x for x in rows if x["target"] == name])
            print(f"  {name:28s} samples {r.samples.median():4.0f}  HV {r.hv.mean():.4f} recall {r.recall.mean():.3f} "
                  f"| fixed K=20 HV {r.hv_fixed20.mean():.4f} recall {r.recall_fixed20.mean():.3f} "
                  f"| fixed K=n HV {r.hv_fixedn.mean():.4f}", flush=True)
        df = pd.DataFrame(rows)
        print(f"  -- over {df.target.nunique()} targets x {args.seeds} seeds: samples median {df.samples.median():.0f} "
              f"(max {df.samples.max()}), stopped stable {np.mean(df.stop == 'stable'):.0%}; "
              f"HV ratio median {df.hv.median():.4f} mean {df.hv.mean():.4f} min {df.hv.min():.4f}; "
              f"recall mean {df.recall.mean():.3f}")
        print(f"     fixed K=20: HV median {df.hv_fixed20.median():.4f} mean {df.hv_fixed20.mean():.4f} "
              f"min {df.hv_fixed20.min():.4f}, recall {df.recall_fixed20.mean():.3f}; "
              f"fixed K=loop's n: HV mean {df.hv_fixedn.mean():.4f}, recall {df.recall_fixedn.mean():.3f}")
        worse = df[(df.samples <= 20) & (df.hv < df.hv_fixed20 - 1e-9)]
        worse_n = df[df.hv < df.hv_fixedn - 1e-9]
        print(f"     runs that stopped at <= 20 samples yet have a lower HV than fixed K=20: {len(worse)} of {len(df)}; "
              f"lower HV than fixed K = the same samples: {len(worse_n)} of {len(df)} "
              f"(mean gap {(df.hv - df.hv_fixedn).mean():+.4f})")
        over = df[df.hv < df.exp_hv - 0.01]
        print(f"     the loop's own confidence at its stop: expected HV ratio mean {df.exp_hv.mean():.4f} against the "
              f"true {df.hv.mean():.4f}; true more than 0.01 below expected: {len(over)} of {len(df)}"
              f"{' (' + ', '.join(sorted(set(over.target))) + ')' if len(over) else ''}")
        print(f"     seconds per round ({len(pool.keys)} candidates): median {np.median(round_s):.2f}, "
              f"max {np.max(round_s):.2f}")


if __name__ == "__main__":
    from _cli import run

    run(main)
