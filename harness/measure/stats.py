"""Per-model statistics: distribution-free CI of the median, outlier and preemption flags, the estimate.

Why the median of *clean* runs: on a shared CPU a run during which another process held the core is
slowed by the scheduler's time slice (4 ms here), not by the model. Such runs are recognised from the
run-queue delay of our threads (``/proc/<tid>/schedstat``), flagged and left out; what remains is what
the model costs. Nothing is deleted: every run stays in the store with its flags.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.devices.runner import median_ci_ranks, median_rel_ci  # the stopping rule the device runs

__all__ = ["median_ci_ranks", "median_rel_ci", "median_ci", "mad_outliers", "Estimate", "estimate",
           "PREEMPTED", "OUTLIER"]

PREEMPTED = 1  # run flag bits, stored per run
OUTLIER = 2


def median_ci(xs: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free (order-statistic) CI of the median; None for too few values."""
    ranks = median_ci_ranks(len(xs), confidence)
    if ranks is None:
        return None
    s = sorted(xs)
    return s[ranks[0]], s[ranks[1]]


def mad_outliers(xs: Sequence[float], k: float) -> list[bool]:
    """Flags values above median + k * MAD (scaled to sigma); a zero MAD flags nothing."""
    if len(xs) < 3:
        return [False] * len(xs)
    med = statistics.median(xs)
    mad = 1.4826 * statistics.median(abs(x - med) for x in xs)
    if mad <= 0:
        return [False] * len(xs)
    return [x > med + k * mad for x in xs]


@dataclass
class Estimate:
    median_ms: float
    ci_low_ms: float | None
    ci_high_ms: float | None
    n_used: int
    n_preempted: int
    n_outliers: int
    flags: list[int] = field(default_factory=list)
    used: list[float] = field(default_factory=list)  # the runs the median is of (mean, spread, p90 are too)

    @property
    def rel_ci(self) -> float | None:
        if self.ci_low_ms is None or self.ci_high_ms is None or self.median_ms <= 0:
            return None
        return (self.ci_high_ms - self.ci_low_ms) / 2 / self.median_ms


def estimate(timed: Sequence[float], waits: Sequence[float] | None, *, exclude_preempted: bool = True,
             outlier_k: float = 5.0, preempt_threshold: float = 0.02) -> Estimate:
    """The model's latency from its runs: median of the runs kept, its CI, and a flag per run.

    A run is ``preempted`` when our threads waited for a CPU for more than ``preempt_threshold`` of its
    duration. Outliers (median + k*MAD) are flagged only; the median is robust to them anyway. When
    every run was preempted the estimate falls back to all runs (and the model is suspect).
    """
    n = len(timed)
    flags = [0] * n
    if waits is not None and len(waits) == n:
        for i, (t, w) in enumerate(zip(timed, waits)):
            if w > preempt_threshold * t:
                flags[i] |= PREEMPTED
    n_pre = sum(f & PREEMPTED for f in flags)
    used = [t for t, f in zip(timed, flags) if not (exclude_preempted and f & PREEMPTED)]
    if not used:
        used = list(timed)
    out_flags = mad_outliers(used, outlier_k)
    cut = max((t for t, o in zip(used, out_flags) if not o), default=float("inf"))
    n_out = 0
    for i, t in enumerate(timed):
        if t > cut:
            flags[i] |= OUTLIER
            n_out += 1
    ci = median_ci(used)
    return Estimate(statistics.median(used), ci[0] if ci else None, ci[1] if ci else None, len(used), n_pre,
                    n_out, flags, used)
