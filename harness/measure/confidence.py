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

    names = list(devices or wide.columns)
    rng = np.random.default_rng(seed)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = wide[[a, b]].dropna()
            n = len(both)
            if n < 3:
                continue
            keys = both.index
            da = noise[a].reindex(keys).to_numpy() if a in noise and not noise[a].empty else None
            db = noise[b].reindex(keys).to_numpy() if b in noise and not noise[b].empty else None
            va, vb = both[a].to_numpy(), both[b].to_numpy()
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
            lo, hi = np.nanquantile(vals, [(1 - confidence) / 2, (1 + confidence) / 2])
            rows.append({"device_a": a, "device_b": b, "srcc": point, "n_common_archs": n,
                         "ci_low": float(lo), "ci_high": float(hi),
                         "noise_resampled": ", ".join(d for d, x in ((a, da), (b, db)) if x is not None) or "-"})
    return pd.DataFrame(rows)


def indistinguishable(ci: pd.DataFrame) -> set[tuple[str, str]]:
    """Pairs of architectures whose CIs overlap: the device cannot tell which is faster."""
    c = ci.dropna().sort_values("ci_low_ms")
    keys, lo, hi = list(c.index), c.ci_low_ms.to_numpy(), c.ci_high_ms.to_numpy()
    out = set()
    for i in range(len(keys)):
        j = i + 1
        while j < len(keys) and lo[j] <= hi[i]:
            out.add(tuple(sorted((keys[i], keys[j]))))
            j += 1
    return out


def compare(wide: pd.DataFrame, a: str, b: str, ci: dict[str, pd.DataFrame]) -> dict:
    """Where devices ``a`` and ``b`` order architecture pairs differently, and whether noise explains it."""
    both = wide[[a, b]].dropna()
    keys = list(both.index)
    va, vb = both[a].to_numpy(), both[b].to_numpy()
    blur = set()
    for d in (a, b):
        if d in ci:
            blur |= indistinguishable(ci[d].reindex(keys))
    flips, noisy = [], 0
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            if (va[i] - va[j]) * (vb[i] - vb[j]) < 0:
                pair = tuple(sorted((keys[i], keys[j])))
                if pair in blur:
                    noisy += 1
                else:
                    gap = abs(np.log(va[i] / va[j])) + abs(np.log(vb[i] / vb[j]))
                    flips.append((gap, keys[i], keys[j], va[i], va[j], vb[i], vb[j]))
    n_pairs = len(keys) * (len(keys) - 1) // 2
    own = {d: len(indistinguishable(ci[d].reindex(keys))) for d in (a, b) if d in ci}
    return {"architectures": len(keys), "pairs": n_pairs, "flipped": len(flips) + noisy, "flipped_within_noise": noisy,
            "real_disagreements": sorted(flips, reverse=True), "indistinguishable": own}
