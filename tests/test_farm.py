"""The farm on one host (no Ray): several devices at once, --each and --split, faults stop one device only."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.devices.driver import make_driver
from harness.devices.profile import parse_profile
from harness.errors import FarmError, StoreError
from harness.farm.engine import run_farm
from harness.farm.local import local_lanes
from harness.farm.plan import make_plan
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from tests.conftest import harness
from harness.sim.sleep import latency_ms

SPACE = get_space("nb201")
QUICK = {"warmup_runs": 0, "timed_runs": 2, "timeout_seconds": 30}


def sleep_profile(name: str, group: str | None = None, latency: float = 20.0, **conn):
    return parse_profile({"name": name, "group": group, "connection": {"kind": "sleep", "latency_ms": latency, **conn},
                          "runtime": {"name": "onnxruntime"}, "policy": QUICK}, "test profile")


def farm(store, profiles, archs, cache_dir, mode="each", **kw):
    plan = make_plan(store, profiles, SPACE, archs, mode)
    return run_farm(store, plan, local_lanes(plan, ModelCache(cache_dir)), **kw)


def ok_rows(st: Store):
    m = st.measurements()
    return m[m.status == "ok"]


def test_sleep_device_is_deterministic_and_really_sleeps(cache_dir):
    p = sleep_profile("s", latency=30.0)
    art = ModelCache(cache_dir).get(SPACE.build(SPACE.parse("7")), "onnx")
    d = make_driver(p)
    d.prepare()
    t0 = time.perf_counter()
    r = d.run(d.push(art))
    wall = time.perf_counter() - t0
    d.cleanup()
    expected = latency_ms(art.digest, 30.0, 0.5, 0)
    assert r.timed_ms == [expected, expected]
    assert 15.0 <= expected <= 45.0
    assert wall >= 2 * expected / 1000  # it slept what it reports
    assert latency_ms(art.digest, 30.0, 0.5, 1) != expected  # another seed, another device


def test_each_measures_everything_on_every_device_concurrently(store_path, cache_dir):
    archs = SPACE.sample(8, 3)
    profiles = [sleep_profile(f"d{i}", latency=40.0) for i in range(3)]
    with Store(store_path) as st:
        t0 = time.perf_counter()
        s = farm(st, profiles, archs, cache_dir)
        wall = time.perf_counter() - t0
        assert s.finished and [d.ok for d in s.devices] == [8, 8, 8]
        ok = ok_rows(st)
        assert sorted(ok.groupby("device").key.nunique()) == [8, 8, 8]
        cache = ModelCache(cache_dir)  # the farm's per-architecture hint names the same file as the cache
        digests = {a.key: cache.get(SPACE.build(a), "onnx").digest for a in archs}
        assert all(digests[k] == d for k, d in zip(ok.key, ok.model_digest))
        serial = sum(m for m in ok.duration_s)  # what one device after another would take
        assert wall < 0.75 * serial, (wall, serial)  # the devices ran side by side
        again = farm(st, profiles, SPACE.sample(10, 3), cache_dir)  # resume by content, per device
        assert [(d.skipped, d.ok) for d in again.devices] == [(8, 2)] * 3


def test_split_measures_each_architecture_once_per_group(store_path, cache_dir):
    archs = SPACE.sample(12, 4)
    profiles = [sleep_profile(f"g{i}", group="pixel", latency=15.0) for i in range(3)]
    with Store(store_path) as st:
        s = farm(st, profiles, archs, cache_dir, mode="split")
        assert s.finished and sum(d.ok for d in s.devices) == 12
        ok = ok_rows(st)
        assert ok.key.value_counts().max() == 1 and set(ok.key) == {a.key for a in archs}
        assert ok.device.nunique() >= 2  # the list was shared
        rerun = farm(st, profiles, archs, cache_dir, mode="split")
        assert all(d.status == "nothing to do" for d in rerun.devices) and rerun.finished


def test_a_dropped_device_stops_alone(store_path, cache_dir):
    archs = SPACE.sample(6, 5)
    profiles = [sleep_profile("steady"), sleep_profile("flaky", drop_after=2)]
    with Store(store_path) as st:
        s = farm(st, profiles, archs, cache_dir)
        by = {d.device: d for d in s.devices}
        assert by["steady"].status == "finished" and by["steady"].ok == 6
        assert by["flaky"].status == "failed" and by["flaky"].ok == 2 and "dropped" in by["flaky"].message
        assert not s.finished and s.left == {"steady": 0, "flaky": 4}
        camps = st.campaigns().set_index("device")
        assert camps.loc["flaky", "status"] == "failed" and camps.loc["steady", "status"] == "finished"


def test_split_gives_a_dropped_devices_work_to_the_group(store_path, cache_dir):
    archs = SPACE.sample(8, 6)
    profiles = [sleep_profile("a", "g"), sleep_profile("b", "g", drop_after=1)]
    with Store(store_path) as st:
        s = farm(st, profiles, archs, cache_dir, mode="split")
        assert s.left == {"g": 0}
        ok = ok_rows(st)
        assert len(ok) == 8 and ok.key.is_unique


def test_bad_farm_input_is_refused_before_measuring(store_path):
    with Store(store_path) as st:
        with pytest.raises(FarmError, match="given twice"):
            make_plan(st, [sleep_profile("x"), sleep_profile("x")], SPACE, SPACE.sample(2, 0))
        with pytest.raises(FarmError, match="group"):
            make_plan(st, [sleep_profile("x", "g"), sleep_profile("y")], SPACE, SPACE.sample(2, 0), "split")
        with pytest.raises(FarmError, match="not interchangeable"):
            make_plan(st, [sleep_profile("x", "g"), sleep_profile("y", "g", latency=99)], SPACE,
                      SPACE.sample(2, 0), "split")
        assert st.info()["campaigns"] == 0


def test_group_does_not_change_the_profile_digest():
    assert sleep_profile("x").digest() == sleep_profile("x", group="g").digest()


@pytest.mark.slow
def test_cli_measures_two_devices_with_one_summary(tmp_path, cli_env):
    devices = tmp_path / "devices"
    for name in ("cli-a", "cli-b"):
        (devices / f"{name}.yaml").write_text(yaml.safe_dump(
            {"name": name, "connection": {"kind": "sleep", "latency_ms": 10, "drop_after": 1 if name == "cli-b" else None},
             "runtime": {"name": "onnxruntime"}, "policy": QUICK}))
    p = subprocess.run([sys.executable, "-m", "harness", "measure", "-d", "cli-a", "-d", "cli-b", "-d", "virtual-phone",
                        "--sample", "3"], env=cli_env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 1, p.stderr  # one device stopped
    assert "cli-a" in p.stdout and "finished" in p.stdout and "cli-b stopped" in p.stderr  # progress: stderr
    with Store(cli_env["HARNESS_STORE"]) as st:  # the virtual phone was served for the command, as for one device
        assert len(st.measurements("virtual-phone").query("status == 'ok'")) == 3
    assert "not every device finished" in p.stderr and "Traceback" not in p.stderr
    twice = subprocess.run([sys.executable, "-m", "harness", "measure", "-d", "cli-a", "-d", "cli-a,cli-a",
                            "--sample", "2"], env=cli_env, capture_output=True, text=True, timeout=120)
    assert twice.returncode == 0 and "nothing to do" in " ".join(twice.stdout.split())  # one device, named 3 times


def test_join_dry_run_checks_devices_and_prints_ray_start(tmp_path, cli_env):
    devices = tmp_path / "devices"
    body = {"name": "jd", "connection": {"kind": "sleep"}, "runtime": {"name": "onnxruntime"}}
    (devices / "jd.yaml").write_text(yaml.safe_dump(body))
    p = harness("farm", "join", "10.0.0.5:6379", "-d", "jd", "--dry-run", env=cli_env, check=False)
    assert p.returncode == 0, p.stderr
    from harness.farm.plan import farm_digest

    digest = farm_digest(parse_profile(body, "jd"))
    assert "jd: ok" in p.stdout and "start --resources" in p.stdout and '"device:jd": 1.0' in p.stdout
    assert f"harness.profile/jd={digest}" in p.stdout and "--address 10.0.0.5:6379" in p.stdout


def test_report_shows_a_timeline_per_device(store_path, cache_dir, tmp_path):
    from harness.analysis import api

    with Store(store_path) as st:
        s = farm(st, [sleep_profile("t1"), sleep_profile("t2", seed=3), sleep_profile("t3", drop_after=2)],
                 SPACE.sample(5, 7), cache_dir)
        assert not s.finished
        out = api.report(st, tmp_path / "r.html", "nb201", png_dir=tmp_path / "png")
    assert "Campaign timeline per device" in out.read_text()
    assert (tmp_path / "png" / "timeline.png").stat().st_size > 1000


def test_a_device_held_by_another_campaign_is_refused_before_measuring(store_path, cache_dir):
    from harness.devices.lease import DeviceBusy, DeviceLease, lock_dir_for

    with Store(store_path) as st, DeviceLease("held", lock_dir_for(store_path), command="another campaign"):
        with pytest.raises(DeviceBusy, match="another campaign"):
            farm(st, [sleep_profile("free"), sleep_profile("held")], SPACE.sample(2, 0), cache_dir)
        assert st.info()["measurements"] == 0


@pytest.mark.slow
def test_ctrl_c_keeps_every_finished_model_and_the_rerun_completes(tmp_path, cli_env, store_path):
    import signal

    devices = tmp_path / "devices"
    for name in ("int-a", "int-b"):
        (devices / f"{name}.yaml").write_text(yaml.safe_dump(
            {"name": name, "connection": {"kind": "sleep", "latency_ms": 300},
             "runtime": {"name": "onnxruntime"}, "policy": QUICK}))
    cmd = [sys.executable, "-m", "harness", "measure", "-d", "int-a", "-d", "int-b", "--sample", "8", "--seed", "2"]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if store_path.exists():
            try:  # read only, as a second reader would: the command may still be creating the store's tables
                with Store(store_path, readonly=True) as st:
                    if len(st.measurements()) >= 3:
                        break
            except StoreError:
                continue
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with Store(store_path) as st:
        kept = st.measurements()
        assert 3 <= len(kept) < 16 and (kept.status == "ok").all()
        assert set(st.campaigns().status) == {"interrupted"}
    rerun = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    with Store(store_path) as st:
        m = st.measurements()
        assert len(m) == 16 and not m.duplicated(["device", "key"]).any()


def test_the_farm_says_when_kept_latencies_were_measured_with_another_setup(cli_env):
    from tests.conftest import harness

    devices = Path(cli_env["HARNESS_DEVICES"])
    for name, threads in (("fa", 1), ("fb", 1)):
        (devices / f"{name}.yaml").write_text(yaml.safe_dump(
            {"name": name, "connection": {"kind": "sleep", "latency_ms": 2}, "runtime": {"name": "onnxruntime",
             "threads": threads}, "policy": QUICK}))
    harness("measure", "-d", "fa", "-d", "fb", "--arch", "0,1", env=cli_env)
    body = yaml.safe_load((devices / "fb.yaml").read_text())
    body["runtime"]["threads"] = 2
    (devices / "fb.yaml").write_text(yaml.safe_dump(body))
    out = harness("measure", "-d", "fa", "-d", "fb", "--arch", "0,1", env={**cli_env, "COLUMNS": "250"})
    flat = " ".join(out.stdout.split())
    assert "kept as measured on fb were measured with another profile (runtime.threads: 1 -> 2)" in flat, flat
    assert "on fa were" not in flat
    more = harness("measure", "-d", "fa", "-d", "fb", "--arch", "0,1,2", env={**cli_env, "COLUMNS": "250"})
    flat = " ".join(more.stdout.split())  # a farm that measures something says it beside its summary table
    assert "2 architecture(s) kept as measured on fb were measured with another profile" in flat, flat


def test_ctrl_c_while_the_devices_start_closes_every_campaign_as_interrupted(tmp_path, cache_dir, monkeypatch):
    """A Ctrl-C 1 s into a three-device command left 2-3 campaigns 'running' in 2 of 4 tries: abort stopped only
    the devices that had finished starting."""
    from harness.farm import engine

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "wait", ctrl_c)  # the moment the command waits for its devices to start
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(KeyboardInterrupt):
            farm(st, [sleep_profile("ca"), sleep_profile("cb"), sleep_profile("cc")], SPACE.sample(3, 0), cache_dir)
        rows = st.db.execute("SELECT status, finished_at IS NOT NULL FROM campaigns").fetchall()
    assert rows == [("interrupted", 1)] * 3


def test_a_failed_ray_start_is_summed_up_in_its_last_line_with_the_usual_fix():
    """`farm join --head` beside a running head printed Ray's whole Python traceback."""
    from harness.farm.join import ray_start_failure

    trace = ("Traceback (most recent call last):\n  File \"ray/scripts.py\", line 9\n"
             "AssertionError: Session name session_a does not match persisted value session_b.\n")
    said = ray_start_failure(trace)
    assert said.startswith("AssertionError: Session name") and "ray stop" in said and "Traceback" not in said
    assert ray_start_failure("ValueError: bad --resources\n") == "ValueError: bad --resources"


@pytest.mark.parametrize("address", ["garbage:::", "[::1]:99999", "[::1", "host:notaport", "nohost"])
def test_a_malformed_ray_address_is_a_farm_error(address):
    """`--ray 'garbage:::'` was a ValueError traceback from urllib (the port)."""
    from harness.farm.ray_lanes import _reachable
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="expected auto or HOST:PORT"):
        _reachable(address)


def test_farm_join_refuses_an_address_that_is_not_host_port(cli_env):
    """`farm join 'garbage:::' --dry-run` printed `ray start --address garbage:::`; --port 99999 likewise."""
    from tests.conftest import harness

    bad = harness("farm", "join", "garbage:::", "--dry-run", env=cli_env, check=False)
    assert bad.returncode == 2 and "expected HOST:PORT" in " ".join(bad.stderr.split())
    port = harness("farm", "join", "--head", "--port", "99999", "--dry-run", env=cli_env, check=False)
    assert port.returncode == 2 and "--port" in port.stderr
    worker = harness("farm", "join", "--head", "--port", "16379", "--dry-run", env=cli_env, check=False)
    flat = " ".join(worker.stderr.split())  # `ray start` failed with "make sure the same port is not used..."
    assert worker.returncode == 2 and "--port 16379 lies in the range Ray gives its workers (10002-19999" in flat, flat


def test_a_host_and_a_farm_command_agree_on_a_profile_with_the_default_rounds():
    """`farm join` advertised the digest of the profile as written (rounds: 3, as every built-in), the command
    compared the farm's (rounds 1): "digest differs" for byte-identical files, so no such profile ran on Ray."""
    from harness.devices.registry import ProfileRegistry
    from harness.farm.join import node_resources
    from harness.farm.plan import farm_digest, farm_profile
    from harness.farm.resources import digest_label

    for name in ("local-onnx", "local-tflite"):
        p = ProfileRegistry().get(name)
        assert p.policy.rounds == 3
        _, labels = node_resources([p])
        assert labels[digest_label(name)] == farm_digest(farm_profile(p))
        other = p.model_copy(update={"runtime": p.runtime.model_copy(update={"threads": 2})})
        assert farm_digest(other) != labels[digest_label(name)]  # a real difference still shows


def test_each_farm_device_stops_metering_a_counter_that_never_moved(store_path, cache_dir, tmp_path, monkeypatch):
    """As a one-device campaign: three energy passes without a figure, then none (each costs seconds)."""
    import json
    import shutil

    from harness.campaign import ENERGY_GIVE_UP_PASSES

    root = tmp_path / "sysfs"
    shutil.copytree(Path(__file__).parent / "data" / "sysfs" / "x86-rapl", root)  # recorded: it never moves
    monkeypatch.setenv("HARNESS_SYSFS_ROOT", str(root))
    profiles = [parse_profile({"name": f"e{i}", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                               "policy": {**QUICK, "rounds": 1, "energy": "rapl", "energy_seconds": 0.05}}, "p")
                for i in range(2)]
    with Store(store_path) as st:
        s = farm(st, profiles, SPACE.sample(5, 3), cache_dir)
        assert s.finished and [d.ok for d in s.devices] == [5, 5]
        rows = st.db.execute("SELECT d.name, m.conditions_json FROM measurements m JOIN devices d ON d.id = m.device_id")
        passes = {}
        for name, cond in rows:
            passes[name] = passes.get(name, 0) + ("energy" in json.loads(cond))
    assert passes == {"e0": ENERGY_GIVE_UP_PASSES, "e1": ENERGY_GIVE_UP_PASSES}
    assert all(d.energy_given_up and d.no_energy == ENERGY_GIVE_UP_PASSES for d in s.devices)


def test_the_farm_digest_compares_the_files_not_the_commands_workload_flags():
    # `measure --ray ... --batch-size 4` (or --graph keep) refused identical files: "the profile on host ...
    # differs from this command's"; the host measures the profile the command sends, flags included
    from harness.farm.plan import farm_digest

    p = sleep_profile("a")
    assert farm_digest(p.with_workload(batch_size=4)) == farm_digest(p)
    assert farm_digest(p.model_copy(update={"graph": "keep"})) == farm_digest(p)
    other = p.model_copy(update={"runtime": p.runtime.model_copy(update={"threads": 2})})
    assert farm_digest(other) != farm_digest(p)  # what the file says still counts


def test_farm_devices_time_the_paired_reference_as_one_device_does(store_path, cache_dir):
    # the farm measured without it: its latencies were not reference-normalised like a single device's
    import json

    profiles = [parse_profile({"name": f"r{i}", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                               "policy": {"warmup_runs": 1, "adaptive": {"min_runs": 6, "max_runs": 8}}}, "p")
                for i in range(2)]
    assert profiles[0].policy.reference == "auto"
    with Store(store_path) as st:
        s = farm(st, profiles, SPACE.sample(3, 4), cache_dir)
        assert s.finished and [d.ok for d in s.devices] == [3, 3]
        refs = [r[0] for r in st.db.execute("SELECT ref_median_ms FROM measurements")]
        conds = [json.loads(c) for (c,) in st.db.execute("SELECT conditions_json FROM campaigns")]
    assert len(refs) == 6 and all(r is not None and r > 0 for r in refs)
    assert all(c.get("reference") for c in conds)


def test_a_device_measured_by_the_farm_then_alone_says_why_it_measures_again(cli_env):
    # after a farm run (one visit each), `measure -d a` measured all again and said "0 already in the store"
    from tests.conftest import write_profile

    devices = Path(cli_env["HARNESS_DEVICES"])
    for name in ("fa", "fb"):
        write_profile(devices, name, {"name": "onnxruntime"}, {"warmup_runs": 1, "adaptive": {"min_runs": 6,
                                                                                            "max_runs": 8}})
    both = harness("measure", "-d", "fa", "-d", "fb", "--arch", "3,5", env=cli_env)
    assert "run on this machine's CPUs at the same time" in " ".join(both.stderr.split())  # they slow each other
    alone = " ".join(harness("measure", "-d", "fa", "--arch", "3,5", "--rounds", "2", env=cli_env).stdout.split())
    assert "2 of these architectures had visits under another rounds plan" in alone, alone
    resumed = " ".join(harness("measure", "-d", "fa", "--arch", "3,5,7", "--rounds", "2", env=cli_env).stdout.split())
    assert "another rounds plan" not in resumed  # its own plan's visits are not another plan's


def test_the_farm_summary_names_each_workload_series(cli_env):
    # it said "a" where one device's summary and export say "a@bs2"
    devices = Path(cli_env["HARNESS_DEVICES"])
    for name in ("wa", "wb"):
        (devices / f"{name}.yaml").write_text(yaml.safe_dump(
            {"name": name, "connection": {"kind": "sleep", "latency_ms": 5}, "runtime": {"name": "onnxruntime"},
             "policy": QUICK}))
    out = harness("measure", "-d", "wa", "-d", "wb", "--arch", "3", "--batch-size", "2", env=cli_env)
    rows = [line for line in out.stdout.splitlines() if "finished" in line]
    assert any("wa@bs2" in r for r in rows) and any("wb@bs2" in r for r in rows), out.stdout


def test_a_model_lost_with_its_host_does_not_advance_the_groups_bar():
    # the group's bar read 13/12: the lost model counted once as lost and again when another device measured it
    from types import SimpleNamespace

    from rich.progress import Progress

    from harness.cli.farm import FarmProgress

    progress = Progress()
    fp = FarmProgress(progress, "split")
    s = SimpleNamespace(device="k1", group="g", host="h", skipped=0, conditions={}, ok=0, failed=0)
    fp.device_started(s, 2)
    arch = SPACE.parse("3")
    fp.model_done(s, SimpleNamespace(ok=False, arch=arch, failure_kind="device_lost", message="gone", median_ms=None))
    fp.model_done(s, SimpleNamespace(ok=True, arch=arch, failure_kind=None, message=None, median_ms=1.0))
    assert progress.tasks[0].completed == 1


def test_two_profiles_of_one_phone_never_measure_at_once(tmp_path, cache_dir, monkeypatch):
    """`s5e` and `s5e-gpu` (one phone, two profiles) ran at once, each under its own lease: one's pkill of
    benchmark_model killed the other's runs, and on a real phone their runs would overlap unmarked."""
    from contextlib import ExitStack

    from harness.campaign import run_campaign
    from harness.devices.lease import DeviceBusy, leases_for, machine_of

    monkeypatch.setenv("HARNESS_LOCK_DIR", str(tmp_path / "locks"))
    phone = {"connection": {"kind": "adb", "serial": "127.0.0.1:5999"}, "runtime": {"name": "tflite"}}
    a = parse_profile({"name": "s5e", **phone}, "a")
    b = parse_profile({"name": "s5e-gpu", **phone}, "b")
    assert machine_of(a) == machine_of(b) is not None
    here = parse_profile({"name": "cpu", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"}}, "c")
    assert machine_of(here) is None  # several local devices at once is the farm's to ask for
    with ExitStack() as held, Store(tmp_path / "s.db") as st:
        for lease in leases_for(a, tmp_path / "locks", command="harness measure -d s5e"):
            held.enter_context(lease)
        with pytest.raises(DeviceBusy, match="the phone with ADB serial 127.0.0.1:5999 is being measured by .*s5e"):
            run_campaign(st, b, SPACE, SPACE.sample(2, 0), cache=ModelCache(cache_dir))
        with pytest.raises(FarmError, match="s5e and --device s5e-gpu are the phone with ADB serial"):
            plan = make_plan(st, [a, b], SPACE, SPACE.sample(2, 0))
            run_farm(st, plan, {})


def test_a_waiting_farm_measures_only_what_the_campaign_it_waited_for_left(store_path, cache_dir):
    """`measure -d a -d b --wait` worked out its lists before waiting, then measured again the architectures the
    campaign it waited for had measured meanwhile (11 rows for 6 architectures)."""
    import threading

    from harness.campaign import _run
    from harness.devices.lease import DeviceLease, lock_dir_for
    from harness.measure.clock import RealClock

    p = sleep_profile("wa", latency=30.0)
    archs = SPACE.sample(4, 0)
    holder = DeviceLease("wa", lock_dir_for(store_path)).acquire()  # another command's campaign holds the device

    def the_other_campaign() -> None:
        with Store(store_path) as other:
            _run(other, p, SPACE, archs[:3], cache=ModelCache(cache_dir), command="other", remeasure=False,
                 remeasure_stale=False, observer=None, max_consecutive_failures=5, driver=None, write_retry_s=30,
                 clock=RealClock())
        holder.release()

    with Store(store_path) as st:
        plan = make_plan(st, [p], SPACE, archs)
        assert len(plan.queues["wa"].todo) == 4
        other = threading.Thread(target=the_other_campaign)
        other.start()
        run_farm(st, plan, local_lanes(plan, ModelCache(cache_dir)), lease_wait=None,
                 replan=lambda: make_plan(st, [p], SPACE, archs))
        other.join()
        rows = ok_rows(st)
    assert len(rows) == 4 and rows.key.nunique() == 4


def test_ray_auto_with_a_dead_head_is_a_clear_error_not_minutes_of_retries(monkeypatch):
    """After the head crashed, its address stayed behind: `--ray auto` and `farm status` printed Ray's "Failed to
    connect to GCS" every 5 s for minutes without a harness error."""
    pytest.importorskip("ray")
    import socket

    from harness.farm.ray_lanes import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what Ray's address file would name
    t0 = time.time()
    with pytest.raises(FarmError, match="does not answer: its head has stopped"):
        connect("auto")
    assert time.time() - t0 < 10


def test_sigterm_is_taken_back_from_a_library_that_claimed_it():
    """ray.init sets sys.exit on SIGTERM: a farm under --ray ended "failed" with exit 15 instead of interrupted."""
    import signal

    from harness import interrupts

    before = signal.getsignal(signal.SIGTERM)
    try:
        interrupts.install()
        signal.signal(signal.SIGTERM, lambda *a: None)  # what ray.init does
        interrupts.reclaim_sigterm()
        assert signal.getsignal(signal.SIGTERM) is interrupts._on_sigint
    finally:
        interrupts.uninstall()
        signal.signal(signal.SIGTERM, before)


def test_a_device_done_early_is_closed_finished_while_the_others_go_on(store_path, cache_dir):
    """A device done in a second stayed 'running' until the slowest finished; a Ctrl-C meanwhile recorded its
    complete campaign as interrupted."""
    fast, slow = sleep_profile("early", latency=5.0), sleep_profile("late", latency=150.0)
    seen: dict[str, str] = {}

    class Watch:
        def device_started(self, s, todo):
            pass

        def model_done(self, s, outcome):
            if s.device == "late" and outcome.position >= 3:  # "late" still has models to go
                with Store(store_path) as other:
                    seen.update(dict(other.db.execute("SELECT d.name, c.status FROM campaigns c JOIN devices d "
                                                      "ON d.id = c.device_id").fetchall()))

        def device_stopped(self, s):
            pass

    with Store(store_path) as st:
        farm(st, [fast, slow], SPACE.sample(5, 0), cache_dir, observer=Watch())
    assert seen == {"early": "finished", "late": "running"}


def test_the_timeline_draws_one_bar_set_per_device_and_status(monkeypatch):
    """One broken_barh call per attempt rescaled the axes each time: a report of 15,600 measurements took 108 s,
    of 90,000 more than 400 s."""
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes

    from harness.analysis.report import timeline

    n, calls = 3000, []
    real = Axes.broken_barh
    monkeypatch.setattr(Axes, "broken_barh", lambda self, xr, yr, **kw: calls.append(len(xr)) or real(self, xr, yr, **kw))
    rng = np.random.default_rng(0)
    start = pd.Timestamp("2026-12-01T00:00:00Z") + pd.to_timedelta(np.arange(n) * 0.05, unit="s")
    m = pd.DataFrame({"started_at": start.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"),
                      "duration_s": rng.uniform(0.01, 0.04, n), "device": rng.choice(["a", "b", "c"], n),
                      "status": np.where(np.arange(n) % 50 == 0, "failed", "ok"), "failure_kind": None,
                      "campaign_id": 1})
    assert timeline(m) is not None
    assert len(calls) == 6 and sum(calls) == n  # 3 devices x (ok, failed), every attempt drawn
