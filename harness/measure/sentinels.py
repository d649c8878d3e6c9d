"""Sentinels: fixed reference models re-timed during a campaign to see the device drift.

They are chosen to span the campaign's latency range (by MACs, before anything is measured). Each
check compares a sentinel's median with its baseline (the campaign's first check); leaving the band
``max(band, 2 x its own CI)`` means the device changed, so the models measured since the last good
check are suspect. The series is stored, so reports can draw it and the export can apply a labelled
drift correction.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.errors import HarnessError
from harness.measure.policy import Sentinels
from harness.models.spaces import Arch, SearchSpace


def choose(space: SearchSpace, archs: Sequence[Arch], policy: Sentinels) -> list[Arch]:
    """The sentinel architectures: the profile's explicit ones, else MAC quantiles of ``archs`` that compute
    something (a network with a constant output runs in microseconds, where timer jitter alone is +-100 %: as a
    sentinel it drifted out of band at every check and paused the campaign for nothing)."""
    if policy.archs:
        return space.parse_many(policy.archs)
    if not archs:
        raise HarnessError("sentinels need architectures to choose from; the campaign has none "
                           "(give policy.sentinels.archs)")
    try:
        from harness.models.passes import is_degenerate, prepare

        costed = []
        for a in archs:
            g = space.build(a)
            if not is_degenerate(prepare(g, "prune")):
                costed.append((g.macs(), a.key, a))
        by_cost = [a for *_, a in sorted(costed, key=lambda t: t[:2])] or list(archs)
    except Exception:  # spaces of model files have no graph to count: keep the given order
        by_cost = list(archs)
    n = min(policy.count, len(by_cost))
    if n == 1:
        return [by_cost[len(by_cost) // 2]]
    picks = [by_cost[round(i * (len(by_cost) - 1) / (n - 1) * 0.8 + 0.1 * (len(by_cost) - 1))] for i in range(n)]
    return list(dict.fromkeys(picks))


@dataclass
class Check:
    key: str
    median_ms: float
    baseline_ms: float
    rel_ci: float | None
    band: float

    @property
    def deviation(self) -> float:
        return self.median_ms / self.baseline_ms - 1

    @property
    def effective_band(self) -> float:
        """A check whose own median is uncertain by more than the band cannot tell drift from noise: it is
        judged by twice its CI instead (stored with the check)."""
        return max(self.band, 2 * (self.rel_ci or 0.0))

    @property
    def in_band(self) -> bool:
        return abs(self.deviation) <= self.effective_band


@dataclass
class Monitor:
    """Baselines and the verdict of each round of checks."""

    band: float
    baselines: dict[str, float] = field(default_factory=dict)
    baseline_ci: dict[str, float] = field(default_factory=dict)  # each baseline's own relative CI

    def check(self, key: str, median_ms: float, rel_ci: float | None) -> Check:
        """A check is as uncertain as the less certain of it and its baseline: a baseline timed under load (+-31 %)
        judged every later check by the check's CI alone, and steady checks fell out of band against it."""
        if key not in self.baselines:
            self.baselines[key], self.baseline_ci[key] = median_ms, rel_ci or 0.0
        base = self.baselines[key]
        return Check(key, median_ms, base, max(rel_ci or 0.0, self.baseline_ci[key]) or rel_ci, self.band)


def drift_factor(times: Sequence[float], ratios: Sequence[float], t: float) -> float:
    """Sentinel slowdown (median/baseline) at time ``t``, linearly interpolated between checks."""
    if not times:
        return 1.0
    i = bisect.bisect_left(times, t)
    if i == 0:
        return ratios[0]
    if i >= len(times):
        return ratios[-1]
    t0, t1 = times[i - 1], times[i]
    w = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
    return math.exp((1 - w) * math.log(ratios[i - 1]) + w * math.log(ratios[i]))


def corrected_latencies(store, space: str, device: str):
    """Per-architecture latency with the sentinels' recorded drift divided out (label it: it is a model).

    Each visit's latency is divided by the sentinels' slowdown at the visit's start (geometric mean over
    the sentinels of median/baseline, interpolated in time between checks of its campaign), then the
    median over rounds is taken as usual. Visits of campaigns without sentinels are left as measured.
    Returns a Series (key -> ms), empty when the device has no sentinel series.
    """
    from datetime import datetime

    import numpy as np
    import pandas as pd

    from harness.results.store import normalized

    series = store.sentinel_series(device)
    visits = store.visits(space, device)
    if series.empty or visits.empty:
        return pd.Series(dtype=float)
    ts = lambda s: datetime.fromisoformat(s).timestamp()  # noqa: E731
    series = series.assign(t=series["at"].map(ts), ratio=series.median_ms / series.baseline_ms)
    per_check = series.groupby(["campaign_id", "models_done", "phase"], sort=False).agg(
        t=("t", "max"), ratio=("ratio", lambda r: float(np.exp(np.log(r).mean())))).reset_index().sort_values("t")
    lat = normalized(visits)
    factors = []
    for cid, start in zip(visits.campaign_id, visits.started_at):
        c = per_check[per_check.campaign_id == cid]
        factors.append(drift_factor(list(c.t), list(c.ratio), ts(start)) if len(c) else 1.0)
    corrected = visits.assign(latency=lat.to_numpy() / np.asarray(factors))
    return corrected.groupby("key").latency.median()
