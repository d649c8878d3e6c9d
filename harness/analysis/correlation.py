"""Rank correlation of latencies between devices (OneProxy's latency monotonicity).

Each pair of devices is compared on the architectures *both* have. Spearman's rho uses average ranks
for ties (as ``scipy.stats.spearmanr``); Kendall's tau is tau-b (``scipy.stats.kendalltau``).

Speed: devices are grouped by which architectures they cover; within a pair of groups the common
architectures are the same for every pair, so ranks are computed once per column and all pairs come
out of one matrix product. 50 devices x 15625 architectures take well under a second.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata

from harness.errors import ParameterError

METHODS = ("spearman", "kendall")
# Pairs compared on fewer common architectures than this are shown with their n but masked in matrices and
# skipped by summaries: an SRCC on 5 architectures (-0.5 or 1.0 by chance) must not dominate a reading.
DEFAULT_MIN_OVERLAP = 30


@dataclass
class Correlations:
    """All pairs: a long table plus, when bootstrapped, the draws per pair (for derived statistics)."""

    pairs: pd.DataFrame  # device_a, device_b, srcc (or tau), n_common_archs[, ci_low, ci_high]
    draws: dict[tuple[str, str], np.ndarray]

    def matrix(self, min_overlap: int = 0) -> pd.DataFrame:
        """Square symmetric matrix with 1.0 on the diagonal (NaN where a pair has too few common archs,
        or fewer than ``min_overlap``)."""
        names = list(dict.fromkeys([*self.pairs.device_a, *self.pairs.device_b]))
        m = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
        for a, b, v, n in zip(self.pairs.device_a, self.pairs.device_b, self.pairs.srcc, self.pairs.n_common_archs):
            m.loc[a, b] = m.loc[b, a] = v if n >= min_overlap else np.nan
        return m

    def overlap(self) -> pd.DataFrame:
        """Square matrix of the number of common architectures per pair."""
        names = list(dict.fromkeys([*self.pairs.device_a, *self.pairs.device_b]))
        m = pd.DataFrame(0, index=names, columns=names)
        for a, b, n in zip(self.pairs.device_a, self.pairs.device_b, self.pairs.n_common_archs):
            m.loc[a, b] = m.loc[b, a] = int(n)
        return m

    def reliable(self, min_overlap: int = DEFAULT_MIN_OVERLAP) -> pd.DataFrame:
        """Pairs with a value on at least ``min_overlap`` common architectures (what summaries use)."""
        p = self.pairs
        return p[p.srcc.notna() & (p.n_common_archs >= min_overlap)]

    def get(self, a: str, b: str) -> float:
        p = self.pairs
        row = p[((p.device_a == a) & (p.device_b == b)) | ((p.device_a == b) & (p.device_b == a))]
        return float(row.srcc.iloc[0]) if len(row) else float("nan")


def _standardise(ranks: np.ndarray) -> np.ndarray:
    centred = ranks - ranks.mean(axis=0)
    norm = np.linalg.norm(centred, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return centred / np.where(norm == 0, np.nan, norm)


def _spearman_block(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Spearman between every column of xa and every column of xb (rows aligned, no NaN)."""
    return np.clip(_standardise(rankdata(xa, axis=0)).T @ _standardise(rankdata(xb, axis=0)), -1.0, 1.0)


def _groups(mask: np.ndarray) -> list[np.ndarray]:
    """Column indices grouped by identical coverage (which rows are present)."""
    seen: dict[bytes, list[int]] = {}
    for j in range(mask.shape[1]):
        seen.setdefault(np.packbits(mask[:, j]).tobytes(), []).append(j)
    return [np.array(v) for v in seen.values()]


def pair_rng(seed: int, keys) -> np.random.Generator:
    """Bootstrap draws of a pair's own, seeded by the architectures it shares (their keys): one stream across
    pairs gave a pair another interval whenever another device was listed (0.889-0.999 alone, 0.850-1.0 beside a
    third). `correlate` and the run-noise intervals (measure.confidence) both draw from it."""
    return np.random.default_rng([seed, zlib.crc32("\n".join(map(str, keys)).encode())])


MIN_COMMON = 3  # a rank correlation on fewer common architectures is not computed (NaN, shown as –)


def correlate(wide: pd.DataFrame, method: str = "spearman", n_boot: int = 0, confidence: float = 0.95,
              seed: int = 0, min_common: int = MIN_COMMON, devices: Sequence[str] | None = None) -> Correlations:
    """Every pair of columns of ``wide`` (rows: architectures, columns: devices, NaN = missing)."""
    if method not in METHODS:
        raise ParameterError("method", f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if devices is not None:
        wide = wide[list(devices)]
    names = list(wide.columns)
    x = wide.to_numpy(dtype=float)
    mask = ~np.isnan(x)
    values: dict[tuple[int, int], tuple[float, int]] = {}
    draws: dict[tuple[str, str], np.ndarray] = {}
    groups = _groups(mask)
    for gi, ga in enumerate(groups):
        for gb in groups[gi:]:
            common = mask[:, ga[0]] & mask[:, gb[0]]
            n = int(common.sum())
            pairs = [(i, j) for i in ga for j in gb if i < j] + [(j, i) for i in ga for j in gb if j < i]
            pairs = list(dict.fromkeys(pairs))
            if not pairs:
                continue
            if n < min_common:
                for i, j in pairs:
                    values[(i, j)] = (float("nan"), n)
                continue
            xa, xb = x[np.ix_(common, ga)], x[np.ix_(common, gb)]
            col_a = {c: k for k, c in enumerate(ga)}
            col_b = {c: k for k, c in enumerate(gb)}
            if method == "spearman":
                block = _spearman_block(xa, xb)

                def pick(i, j, blk=block):
                    return blk[col_a[i], col_b[j]] if i in col_a and j in col_b else blk[col_a[j], col_b[i]]
            else:
                def pick(i, j, xc=x[common]):
                    return kendalltau(xc[:, i], xc[:, j]).statistic
            for i, j in pairs:
                values[(i, j)] = (float(pick(i, j)), n)
            if n_boot:
                idx = pair_rng(seed, wide.index[common]).integers(0, n, size=(n_boot, n))
                boot = np.empty((n_boot, len(pairs)))
                xc = x[common]
                for b in range(n_boot):
                    rows = xc[idx[b]]
                    if method == "spearman":
                        blk = _spearman_block(rows[:, ga], rows[:, gb])
                        boot[b] = [blk[col_a[i], col_b[j]] if i in col_a and j in col_b else blk[col_a[j], col_b[i]]
                                   for i, j in pairs]
                    else:
                        boot[b] = [kendalltau(rows[:, i], rows[:, j]).statistic for i, j in pairs]
                for k, (i, j) in enumerate(pairs):
                    draws[(names[i], names[j])] = boot[:, k]
    rows = []
    for (i, j), (v, n) in sorted(values.items()):
        row = {"device_a": names[i], "device_b": names[j], "srcc": v, "n_common_archs": n}
        if n_boot:
            d = draws.get((names[i], names[j]))
            # every draw NaN (a device constant on the resampled rows): the interval is unknown, said as NaN,
            # without numpy's "All-NaN slice" warning reaching a notebook or the terminal
            lo, hi = (np.nanquantile(d, [(1 - confidence) / 2, (1 + confidence) / 2])
                      if d is not None and not np.isnan(d).all() else (np.nan, np.nan))
            # the share of resamples without a value (a device nearly constant on the common architectures): the
            # interval describes the rest only, which the CLI says when it is more than a few
            row.update(ci_low=float(lo), ci_high=float(hi),
                       ci_undefined=float(np.isnan(d).mean()) if d is not None else float("nan"))
        rows.append(row)
    cols = ["device_a", "device_b", "srcc", "n_common_archs"] + (["ci_low", "ci_high", "ci_undefined"] if n_boot else [])
    return Correlations(pd.DataFrame(rows, columns=cols), draws)
