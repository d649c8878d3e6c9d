"""Harness overhead: a campaign over N cached NB201 models on local-onnx vs a bare onnxruntime loop doing the same runs.

The bare loop replays exactly what the campaign did, visit by visit (from the store): a new session per
visit with the profile's options, the same warm-up and timed runs, and, where the campaign timed a paired
reference model before each run, the reference's run too. The ratio is wall time of the whole campaign
(worker start-up, conditions, gating, statistics, SQLite commits included) over the bare loop's. Measured
interleaved in one run: ``--pairs`` times a campaign (--remeasure after the first) followed by two bare
replays of exactly its runs; their mean is the baseline and the gap between the two replays of the
same work is the noise floor. The ratio reported is the median over pairs.

    python benchmarks/overhead.py [--models 50] [--pairs 3] [--policy default|fixed] [--sentinels]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from harness.campaign import reference_arch, run_campaign
from harness.devices.driver import make_driver
from harness.devices.profile import parse_profile
from harness.devices.registry import ProfileRegistry
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.paths import WORKSPACE
from harness.results.store import Store

FIXED = {"warmup_runs": 10, "timed_runs": 50, "preempted_runs": "keep"}


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def bare_replay(visits: list[tuple[Path, int, int, bool]], ref_path: Path | None, threads: int) -> float:
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    ref = session(ref_path, threads) if ref_path is not None else None
    t0 = time.perf_counter()
    for path, warm, timed, with_ref in visits:
        sess = session(path, threads)
        for _ in range(warm):
            sess.run(None, feeds)
        out = []
        for _ in range(timed):
            if with_ref and ref is not None:
                s = time.perf_counter_ns()
                ref.run(None, feeds)
                out.append(time.perf_counter_ns() - s)
            s = time.perf_counter_ns()
            sess.run(None, feeds)
            out.append(time.perf_counter_ns() - s)
        float(np.median(out))
    return time.perf_counter() - t0


def replay_plan(st: Store, campaign_id: int, paths: dict[str, Path]) -> list[tuple[Path, int, int, bool]]:
    rows = st.db.execute(
        "SELECT a.key, m.n_runs, (SELECT COUNT(*) FROM runs r WHERE r.measurement_id = m.id AND r.warmup = 1), "
        "m.ref_median_ms IS NOT NULL FROM measurements m JOIN architectures a ON a.id = m.arch_id "
        "WHERE m.campaign_id = ? AND m.status = 'ok' ORDER BY m.id", (campaign_id,)).fetchall()
    return [(paths[k], int(w), int(n), bool(r)) for k, n, w, r in rows]


def main() -> None:
    from _cli import parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--models", type=positive, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", choices=("default", "fixed"), default="default")
    ap.add_argument("--pairs", type=positive, default=3, help="campaign + bare replay pairs, interleaved")
    ap.add_argument("--sentinels", action="store_true", help="turn on sentinels (default count and interval) and a (never-waiting) gate")
    args = ap.parse_args()
    base = ProfileRegistry(WORKSPACE.devices).get("local-onnx")
    body = base.as_dict()
    if args.policy == "fixed":
        body["policy"] = {"timeout_seconds": 120, **FIXED}
    if args.sentinels:
        body["policy"] = {**body["policy"], "sentinels": {"on_drift": "mark"},  # the defaults: 3 every 100 visits
                          "gate": {"max_loadavg": 1000, "max_wait_s": 5}}
    profile = parse_profile(body, "<overhead>")
    space = get_space("nb201")
    archs = space.sample(args.models, args.seed)
    threads = profile.runtime.threads
    with tempfile.TemporaryDirectory() as tmp:
        cache = ModelCache(Path(tmp) / "cache")
        paths = {a.key: cache.get(space.build(a), "onnx", profile.graph).path for a in archs}
        ref_path = (cache.get(space.build(reference_arch(space, profile.policy.reference)), "onnx", profile.graph).path
                    if profile.policy.reference != "none" else None)
        starts = []
        for _ in range(3):  # the one-off per campaign: start the worker (imports the runtime), say hello
            t0 = time.perf_counter()
            drv = make_driver(profile)
            drv.prepare()
            drv.cleanup()
            starts.append(time.perf_counter() - t0)
        start_s = float(np.median(starts))
        campaign, bare, floor = [], [], []
        with Store(Path(tmp) / "h.db") as st:
            for i in range(args.pairs):
                t0 = time.perf_counter()
                s = run_campaign(st, profile, space, archs, cache=cache, remeasure=i > 0)
                campaign.append(time.perf_counter() - t0)
                assert s.failed == 0
                plan = replay_plan(st, s.campaign_id, paths)
                b1 = bare_replay(plan, ref_path, threads)
                b2 = bare_replay(plan, ref_path, threads)  # the same work again: the noise floor
                bare.append((b1 + b2) / 2)
                floor.append(abs(b1 / b2 - 1))
            runs = st.db.execute("SELECT SUM(n_runs) FROM measurements").fetchone()[0] / args.pairs / len(archs)
    ratios = [c / b for c, b in zip(campaign, bare)]
    print(f"models: {args.models} cached NB201 on local-onnx, policy {args.policy}"
          f"{' + sentinels + gate' if args.sentinels else ''} ({threads} thread, {profile.policy.rounds} round(s), "
          f"{runs:.1f} timed runs per architecture on average); {args.pairs} interleaved pairs")
    print(f"harness campaign:        {', '.join(f'{c:.3f}' for c in campaign)} s")
    print(f"bare replay (same runs): {', '.join(f'{b:.3f}' for b in bare)} s (the mean of two replays each)")
    print(f"noise floor:             two replays of the same work differ by {np.median(floor):.1%} (median), "
          f"{max(floor):.1%} (max)")
    print(f"overhead ratio:          median {np.median(ratios):.3f}x, per pair {', '.join(f'{r:.3f}' for r in ratios)} "
          f"(goal <= 1.10x); loadavg {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"per-visit overhead:      {(np.median(campaign) - np.median(bare)) / (args.models * profile.policy.rounds) * 1e3:.1f} ms")
    steady = [(c - start_s) / b for c, b in zip(campaign, bare)]
    print(f"without the one-off worker start ({start_s:.2f} s per campaign, paid once however many models): "
          f"median {np.median(steady):.3f}x, per pair {', '.join(f'{r:.3f}' for r in steady)}")


if __name__ == "__main__":
    from _cli import run

    run(main)
