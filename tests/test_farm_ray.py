"""The farm on a real local Ray cluster: three nodes, each offering its own devices (sleep stand-ins and a
virtual phone). Work lands only where its device is; --split measures each architecture once per group;
a node killed mid-campaign loses no finished result and the rerun completes; bad input stops before
any measurement. One cluster for the module (starting one costs seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from harness.devices.profile import Profile, parse_profile  # noqa: E402
from harness.errors import FarmError  # noqa: E402
from harness.farm.engine import run_farm  # noqa: E402
from harness.farm.plan import make_plan  # noqa: E402
from harness.farm.ray_lanes import connect, place, ray_lanes  # noqa: E402
from harness.farm.resources import device_resource  # noqa: E402
from harness.farm.status import cluster_status  # noqa: E402
from harness.models.spaces import get_space  # noqa: E402
from harness.results.store import Store  # noqa: E402

from harness.sim.adb.server import VirtualPhone, write_stand_in  # noqa: E402
from harness.testing.ray_cluster import bury, freeze, kill_node, node_args  # noqa: E402

pytestmark = pytest.mark.slow
SPACE = get_space("nb201")
QUICK = {"warmup_runs": 0, "timed_runs": 2, "timeout_seconds": 30}


def sleep_profile(name: str, group: str | None = None, latency: float = 30.0) -> Profile:
    return parse_profile({"name": name, "group": group, "connection": {"kind": "sleep", "latency_ms": latency},
                          "runtime": {"name": "onnxruntime"}, "policy": QUICK}, "test profile")


class Farm:
    def __init__(self, cluster: Cluster, profiles: dict[str, Profile]):
        self.cluster, self.p = cluster, profiles

    def node_of(self, device: str) -> str:
        [node] = [n["NodeID"] for n in ray.nodes() if n["Alive"] and device_resource(device) in n["Resources"]]
        return node

    def run(self, store: Store, names: list[str], archs, mode: str = "each", observer=None, **kw):
        plan = make_plan(store, [self.p[n] for n in names], SPACE, archs, mode)
        return run_farm(store, plan, ray_lanes(plan), observer=observer, start_timeout_s=120, **kw)


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    cache = tmp_path_factory.mktemp("farm-cache")
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(cache)  # the nodes' workers inherit it: their model cache
    phone_root = tmp_path_factory.mktemp("phone")
    stand_in = write_stand_in(tmp_path_factory.mktemp("bin") / "benchmark_model")
    with VirtualPhone(phone_root, model="s5e") as phone:
        vp = parse_profile({"name": "vphone", "connection": {
            "kind": "adb", "serial": phone.address, "key_file": str(tmp_path_factory.mktemp("key") / "adbkey"),
            "benchmark_model": str(stand_in), "connect_timeout_s": 5},
            "runtime": {"name": "tflite", "threads": 1}, "policy": QUICK}, "test profile")
        p = {n: sleep_profile(n, "rg") for n in ("ra", "rb", "rc")}
        p |= {n: sleep_profile(n, "kg", latency=120.0) for n in ("ka", "kb")}
        p |= {"kc": sleep_profile("kc", latency=120.0), "kd": sleep_profile("kd", latency=120.0), "dup": sleep_profile("dup"), "mism": sleep_profile("mism"),
              "vphone": vp}
        cluster = Cluster(initialize_head=True, head_node_args={
            **node_args(p["ra"], p["kb"]), "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 6}})
        cluster.add_node(**node_args(p["rb"], p["vphone"], p["dup"]))
        cluster.add_node(**node_args(p["rc"], p["dup"], p["mism"], digests={"mism": "0" * 16}),
                         )
        try:
            connect(cluster.address)
            yield Farm(cluster, p)
        finally:
            ray.shutdown()
            cluster.shutdown()
            if old is None:
                os.environ.pop("HARNESS_CACHE", None)
            else:
                os.environ["HARNESS_CACHE"] = old


def test_work_lands_only_where_its_device_is(farm, tmp_path):
    archs = SPACE.sample(4, 11)
    with Store(tmp_path / "r.db") as st:
        s = farm.run(st, ["ra", "rb", "rc"], archs)
        assert s.finished and [d.ok for d in s.devices] == [4, 4, 4]
        camps = st.db.execute("SELECT d.name, c.conditions_json FROM campaigns c JOIN devices d "
                              "ON d.id = c.device_id").fetchall()
        import json

        nodes = {name: json.loads(c)["farm_node"] for name, c in camps}
        assert nodes == {n: farm.node_of(n) for n in ("ra", "rb", "rc")}
        assert len(set(nodes.values())) == 3  # three hosts
        m = st.measurements()
        assert (m.status == "ok").all() and len(m) == 12


def test_split_measures_every_architecture_once_across_hosts(farm, tmp_path):
    archs = SPACE.sample(9, 12)
    with Store(tmp_path / "r.db") as st:
        s = farm.run(st, ["ra", "rb", "rc"], archs, mode="split")
        assert s.finished and s.left == {"rg": 0}
        m = st.measurements()
        assert len(m) == 9 and m.key.is_unique and set(m.key) == {a.key for a in archs}
        assert m.device.nunique() >= 2


def test_virtual_phone_on_its_host_and_status_while_measuring(farm, tmp_path):
    seen = []

    class Watch:
        def device_started(self, s, todo):
            pass

        def model_done(self, s, o):
            if not seen:
                seen.append(cluster_status())

        def device_stopped(self, s):
            pass

    with Store(tmp_path / "r.db") as st:
        s = farm.run(st, ["vphone", "rb"], SPACE.sample(2, 13), observer=Watch())
        assert s.finished, [(d.device, d.message) for d in s.devices]
        m = st.measurements("vphone")
        assert len(m) == 2 and (m.status == "ok").all() and (m.median_ms > 0).all()
    p = subprocess.run([sys.executable, "-m", "harness", "farm", "status", "--ray", farm.cluster.address],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    assert "hosts" in p.stdout and "vphone" in p.stdout and farm.p["rb"].digest() in p.stdout
    hosts, devices = seen[0]
    assert len([h for h in hosts if h.alive]) >= 3
    by = {d.device: d for d in devices if d.device in ("vphone", "rb")}
    assert {d.state for d in by.values()} <= {"measuring", "idle"} and any((d.done or 0) >= 1 for d in by.values())
    assert by["rb"].digest == farm.p["rb"].digest()


def test_bad_input_is_refused_before_measuring(farm, tmp_path, cli_env):
    with pytest.raises(FarmError, match="no host of the Ray cluster offers device 'nowhere'"):
        place([sleep_profile("nowhere")])
    with pytest.raises(FarmError, match="two hosts claim device 'dup'"):
        place([farm.p["dup"]])
    with pytest.raises(FarmError, match="differs from this command's"):
        place([farm.p["mism"]])
    with Store(tmp_path / "r.db") as st:
        with pytest.raises(FarmError):
            farm.run(st, ["ra", "dup"], SPACE.sample(2, 0))
        assert st.info()["campaigns"] == 0 and st.info()["measurements"] == 0
    (tmp_path / "devices" / "ra.yaml").write_text("name: ra\nconnection: {kind: sleep}\nruntime: {name: onnxruntime}\n")
    p = subprocess.run([sys.executable, "-m", "harness", "measure", "-d", "ra", "--ray", "127.0.0.1:1",
                        "--sample", "1"], env=cli_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no Ray head answers" in p.stderr and "Traceback" not in p.stderr


def wait_dead(node_id: str, timeout: float = 60.0) -> None:
    """Until the cluster has noticed the node is gone (a host rejoining earlier would be a second claim)."""
    deadline = time.monotonic() + timeout
    while any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
        assert time.monotonic() < deadline, "the cluster never noticed the node's death"
        time.sleep(0.5)


class KillWhen:
    """Removes a node after the device on it has measured ``after`` models; times the report of the loss."""

    def __init__(self, cluster, node, device: str, after: int, freeze: bool = False):
        self.cluster, self.node, self.device, self.after = cluster, node, device, after
        self.freeze, self.frozen = freeze, []
        self.killed_at: float | None = None
        self.stopped_after: float | None = None

    def device_started(self, s, todo):
        pass

    def model_done(self, s, o):
        if s.device == self.device and s.ok >= self.after and self.killed_at is None:
            if self.freeze:
                self.frozen = freeze(self.node)
            else:
                kill_node(self.cluster, self.node)
            self.killed_at = time.perf_counter()

    def device_stopped(self, s):
        if s.device == self.device and self.killed_at is not None:
            self.stopped_after = time.perf_counter() - self.killed_at


def test_node_loss_under_split_reroutes_the_in_flight_model(farm, tmp_path):
    node = farm.cluster.add_node(**node_args(farm.p["ka"]))
    archs = SPACE.sample(10, 14)
    kill = KillWhen(farm.cluster, node, "ka", after=2)
    with Store(tmp_path / "r.db") as st:
        s = farm.run(st, ["ka", "kb"], archs, mode="split", observer=kill)
        by = {d.device: d for d in s.devices}
        assert by["ka"].status == "failed" and "device lost" in by["ka"].message
        assert by["kb"].status == "finished" and s.left == {"kg": 0}
        m = st.measurements()
        ok = m[m.status == "ok"]
        assert ok.key.is_unique and set(ok.key) == {a.key for a in archs}  # every one exactly once
        lost = m[m.status == "failed"]
        assert list(lost.failure_kind) == ["device_lost"] and list(lost.device) == ["ka"]
        assert lost.key.iloc[0] in set(ok[ok.device == "kb"].key)  # re-routed within the group
    assert kill.stopped_after is not None and kill.stopped_after < 30


def test_node_loss_under_each_stops_that_device_and_the_rerun_completes(farm, tmp_path, capsys):
    node = farm.cluster.add_node(**node_args(farm.p["kc"]))
    archs = SPACE.sample(6, 15)
    kill = KillWhen(farm.cluster, node, "kc", after=2)
    with Store(tmp_path / "r.db") as st:
        s = farm.run(st, ["kc", "rb"], archs, observer=kill)
        by = {d.device: d for d in s.devices}
        assert by["kc"].status == "failed" and by["rb"].status == "finished" and by["rb"].ok == 6
        assert not s.finished and s.left["kc"] == 6 - by["kc"].ok
        kept = set(st.measurements("kc").query("status == 'ok'").key)
        assert len(kept) == by["kc"].ok >= 2  # every result reported done is in the store
        wait_dead(node.node_id)
        farm.cluster.add_node(**node_args(farm.p["kc"]))  # the host is back
        again = farm.run(st, ["kc", "rb"], archs)
        assert again.finished
        by = {d.device: d for d in again.devices}
        assert by["kc"].skipped == len(kept) and by["kc"].ok == 6 - len(kept) and by["rb"].status == "nothing to do"
        ok = st.measurements("kc").query("status == 'ok'")
        assert ok.key.is_unique and len(ok) == 6
    # Ray's report of the dead node (printed on stdout by its driver thread) would corrupt --json output
    out = capsys.readouterr().out
    assert "raylet" not in out and "marked dead" not in out


def test_rays_cluster_messages_go_to_stderr_as_plain_lines(farm, capsys):
    """What Ray's error thread prints for a lost host (its own timing decides when, so called directly here)."""
    ray._private.worker.print_to_stdstream({"pid": "raylet", "is_err": False, "lines": [
        "\x1b[33m(raylet)\x1b[0m The node with node id: ab has been marked dead"]}, ignore_prefix=False)
    got = capsys.readouterr()
    assert got.out == "" and got.err == "ray: (raylet) The node with node id: ab has been marked dead\n"


def test_a_host_that_falls_silent_is_lost_by_heartbeat(farm, tmp_path):
    """SIGSTOP: the node's connections stay open and say nothing (power or network gone); Ray itself would
    take about a minute to call it dead, the farm's heartbeat notices within silence_s."""
    node = farm.cluster.add_node(**node_args(farm.p["kd"]))
    kill = KillWhen(farm.cluster, node, "kd", after=1, freeze=True)
    try:
        with Store(tmp_path / "r.db") as st:
            s = farm.run(st, ["kd", "rc"], SPACE.sample(4, 16), observer=kill, heartbeat_s=0.3, silence_s=2.0)
            by = {d.device: d for d in s.devices}
            assert by["kd"].status == "failed" and "stopped answering" in by["kd"].message
            assert by["rc"].status == "finished"
            lost = st.measurements("kd").query("status == 'failed'")
            assert list(lost.failure_kind) == ["device_lost"]
        assert kill.stopped_after is not None and 2.0 <= kill.stopped_after < 15
    finally:
        bury(farm.cluster, node, kill.frozen)


def test_a_device_another_farm_command_holds_is_busy_or_waited_for(farm):
    """`--ray --wait` stopped at once with "being measured by another farm command" (exit 2) instead of waiting."""
    import threading

    from harness.devices.lease import DeviceBusy

    plan = make_plan_for(farm, ["ra"])
    first = ray_lanes(plan)  # the other command's actor
    try:
        with pytest.raises(DeviceBusy, match="another farm command"):
            ray_lanes(plan)
        told = []
        threading.Timer(1.5, lambda: first["ra"].close()).start()
        t0 = time.time()
        second = ray_lanes(plan, wait=True, on_wait=told.append)
        assert told and time.time() - t0 >= 1.0
        second["ra"].close()
    finally:
        first["ra"].close()


def make_plan_for(farm: Farm, names: list[str]):
    with Store(":memory:") as st:
        return make_plan(st, [farm.p[n] for n in names], SPACE, SPACE.sample(1, 0))
