"""Repeatability: pairs of campaigns over the same architectures; SRCC between the two of each pair.

Policies compared in one interleaved run (A1 B1 A2 B2, so drift of the shared machine falls on both):
``fixed`` = the classic policy (10 warm-up + 50 timed runs, one pass, median of all runs) and
``default`` = the profile as shipped (adaptive repeats, paired reference, interleaved rounds, preempted
runs left out). Variants (``VARIANTS``) find what each ingredient buys and the device time each policy needs:
fixed100/200/400 (more runs, one pass), noref (no paired reference), rounds1/rounds2, previous (the
default before 2026-11-30: 3 warm-up, 10-30 runs at 2 %). With ``--hog`` a bounded busy loop pinned to CPU 0 runs during the middle third of each
*second* campaign (it stops by itself). Device time = summed per-visit durations / architectures.

    python benchmarks/repeatability.py [--device local-onnx] [--models 100] [--hog] [--policies fixed,default,fixed200,...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from scipy.stats import kendalltau, spearmanr

from harness.campaign import run_campaign
from harness.devices.profile import Profile, parse_profile
from harness.devices.registry import ProfileRegistry
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.paths import WORKSPACE
from harness.results.export import latency_table
from harness.results.store import Store

FIXED = {"warmup_runs": 10, "timed_runs": 50, "preempted_runs": "keep"}  # today's policy, exactly
# more policies, to find the device time each needs for stable ranks (--policies fixed,fixed200,default,...)
VARIANTS: dict[str, dict] = {
    "fixed": FIXED,
    "fixed100": {**FIXED, "timed_runs": 100},
    "fixed200": {**FIXED, "timed_runs": 200},
    "noref": {"reference": "none"},  # the default without the paired reference model
    "rounds1": {"rounds": 1},  # the default in one pass
    "rounds2": {"rounds": 2},
    "fixed400": {**FIXED, "timed_runs": 400},
    "previous": {"warmup_runs": 3, "adaptive": {"target_rel_ci": 0.02, "min_runs": 10, "max_runs": 30,
                                                "max_seconds": 0.25}},  # the default before this session
}
HOG = "import os, time\nos.sched_setaffinity(0, {0})\nend = time.monotonic() + %f\nwhile time.monotonic() < end: pass\n"


def policy(profile: Profile, name: str, label: str) -> Profile:
    body = profile.as_dict()
    body["name"] = label
    if name != "default":
        if name not in VARIANTS:
            raise SystemExit(f"unknown policy {name!r}; use default or one of {', '.join(VARIANTS)}")
        if "timed_runs" in VARIANTS[name]:  # a fixed policy replaces the profile's, keeping only its limits
            keep = {k: v for k, v in body["policy"].items() if k in ("timeout_seconds", "input_seed")}
            body["policy"] = {**keep, **VARIANTS[name]}
        else:  # the default with one ingredient changed
            body["policy"] = {**body["policy"], **VARIANTS[name]}
    return parse_profile(body, f"<{label}>")


def hog_later(delay: float, duration: float) -> threading.Timer:
    """A busy loop pinned to CPU 0 from ``delay`` s on, for ``duration`` s; it ends by itself."""
    def start() -> None:
        subprocess.Popen([sys.executable, "-c", HOG % duration])
    t = threading.Timer(delay, start)
    t.daemon = True
    t.start()
    return t


def main() -> None:
    from _cli import parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--device", default="local-onnx")
    ap.add_argument("--models", type=positive, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hog", action="store_true", help="CPU hog on CPU 0 in the middle third of each second campaign")
    ap.add_argument("--policies", default="fixed,default")
    args = ap.parse_args()
    base = ProfileRegistry(WORKSPACE.devices).get(args.device)
    space = get_space("nb201")
    archs = space.sample(args.models, args.seed)
    names = args.policies.split(",")
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "h.db") as st:
        cache = ModelCache(Path(tmp) / "cache")
        for a in archs:  # export outside the timed campaigns
            cache.get(space.build(a), base.runtime.model_format, base.graph)
        elapsed: dict[str, float] = {}
        device_s: dict[str, list[float]] = {n: [] for n in names}
        for i in (1, 2):
            for n in names:
                p = policy(base, n, f"{n}-{i}")
                if args.hog and i == 2:
                    third = elapsed[n] / 3
                    hog_later(third, third)
                t0 = time.perf_counter()
                s = run_campaign(st, p, space, archs, cache=cache)
                elapsed[n] = time.perf_counter() - t0
                dev = float(st.measurements(p.name).duration_s.sum())
                device_s[n].append(dev / len(archs))
                print(f"{n} campaign {i}: {s.ok} visits ok, {s.failed} failed, {elapsed[n]:.1f} s wall, "
                      f"{dev / len(archs):.3f} s device time per architecture, {s.suspect} suspect visits, "
                      f"loadavg {os.getloadavg()[0]:.1f}", flush=True)
        visits = st.visits("nb201")
        for n in names:
            df = latency_table(st, "nb201", [f"{n}-1", f"{n}-2"]).dropna()
            a, b = df[f"{n}-1_ms"], df[f"{n}-2_ms"]
            rel = ((a - b).abs() / ((a + b) / 2)).median()
            print(f"{n:8s}: SRCC {spearmanr(a, b).statistic:.4f}, Kendall {kendalltau(a, b).statistic:.4f} on "
                  f"{len(df)} architectures; median rel. difference {rel:.1%}; device time "
                  f"{sum(device_s[n]) / 2:.3f} s/arch{' (hog in campaign 2)' if args.hog else ''}")
            # the same without the reference normalisation: median over rounds of each visit's raw median
            raw = visits[visits.device.isin([f"{n}-1", f"{n}-2"])].groupby(["key", "device"]).median_ms.median()
            raw = raw.unstack().dropna()
            if raw.shape[1] == 2 and "ref_median_ms" in visits and visits.ref_median_ms.notna().any():
                ra, rb = raw[f"{n}-1"], raw[f"{n}-2"]
                rrel = ((ra - rb).abs() / ((ra + rb) / 2)).median()
                print(f"{'':8s}  raw medians (no reference normalisation): SRCC {spearmanr(ra, rb).statistic:.4f}, "
                      f"median rel. difference {rrel:.1%}")
    print(f"conditions: {os.cpu_count()} CPUs shared with other jobs; loadavg at start {load0:.1f}, "
          f"end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    from _cli import run

    run(main)
