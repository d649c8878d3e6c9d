"""Leave-one-device-out transfer: how well does each method rank an unseen device from K measurements?

For every device of a public table: it is the target, the others are sources. K target architectures are
measured (drawn by a sampling strategy), the rest are ranked by each method; SRCC against the target's
real latencies on the architectures NOT among the K. Mean over seeds per target, then mean and worst
over targets. Protocols, reported side by side:

  plain    every other device is a source
  family   the held-out device's whole family (GPU, desktop/server CPU, phone/ARM board, accelerator; see
           FAMILY) is left out of the sources too: a device unlike anything seen before
  unseen   (with --measured) each measured device is the target and the table's devices are the sources:
           devices no public table has (this machine's CPU with onnxruntime/LiteRT, pruned or kept graph,
           batch 8, int8), measured with harness

Every strategy draws differently per seed (``diverse`` starts at the median-latency architecture for seed 0
and at a random one otherwise): one draw's SRCC moves by +-0.03 on the hardest targets, so figures are means
over ``--seeds`` draws (default 10).

Methods (the same library code as `harness adapt`):

  proxy-alone   the source whose SRCC on the K samples is best, its raw latency ranking
  adaproxy      OneProxy's AdaProxy on that same single proxy (one-hot linear, L1-penalised correction)
  target-only   ridge on one-hot + graph features of the K samples only
  ours-1proxy   multi-proxy ridge restricted to that single proxy (+ a structure correction),
                ensembled with the target's own structure models by leave-one-out error
  ours-all      the same with every source (non-negative source weights): candidates with no correction,
                a structure correction on the plain view (one-hot + graph features of the pruned graph) or
                on both views of dead code (plus the live-edges-only one-hot, NB201's dead
                convolutions written as none, and the graph features of the kept graph), corrected ones
                also on the three best sources by SRCC only; the three best by LOO
                and the target's own structure models (plain view, both views) averaged by inverse LOO error
  ours-plain    ours-all on the plain view only (the method before both views were wired in)

    python benchmarks/transfer.py [--seeds 10] [--k 5 10 20 50] [--table oneproxy|hwnb|fbnet ...]
                                  [--protocol plain family] [--strategy diverse] [--compare-strategies] [--check-loo]
                                  [--measured benchmarks/data/nb201_local_proxies_1999.csv.gz] [--round-ms 1]

``--round-ms R``: each target's table is rounded to whole multiples of R ms (at least R) — its K samples and the
truth it is judged on — as published tables of phones often are; the sources keep their values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from harness.analysis import sampling
from harness.analysis.features import GraphFeatures, edge_activity, graph_columns, live_onehot, onehot
from harness.analysis.transfer import fit_adaproxy, fit_linear, fit_multiproxy, rank_sources
from harness.analysis.workflow import fill_gaps, held_out_quality
from harness.models.spaces import get_space

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TABLES = {
    "oneproxy": ("nb201", DATA / "oneproxy" / "nb201_oneproxy_18dev_1999.csv.gz"),
    "hwnb": ("nb201", DATA / "hwnasbench" / "nb201_hwnasbench_cifar10_4dev_15625.csv.gz"),
    "fbnet": ("fbnet", DATA / "hwnasbench" / "fbnet_hwnasbench_cifar100_4dev_5000.csv.gz"),
}
METHODS = ("proxy-alone", "adaproxy", "target-only", "ours-1proxy", "ours-all", "ours-plain")
# device families for the hard protocol (by what the hardware is; eagle_gtx1080ti's values are a near-copy of
# the i7's, see the MANIFEST, so it sits with the CPUs)
FAMILY = {
    "hwnb_edgegpu": "gpu", "eagle_jetson_nano_fp32": "gpu", "eagle_jetson_nano_fp16": "gpu",
    "eagle_i7_7820x": "cpu", "eagle_gtx1080ti": "cpu",
    "hwnb_pixel3": "phone", "hwnb_raspi4": "phone", "eagle_sd855_cpu_int8": "phone", "eagle_sd855_gpu_int8": "phone",
    "nnmeter_adreno630_gpu": "phone", "nnmeter_adreno640_gpu": "phone", "nnmeter_cortexa76_cpu": "phone",
    "hwnb_edgetpu": "accelerator", "hwnb_eyeriss": "accelerator", "hwnb_fpga": "accelerator",
    "eagle_edgetpu_int8": "accelerator", "eagle_sd855_dsp_int8": "accelerator", "nnmeter_myriad_vpu": "accelerator",
}


@dataclass
class Table:
    """A public table as the methods read it. Columns ``0..n_targets-1`` of ``lat``/``filled`` are the table's
    devices (each is held out in turn); columns past them are measured sources (``--measured``): sources only."""

    names: list[str]
    lat: np.ndarray                   # (N, D) ms, NaN where a device has no value
    filled: np.ndarray                # the same, gaps completed by the device's own predictor
    x: np.ndarray                     # one-hot
    feats: np.ndarray                 # plain view [one-hot, graph (pruned)]
    both: np.ndarray                  # [plain view, live one-hot, graph (kept), edge activity]
    gcols_plain: list[tuple[int, int]]
    gcols_both: list[tuple[int, int]]
    n_targets: int
    constant: np.ndarray              # networks whose output is a constant: never picked (as `harness suggest`)

    def family(self, j: int) -> str:
        return FAMILY.get(self.names[j], self.names[j])


def features(space, archs, cache: Path, views: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``plain`` = [one-hot, graph (pruned)]; ``both`` = [one-hot, graph (pruned), live one-hot, graph (kept), edge
    activity]: the plain view's columns first, as workflow.Context.structure writes them; with the own-model
    blocks' columns."""
    x = onehot(space, archs)
    blocks = [x]
    for mode in (("prune", "keep") if views == "both" else ("prune",)):
        if mode == "keep":
            blocks.append(live_onehot(space, archs))
        gf = GraphFeatures(space, cache, mode)
        blocks.append(gf.matrix(archs, gf.vocabulary(archs)))
    edges = edge_activity(space, archs) if views == "both" else np.zeros((len(archs), 0))
    feats = np.hstack(blocks + [edges])
    return feats, graph_columns(x.shape[1], blocks[1].shape[1], blocks[3].shape[1] if views == "both" else 0,
                                feats.shape[1], edges.shape[1])


def load(table: str, cache: Path, measured: list[Path] = ()) -> Table:
    """measured: CSVs of sources measured with harness (`harness export`: the space's key column and
    ``<device>_ms`` columns), joined on the key; architectures they lack are completed like gaps."""
    space_name, path = TABLES[table]
    space = get_space(space_name)
    df = pd.read_csv(path)
    key_col = space.key_columns[0]
    devices = [c for c in df.columns if c.endswith("_ms")]
    n_targets = len(devices)
    for m in measured:
        from _cli import read_table  # benchmarks/ is on sys.path when a script runs

        extra = read_table(m)
        if key_col not in extra.columns:
            print(f"({m} has no {key_col} column: not a {space_name} table, left out for {table})")
            continue
        cols = [c for c in extra.columns if c.endswith("_ms") and c not in devices]
        df = df.merge(extra[[key_col] + cols], on=key_col, how="left")
        devices += cols
    archs = [space.parse(str(k)) for k in df[key_col]]
    lat = df[devices].to_numpy(dtype=float)
    x = onehot(space, archs)
    feats, gcols_plain = features(space, archs, cache, "plain")
    both, gcols_both = features(space, archs, cache, "both")
    # sources with gaps (e.g. Edge TPU) are completed by their own predictor, as `harness adapt` does
    filled = lat.copy()
    constant = GraphFeatures(space, cache, "prune").constant_output(archs)
    for j in range(lat.shape[1]):
        gaps = np.isnan(lat[:, j])
        if gaps.any():  # as harness.analysis.workflow.source_latencies fills them
            filled[gaps, j] = fill_gaps(fit_linear(feats[~gaps], lat[~gaps, j]).predict(feats[gaps]), lat[~gaps, j],
                                        constant[gaps])
    return Table([d[:-3] for d in devices], lat, filled, x, feats, both, gcols_plain, gcols_both, n_targets, constant)


def targets_for(tab: Table, protocol: str) -> range:
    return range(tab.n_targets, len(tab.names)) if protocol == "unseen" else range(tab.n_targets)


def sources_for(t: int, tab: Table, protocol: str) -> list[int]:
    """Every other device (``plain``), or every device of another family (``family``); measured sources
    count as desktop CPUs unless FAMILY names them. ``unseen``: the table's devices (the other measured
    devices are the same CPU)."""
    if protocol == "unseen":
        return list(range(tab.n_targets))
    others = [j for j in range(len(tab.names)) if j != t]
    if protocol == "plain":
        return others
    return [j for j in others if (FAMILY.get(tab.names[j], "cpu") if j >= tab.n_targets else tab.family(j))
            != tab.family(t)]


FIRST, BATCH = 10, 5  # the sequential strategy: a diverse first batch, then rounds (as `harness transfer` does)


def uncertain_picks(k: int, seed: int, tab: Table, y: np.ndarray, valid: np.ndarray, src: list[int]) -> np.ndarray:
    """`harness suggest --strategy uncertain` round by round: FIRST diverse, then BATCH at a time where the
    predictor fitted on what is measured so far disagrees with itself most."""
    s_all, x = tab.filled[:, src], tab.x
    names = [tab.names[j] for j in src]
    pool_log = np.log(np.clip(s_all[valid], 1e-3, None))
    rows = list(sampling.select(min(FIRST, k), pool_log, x[valid], "diverse", seed))
    while len(rows) < k:
        p = valid[rows]
        m = fit_multiproxy(s_all[p], x[p], y[p], names, structure=tab.both[p], plain_width=tab.feats.shape[1],
                           graph_cols=tab.gcols_both)
        cols = [names.index(n) for n in m.sources]
        spread = m.disagreement(s_all[valid][:, cols], x[valid], tab.both[valid])
        rows += sampling.select_uncertain(min(BATCH, k - len(rows)), spread, pool_log, x[valid], np.array(rows),
                                          seed).tolist()
    return valid[rows]


def run_one(k: int, seed: int, t: int, tab: Table, strategy: str, src: list[int],
            methods=METHODS) -> dict[str, float]:
    y = tab.lat[:, t]
    x, filled = tab.x, tab.filled
    # what `suggest` may pick, and what is ranked: networks with a constant output are neither (no search wants them)
    valid = np.flatnonzero(~np.isnan(y) & ~tab.constant)
    s_all = filled[:, src]
    pool_log = np.log(np.clip(s_all[valid], 1e-3, None))
    pick = (uncertain_picks(k, seed, tab, y, valid, src) if strategy in sampling.SEQUENTIAL
            else valid[sampling.select(k, pool_log, x[valid], strategy, seed)])
    rest = np.setdiff1d(valid, pick)
    src_names = [tab.names[j] for j in src]
    ranked = rank_sources(s_all[pick], y[pick], src_names)
    best = src[src_names.index(ranked[0][0])]
    out = {}

    def score(pred: np.ndarray) -> float:
        return float(spearmanr(pred, y[rest]).statistic)

    if "proxy-alone" in methods:
        out["proxy-alone"] = score(filled[rest, best])
    if "adaproxy" in methods:
        ok = ~np.isnan(tab.lat[:, best])
        out["adaproxy"] = score(fit_adaproxy(x[ok], tab.lat[ok, best], x[pick], y[pick], seed=seed).predict(x[rest]))
    if "target-only" in methods:
        out["target-only"] = score(fit_linear(tab.feats[pick], y[pick]).predict(tab.feats[rest]))
    width = tab.feats.shape[1]
    if "ours-1proxy" in methods:
        m1 = fit_multiproxy(filled[pick][:, [best]], x[pick], y[pick], [tab.names[best]], structure=tab.both[pick],
                            plain_width=width, graph_cols=tab.gcols_both)
        out["ours-1proxy"] = score(m1.predict(filled[rest][:, [best]], x[rest], tab.both[rest]))
    for label, fv, w, gcols in (("ours-all", tab.both, width, tab.gcols_both),
                                ("ours-plain", tab.feats, None, tab.gcols_plain)):
        if label not in methods:
            continue
        mall = fit_multiproxy(s_all[pick], x[pick], y[pick], src_names, structure=fv[pick], plain_width=w,
                              graph_cols=gcols)
        cols = [src[src_names.index(n)] for n in mall.sources]
        out[label] = score(mall.predict(filled[rest][:, cols], x[rest], fv[rest]))
    return out


def coarse(tab: Table, t: int, step: float) -> Table:
    """The table with target ``t``'s latencies rounded to whole ``step`` ms (never below ``step``)."""
    lat = tab.lat.copy()
    lat[:, t] = np.maximum(np.round(lat[:, t] / step) * step, step)
    return replace(tab, lat=lat)


def loo_srcc(tab: Table, pick: np.ndarray, y: np.ndarray, src: list[int]) -> float:
    """What `harness adapt` reports (workflow.held_out_quality): SRCC of leave-one-out predictions, the whole
    fit redone per left-out sample."""
    names = [tab.names[j] for j in src]

    def refit(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        p, q = pick[train], pick[test]
        m = fit_multiproxy(tab.filled[p][:, src], tab.x[p], y[p], names, structure=tab.both[p],
                           plain_width=tab.feats.shape[1], graph_cols=tab.gcols_both)
        cols = [src[names.index(n)] for n in m.sources]
        return m.predict(tab.filled[q][:, cols], tab.x[q], tab.both[q])

    return held_out_quality(refit, y[pick])["loo_srcc"]


def check_loo(tab: Table, targets, protocol: str, seeds: int) -> None:
    from harness.cli.predict import LOW_LOO_SRCC

    runs = []
    for t in targets:
        src, y = sources_for(t, tab, protocol), tab.lat[:, t]
        valid = np.flatnonzero(~np.isnan(y) & ~tab.constant)
        for seed in range(seeds):
            pick = valid[sampling.select(20, np.log(np.clip(tab.filled[valid][:, src], 1e-3, None)), tab.x[valid],
                                         "diverse", seed)]
            true = run_one(20, seed, t, tab, "diverse", src, ("ours-all",))["ours-all"]
            runs.append((loo_srcc(tab, pick, y, src), true))
    loo, true = np.array(runs).T
    print(f"leave-one-out SRCC at K=20 vs the true SRCC ({len(runs)} runs): correlation "
          f"{np.corrcoef(loo, true)[0, 1]:.2f}")
    for thr in sorted({0.85, LOW_LOO_SRCC, 0.95}):
        low = loo < thr
        print(f"  warn below {thr:.2f}{' (adapt)' if thr == LOW_LOO_SRCC else ''}: {low.mean():.0%} of runs; of those "
              f"ranked < 0.90 {low[true < 0.9].mean() if (true < 0.9).any() else float('nan'):.0%} warned, of those "
              f"ranked >= 0.95 {low[true >= 0.95].mean():.0%} warned")


def main() -> None:
    from _cli import nonnegative, parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--table", nargs="+", default=["oneproxy", "fbnet"], choices=list(TABLES))
    ap.add_argument("--k", nargs="+", type=positive, default=[5, 10, 20, 50])
    ap.add_argument("--seeds", type=positive, default=10)
    ap.add_argument("--strategy", default="diverse", choices=sampling.STRATEGIES + sampling.SEQUENTIAL)
    ap.add_argument("--protocol", nargs="+", default=["plain", "family"], choices=["plain", "family", "unseen"],
                    help="unseen (added by --measured): the measured devices are the targets")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--round-ms", type=nonnegative, default=0.0,
                    help="round each target's latencies to whole multiples of this many ms (a coarse published table)")
    ap.add_argument("--check-loo", action="store_true",
                    help="at K=20, ours-all: does the leave-one-out SRCC `harness adapt` prints (and warns on below "
                         "harness.cli.predict.LOW_LOO_SRCC) tell a badly ranked target from a well ranked one?")
    ap.add_argument("--compare-strategies", action="store_true",
                    help="also compare sampling strategies for ours-all at K=20")
    ap.add_argument("--per-target", action="store_true", help="print every target's SRCC at every K")
    ap.add_argument("--measured", type=Path, nargs="*", default=[],
                    help="CSV(s) of sources measured with harness (e.g. benchmarks/data/nb201_local_proxies_1999.csv.gz):"
                         " added to every target's sources, never held out")
    ap.add_argument("--cache", type=Path, default=Path("models/cache"))
    args = ap.parse_args()
    methods = tuple(args.methods)
    with threadpool_limits(1):  # tiny fits: BLAS threads only contend
        for table in args.table:
            run_table(table, args, methods)


def usable_ks(ks: list[int], n: int, table: str) -> list[int]:
    """The Ks below half of the table's n architectures (the rest is what is ranked); the others are named, and
    none at all is an error (a --k 1000 run on 1999 ended in a pandas KeyError, the Ks dropped silently)."""
    ok = [k for k in ks if k < n // 2]
    too_big = sorted(set(ks) - set(ok))
    if too_big and not ok:
        raise SystemExit(f"--k {' '.join(map(str, too_big))}: {table} has {n} architectures; K must be below half "
                         f"of them ({n // 2}) to leave the rest to rank")
    if too_big:
        print(f"({table}: K = {', '.join(map(str, too_big))} left out: at least half of its {n} architectures)")
    return ok


def run_table(table: str, args, methods: tuple[str, ...]) -> None:
    t0 = time.perf_counter()
    tab = load(table, args.cache, args.measured)
    names = tab.names
    ks = usable_ks(args.k, len(tab.lat), table)
    measured = names[tab.n_targets:]
    protocols = list(args.protocol) + (["unseen"] if measured and "unseen" not in args.protocol else [])
    for protocol in protocols:
        targets = targets_for(tab, protocol)
        if protocol == "unseen":
            if not measured:
                raise SystemExit("--protocol unseen needs --measured")
            what = f"{len(targets)} measured devices as targets, the table's {tab.n_targets} devices as sources"
        else:
            what = (f"{tab.n_targets} devices x {len(tab.lat)} architectures, leave-one-device-out"
                    f"{' with its family left out of the sources' if protocol == 'family' else ''}"
                    f"{'; measured sources: ' + ', '.join(measured) if measured else ''}")
        if args.round_ms:
            what += f"; every target rounded to whole {args.round_ms:g} ms"
        print(f"\n== {table} [{protocol}]: {what}, {args.seeds} seeds, sampling={args.strategy}")
        rows, per = [], {}
        for k in ks:
            per_target = {m: [] for m in methods}
            for t in targets:
                src = sources_for(t, tab, protocol)
                tt = coarse(tab, t, args.round_ms) if args.round_ms else tab
                runs = [run_one(k, s, t, tt, args.strategy, src, methods) for s in range(args.seeds)]
                for m in methods:
                    per_target[m].append(np.mean([r[m] for r in runs]))
            per[k] = per_target
            for m in methods:
                v = np.array(per_target[m])
                rows.append({"K": k, "method": m, "mean": v.mean(), "worst": v.min(),
                             "worst target": names[targets[int(v.argmin())]]})
        df = pd.DataFrame(rows)
        print(df.pivot(index="method", columns="K", values="mean").loc[list(methods)].round(3)
              .to_string(header=[f"mean K={k}" for k in ks]))
        print(df.pivot(index="method", columns="K", values="worst").loc[list(methods)].round(3)
              .to_string(header=[f"worst K={k}" for k in ks]))
        if 20 in ks:
            for m in ("ours-all", "ours-plain"):
                if m in methods:
                    w = df[(df.K == 20) & (df.method == m)].iloc[0]
                    print(f"hardest target at K=20 for {m}: {w['worst target']}")
        if args.per_target:  # every K's figures per target (K = 20 alone before)
            for m in methods:
                print(f"{m} per target:")
                print(pd.DataFrame({f"K={k}": per[k][m] for k in ks}, index=[names[t] for t in targets])
                      .round(3).to_string())
        if args.check_loo:
            check_loo(tab, targets, protocol, args.seeds)
        if args.compare_strategies and 20 in ks:
            for strategy in sampling.STRATEGIES + sampling.SEQUENTIAL:
                vals = [np.mean([run_one(20, s, t, tab, strategy, sources_for(t, tab, protocol), ("ours-all",))
                                 ["ours-all"] for s in range(args.seeds)]) for t in targets]
                print(f"sampling {strategy:10s} ours-all K=20: mean {np.mean(vals):.3f} worst {np.min(vals):.3f}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    from _cli import run

    run(main)
