"""Which proxy device ranks the targets best? The decision OneProxy leaves to the user."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.analysis.correlation import correlate
from harness.errors import HarnessError, ParameterError, did_you_mean


def rank_proxies(wide: pd.DataFrame, targets: Sequence[str], candidates: Sequence[str] | None = None,
                 method: str = "spearman", n_boot: int = 0, confidence: float = 0.95, seed: int = 0,
                 min_common: int = 3) -> pd.DataFrame:
    """One row per candidate proxy: SRCC to each target, mean and worst, with bootstrap CIs if asked.

    Sorted by how many targets the SRCC is known for (a pair on fewer than ``min_common`` architectures is
    unknown), then by mean SRCC (best first), ties broken by the worst target: a mean over some targets is not
    comparable with a mean over all of them, so a proxy known for fewer targets never ranks above a complete one.
    Each SRCC is its pair's own, on the architectures the two share: with targets measured on different sets
    (``min_common_archs`` < ``max_common_archs``) the mean mixes them, which the CLI says.
    """
    targets = list(dict.fromkeys(targets))
    if not targets:
        raise ParameterError("targets", "name at least one target device to rank proxies for")
    unknown = [d for d in [*targets, *(candidates or [])] if d not in wide.columns]
    if unknown:
        raise HarnessError(f"unknown device(s) {', '.join(unknown)}{did_you_mean(unknown[0], wide.columns)}; have "
                           f"{', '.join(wide.columns)}")
    candidates = [d for d in (candidates or wide.columns) if d not in targets]
    if not candidates:
        raise HarnessError("no candidate proxies left once the targets are removed")
    corr = correlate(wide[[*candidates, *targets]], method=method, n_boot=n_boot, seed=seed, min_common=min_common)
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    rows = []
    for c in candidates:
        per = {t: corr.get(c, t) for t in targets}
        vals = np.array(list(per.values()))
        n_common = [int(corr.pairs[((corr.pairs.device_a == c) & (corr.pairs.device_b == t)) |
                                   ((corr.pairs.device_a == t) & (corr.pairs.device_b == c))].n_common_archs.iloc[0])
                    for t in targets]
        row = {"proxy": c, "mean_srcc": float(np.nanmean(vals)) if not np.isnan(vals).all() else np.nan,
               "worst_srcc": float(np.nanmin(vals)) if not np.isnan(vals).all() else np.nan,
               "worst_target": targets[int(np.nanargmin(vals))] if not np.isnan(vals).all() else None,
               "min_common_archs": min(n_common), "max_common_archs": max(n_common),
               "targets_known": int((~np.isnan(vals)).sum())}
        if n_boot:
            draws = [corr.draws.get((c, t), corr.draws.get((t, c))) for t in targets]
            if all(d is not None for d in draws):
                stack = np.vstack(draws)  # targets x draws
                row.update(mean_ci_low=float(np.nanquantile(stack.mean(0), lo_q)),
                           mean_ci_high=float(np.nanquantile(stack.mean(0), hi_q)),
                           worst_ci_low=float(np.nanquantile(stack.min(0), lo_q)),
                           worst_ci_high=float(np.nanquantile(stack.min(0), hi_q)))
        row.update({f"srcc_{t}": v for t, v in per.items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.sort_values(["targets_known", "mean_srcc", "worst_srcc"], ascending=False,
                          na_position="last").reset_index(drop=True)
