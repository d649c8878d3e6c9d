"""Farm throughput, Ray overhead and node-loss reaction, with the sleep stand-in device (~50 ms a model).

1. Scaling: 1, 2, 4, 8 sleep devices, each measuring the same M models (--each), on this host (thread
   lanes) and on a 3-node local Ray cluster (devices spread over the nodes). Throughput is models per
   second after every device was prepared (start-up reported separately); scaling efficiency =
   throughput(n) / (n * throughput(1)). A sleeping device needs no CPU, so on 2 cores the devices
   overlap perfectly and lost efficiency is the farm's own overhead (export-cache look-ups, SQLite
   commits, Ray round trips).
2. Overhead of the Ray path vs the local loop on one device: seconds per model, the two interleaved over
   rounds; the noise floor is the local loop against itself (its two halves).
3. Node loss: a node with one device of a --split group (and, separately, of an --each run) disappears
   mid-model, either killed (its processes exit: connections reset) or frozen (SIGSTOP: the host
   vanishes without a word, as when its power or network goes). Reported: seconds from the loss until
   the device's campaign is reported stopped (its in-flight model recorded device_lost and, under split,
   handed to the rest of the group).

    python benchmarks/farm.py [--models 40] [--latency-ms 50] [--rounds 3]
"""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from harness.devices.profile import Profile, parse_profile
from harness.farm.engine import run_farm
from harness.farm.local import local_lanes
from harness.farm.plan import make_plan
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from harness.testing.ray_cluster import bury, freeze

SPACE = get_space("nb201")


def sleep_profile(name: str, latency: float, group: str | None = None) -> Profile:
    return parse_profile({"name": name, "group": group, "connection": {"kind": "sleep", "latency_ms": latency,
                          "spread": 0.0}, "runtime": {"name": "onnxruntime"},
                          "policy": {"warmup_runs": 0, "timed_runs": 1}}, "benchmark profile")


def farm_once(tmp: Path, profiles: list[Profile], archs, lanes_for, mode="each", observer=None):
    with Store(tmp / f"run-{time.monotonic_ns()}.db") as st:
        plan = make_plan(st, profiles, SPACE, archs, mode)
        s = run_farm(st, plan, lanes_for(plan), observer=observer)
    models = sum(d.ok for d in s.devices)
    return s, models / max(s.elapsed_s - s.startup_s, 1e-9)


# --- a local Ray cluster ----------------------------------------------------------------------

class LoseNode:
    """Kills or freezes ``node`` once ``device`` has measured ``after`` models; times the stop report."""

    def __init__(self, cluster, node, device: str, after: int, how: str):
        self.cluster, self.node, self.device, self.after, self.how = cluster, node, device, after, how
        self.lost_at: float | None = None
        self.reported_s: float | None = None
        self.frozen: list[int] = []

    def device_started(self, s, todo):
        pass

    def model_done(self, s, o):
        if s.device == self.device and s.ok >= self.after and self.lost_at is None:
            if self.how == "kill":
                self.cluster.remove_node(self.node, allow_graceful=False)
            else:
                self.frozen = freeze(self.node)
            self.lost_at = time.perf_counter()

    def device_stopped(self, s):
        if s.device == self.device and self.lost_at is not None and self.reported_s is None:
            self.reported_s = time.perf_counter() - self.lost_at

    def bury(self) -> None:
        if self.how == "freeze":
            bury(self.cluster, self.node, self.frozen)


def main() -> None:
    from _cli import parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--models", type=positive, default=40, help="models per device in the scaling runs")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--rounds", type=positive, default=3, help="interleaved rounds of the overhead comparison")
    ap.add_argument("--skip-loss", action="store_true")
    ap.add_argument("--only-loss", action="store_true")
    args = ap.parse_args()
    if not args.skip_loss and args.models < 10:
        ap.error("the node-loss runs lose a node after its 3rd model: give --models 10 or more, or --skip-loss")
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-"))
    atexit.register(shutil.rmtree, tmp, True)  # the stores and caches of every run: nothing left in /tmp
    cache_dir = tmp / "cache"
    os.environ["HARNESS_CACHE"] = str(cache_dir)  # the Ray nodes' workers inherit it
    archs = SPACE.sample(args.models, 0)
    cache = ModelCache(cache_dir)
    for a in archs:  # export once up front: the runs measure scheduling, not the exporter
        cache.get(SPACE.build(a), "onnx")
    counts = [1, 2, 4, 8]
    profiles = [sleep_profile(f"sleep{i}", args.latency_ms) for i in range(max(counts))]

    import ray
    from ray.cluster_utils import Cluster

    from harness.farm.ray_lanes import connect, ray_lanes
    from harness.testing.ray_cluster import node_args

    extra = [sleep_profile(n, args.latency_ms, g) for n, g in
             (("lossA", "lg"), ("lossB", "lg"), ("lossC", None), ("lossD", "fg"), ("lossE", "fg"), ("lossF", None))]
    by_node = [[p for i, p in enumerate(profiles) if i % 3 == k] for k in range(3)]
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={**node_args(*by_node[0], extra[1], extra[4]),
                                                            "include_dashboard": False})
    for ps in by_node[1:]:
        cluster.add_node(**node_args(*ps))
    connect(cluster.address)
    print(f"3-node local Ray cluster up in {time.perf_counter() - t0:.1f} s; {args.models} models per device, "
          f"{args.latency_ms:g} ms each; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    local = lambda plan: local_lanes(plan, cache)  # noqa: E731
    if not args.only_loss:
        scaling_and_overhead(args, tmp, profiles, archs, counts, local, ray_lanes)
    if not args.skip_loss:
        node_loss(args, tmp, cluster, profiles, extra, archs, ray_lanes, node_args)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (a 3-node cluster and 8 actor processes share "
          f"these {os.cpu_count()} CPUs with everything else)")
    ray.shutdown()
    cluster.shutdown()


def scaling_and_overhead(args, tmp, profiles, archs, counts, local, ray_lanes) -> None:
    print("\n1. scaling (--each; throughput after start-up)")
    print(f"{'devices':>8} {'local models/s':>15} {'eff':>6} {'ray models/s':>13} {'eff':>6} {'ray start-up s':>15}")
    base: dict[str, float] = {}
    for n in counts:
        row = {}
        for kind, lanes_for in (("local", local), ("ray", ray_lanes)):
            s, thr = farm_once(tmp, profiles[:n], archs, lanes_for)
            assert s.finished, [(d.device, d.message) for d in s.devices]
            base.setdefault(kind, thr)
            row[kind] = (thr, thr / (n * base[kind]), s.startup_s)
        print(f"{n:>8} {row['local'][0]:>15.2f} {row['local'][1]:>6.3f} {row['ray'][0]:>13.2f} "
              f"{row['ray'][1]:>6.3f} {row['ray'][2]:>15.1f}")

    print(f"\n2. per-model time on one device, local loop vs Ray ({args.rounds} interleaved rounds)")
    per = {"local": [], "ray": [], "local_a": [], "local_b": []}
    half = len(archs) // 2
    for _ in range(args.rounds):
        for kind, lanes_for in (("local", local), ("ray", ray_lanes)):
            s, thr = farm_once(tmp, profiles[:1], archs, lanes_for)
            per[kind].append(1.0 / thr)
        for key, part in (("local_a", archs[:half]), ("local_b", archs[half:])):
            s, thr = farm_once(tmp, profiles[:1], part, local)
            per[key].append(1.0 / thr)
    ml, mr = statistics.median(per["local"]), statistics.median(per["ray"])
    floor = abs(statistics.median(per["local_a"]) / statistics.median(per["local_b"]) - 1)
    print(f"local {ml * 1000:.2f} ms/model, ray {mr * 1000:.2f} ms/model: Ray overhead {100 * (mr / ml - 1):+.2f} % "
          f"(noise floor, local vs local: {100 * floor:.2f} %); the sleep itself is {args.latency_ms:g} ms")



def node_loss(args, tmp, cluster, profiles, extra, archs, ray_lanes, node_args) -> None:
    print("\n3. node loss mid-model: seconds until the device is reported stopped")
    cases = [("split", "kill", extra[0], [extra[0], extra[1]]), ("each", "kill", extra[2], [extra[2], profiles[0]]),
             ("split", "freeze", extra[3], [extra[3], extra[4]]), ("each", "freeze", extra[5], [extra[5], profiles[0]])]
    for mode, how, victim, group in cases:
        node = cluster.add_node(**node_args(victim))
        lose = LoseNode(cluster, node, victim.name, after=3, how=how)
        s, _ = farm_once(tmp, group, archs[:20], ray_lanes, mode=mode, observer=lose)
        lose.bury()
        d = {x.device: x for x in s.devices}
        other = [x for x in group if x.name != victim.name][0].name
        print(f"{mode:>5} {how:>6}: stopped after {lose.reported_s:.2f} s ({d[victim.name].message[:60]}...); "
              f"{other} {d[other].status}, {d[other].ok} models; not measured: {sum(s.left.values())}")


if __name__ == "__main__":
    from _cli import run

    run(main)
