"""Rank confidence from measurement noise: resample each model's runs (and rounds), not only architectures.

For a measured device every architecture's latency is a median over rounds of medians over runs. A
bootstrap draw resamples the rounds with replacement and, inside each, the runs used by the estimate,
then recomputes the latency (reference-normalised like the store's). Draws give per-model CIs (export
columns) and, combined with resampling architectures, an SRCC interval that reflects measurement noise.
Imported devices have no runs: their values stay fixed in every draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.results.store import Store, normalized


def measured_only(store: Store, devices: list[str]) -> list[str]:
    """The measured ones of ``devices``, workloads included (``local-onnx@int8`` is ``local-onnx``'s): only they
    have runs to resample (an imported ``x@bs8`` never shares its base with a measured device: the store refuses)."""
    measured = set(store.devices().query("origin == 'measured'").name)
    return [d for d in devices if d.split("@", 1)[0] in measured]


def noise_draws(store: Store, space: str, device: str, n_boot: int, seed: int = 0,
                graph: str | None = None) -> pd.DataFrame:
    """Rows: architecture keys; columns: ``n_boot`` bootstrap latencies (ms) of ``device`` (``graph``: of the
    measurements in that graph mode, as ``Store.latencies``)."""
    visits = store.visits(space, device, graph)
    if visits.empty:
        return pd.DataFrame()
    visits = visits.assign(norm=normalized(visits))
    visits["factor"] = visits.norm / visits.median_ms  # reference normalisation of each visit (1 without)
    runs = store.runs_of(visits.id.astype(int).tolist())
    rng = np.random.default_rng(seed)
    out = {}
    for key, g in visits.groupby("key", sort=False):
        if len(g) == 1 and len(runs[int(g.id.iloc[0])]) < 2:  # one visit of one run: nothing to resample (not a
            out[key] = np.full(n_boot, np.nan)                # zero-width interval: the noise is unknown)
            continue
        per_round = []
        for mid, factor in zip(g.id.astype(int), g.factor):
            xs = np.asarray(runs[mid], dtype=float)
            idx = rng.integers(0, len(xs), size=(n_boot, len(xs)))
            per_round.append(np.median(xs[idx], axis=1) * factor)
        m = np.vstack(per_round)  # rounds x draws
        pick = rng.integers(0, m.shape[0], size=(n_boot, m.shape[0]))
        out[key] = np.median(m[pick, np.arange(n_boot)[:, None]], axis=1)
    return pd.DataFrame.from_dict(out, orient="index")


def model_ci(draws: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per-architecture CI (ci_low_ms, ci_high_ms) from noise draws."""
    q = ((1 - confidence) / 2, (1 + confidence) / 2)
    return pd.DataFrame({"ci_low_ms": draws.quantile(q[0], axis=1), "ci_high_ms": draws.quantile(q[1], axis=1)})


def srcc_with_noise(wide: pd.DataFrame, noise: dict[str, pd.DataFrame], n_boot: int, seed: int = 0,
                    confidence: float = 0.95, devices: Sequence[str] | None = None) -> pd.DataFrame:
    """SRCC of every device pair with a CI that resamples architectures *and* each measured device's runs.

    ``wide``: architectures x devices (index: keys); ``noise``: device -> draws from :func:`noise_draws`.
    """
    from scipy.stats import rankdata

    from harness.analysis.correlation import pair_rng

    names = list(devices or wide.columns)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = wide[[a, b]].dropna()
            rng = pair_rng(seed, both.index)
            n = len(both)
            if n < 3:
                continue
            keys = both.index
            da = noise[a].reindex(keys).to_numpy() if a in noise and not noise[a].empty else None
            db = noise[b].reindex(keys).to_numpy() if b in noise and not noise[b].empty else None
            va, vb = both[a].to_numpy(), both[b].to_numpy()
            with np.errstate(invalid="ignore", divide="ignore"):  # a constant device: NaN, said by the caller
                point = float(np.corrcoef(rankdata(va), rankdata(vb))[0, 1])
            vals = np.empty(n_boot)
            for k in range(n_boot):
                idx = rng.integers(0, n, size=n)
                xa = da[idx, k % da.shape[1]] if da is not None else va[idx]
                xb = db[idx, k % db.shape[1]] if db is not None else vb[idx]
                xa = np.where(np.isnan(xa), va[idx], xa)
                xb = np.where(np.isnan(xb), vb[idx], xb)
                with np.errstate(invalid="ignore", divide="ignore"):  # a resample of one repeated arch: NaN, skipped
                    vals[k] = np.corrcoef(rankdata(xa), rankdata(xb))[0, 1]
            lo, hi = (np.nanquantile(vals, [(1 - confidence) / 2, (1 + confidence) / 2]) if not np.isnan(vals).all()
                      else (np.nan, np.nan))
            rows.append({"device_a": a, "device_b": b, "srcc": point, "n_common_archs": n,
                         "ci_low": float(lo), "ci_high": float(hi), "ci_undefined": float(np.isnan(vals).mean()),
                         "noise_resampled": ", ".join(d for d, x in ((a, da), (b, db)) if x is not None) or "-"})
    return pd.DataFrame(rows)


def run_noise(store: Store, space: str, devices: list[str], n_boot: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Bootstrap draws of each measured device's latencies from its runs and rounds (imported ones have none)."""
    return {d: noise_draws(store, space, d, n_boot, seed) for d in measured_only(store, devices)}


def with_run_noise(store: Store, space: str, wide: pd.DataFrame, pairs: pd.DataFrame, n_boot: int, seed: int = 0,
                   confidence: float = 0.95) -> pd.DataFrame:
    """``pairs`` (device_a, device_b, srcc, ci_low, ci_high...) with the intervals of pairs that involve a measured
    device re-drawn to also resample its runs and rounds (``noise_resampled`` names which): what `harness srcc
    --ci` and ``harness.analysis.srcc(ci=...)`` both report. Pairs of imported devices keep theirs."""
    noise = run_noise(store, space, list(wide.columns), n_boot, seed)
    if not noise:
        return pairs
    redrawn = srcc_with_noise(wide, noise, n_boot, seed, confidence)
    if not len(redrawn):
        return pairs
    return pairs.drop(columns=["ci_low", "ci_high", "ci_undefined"], errors="ignore").merge(
        redrawn[["device_a", "device_b", "ci_low", "ci_high", "ci_undefined", "noise_resampled"]],
        on=["device_a", "device_b"], how="left")


def indistinguishable(ci: pd.DataFrame) -> int:
    """How many pairs of architectures have overlapping CIs (the device cannot tell which is faster). Sorted by
    the lower bound, architecture i overlaps every later one whose lower bound is <= its upper: O(n log n)."""
    c = ci.dropna()
    lo, hi = c.ci_low_ms.to_numpy(), c.ci_high_ms.to_numpy()
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    ends = np.searchsorted(lo, hi, side="right")
    return int(np.maximum(ends - np.arange(len(lo)) - 1, 0).sum())


PAIR_BLOCK = 2_000_000  # pairs compared per numpy step: ~16 MB per array, whatever the space's size


def compare(wide: pd.DataFrame, a: str, b: str, ci: dict[str, pd.DataFrame], top: int | None = None) -> dict:
    """Where devices ``a`` and ``b`` order architecture pairs differently, and whether noise explains it (a flip
    between two models whose CIs overlap on either device); the ``top`` largest real disagreements by log gap
    (None: all of them, which for two unlike devices over a whole space is millions).

    All n(n-1)/2 pairs, in blocks of rows against everything after them: NB201's 15,625 architectures are 122
    million pairs, which a Python loop took minutes and 6.5 GB for."""
    both = wide[[a, b]].dropna()
    keys = list(both.index)
    va, vb = both[a].to_numpy(float), both[b].to_numpy(float)
    la, lb = np.log(np.clip(va, 1e-9, None)), np.log(np.clip(vb, 1e-9, None))
    bounds = [(c.ci_low_ms.to_numpy(float), c.ci_high_ms.to_numpy(float))
              for c in (ci[d].reindex(keys) for d in (a, b) if d in ci)]
    n = len(keys)
    rows_per_block = max(1, PAIR_BLOCK // max(n, 1))
    flipped = noisy = 0
    cand_gap, cand_i, cand_j = [], [], []
    for start in range(0, n, rows_per_block):
        i = np.arange(start, min(start + rows_per_block, n))
        j = np.arange(start, n)
        later = j[None, :] > i[:, None]
        flip = later & ((va[i, None] - va[None, j]) * (vb[i, None] - vb[None, j]) < 0)
        if not flip.any():
            continue
        blur = np.zeros_like(flip)
        for lo, hi in bounds:  # NaN (no CI) compares False: never blurred
            blur |= (lo[i, None] <= hi[None, j]) & (lo[None, j] <= hi[i, None])
        noisy += int((flip & blur).sum())
        real = flip & ~blur
        flipped += int(flip.sum())
        ri, rj = np.nonzero(real)
        if len(ri) == 0 or top == 0:
            continue
        gap = np.abs(la[i[ri]] - la[j[rj]]) + np.abs(lb[i[ri]] - lb[j[rj]])
        if top is not None and len(gap) > top:
            keep = np.argpartition(-gap, top - 1)[:top]
            ri, rj, gap = ri[keep], rj[keep], gap[keep]
        cand_gap.append(gap)
        cand_i.append(i[ri])
        cand_j.append(j[rj])
    listed = []
    if cand_gap:
        gap, ii, jj = np.concatenate(cand_gap), np.concatenate(cand_i), np.concatenate(cand_j)
        for k in np.argsort(-gap, kind="stable")[:top]:
            x, y = int(ii[k]), int(jj[k])
            listed.append((float(gap[k]), keys[x], keys[y], va[x], va[y], vb[x], vb[y]))
    own = {d: indistinguishable(ci[d].reindex(keys)) for d in (a, b) if d in ci}
    return {"architectures": n, "pairs": n * (n - 1) // 2, "flipped": flipped, "flipped_within_noise": noisy,
            "real": flipped - noisy, "real_disagreements": listed, "indistinguishable": own}
