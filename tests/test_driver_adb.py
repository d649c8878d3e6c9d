"""The ADB driver against the virtual phone: the conformance suite, faults, security, benchmark_model output."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.campaign import run_campaign
from harness.devices import adb_benchmark
from harness.devices.adb import ADBDriver, BenchmarkRunResult
from harness.devices.adb_benchmark import parse_output
from harness.devices.driver import make_driver
from harness.devices.profile import Profile, parse_profile
from harness.devices.registry import ProfileRegistry
from harness.errors import ConnectionLost, DeviceError, MeasurementTimeout, ParseError
from harness.models.cache import Artifact, ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from harness.sim.adb import output as bm_output
from harness.sim.adb.server import Faults, VirtualPhone, serving, write_stand_in
from harness.testing.conformance import DriverConformance, with_policy

FAST = {"warmup_runs": 2, "timed_runs": 5, "min_seconds": 0.0, "timeout_seconds": 20.0}
WORKDIR = "/data/local/tmp/harness"


def adb_profile(serial: str, binary: Path | None, key: Path, policy: dict | None = None, **conn) -> Profile:
    connection = {"kind": "adb", "serial": serial, "key_file": str(key), "connect_timeout_s": 3, **conn}
    if binary is not None:
        connection["benchmark_model"] = str(binary)
    return parse_profile({"name": "test-phone", "connection": connection, "runtime": {"name": "tflite", "threads": 1},
                          "policy": {**FAST, **(policy or {})}}, "test profile")


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    with VirtualPhone(tmp_path_factory.mktemp("phone"), model="s5e") as vp:
        yield vp


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    return write_stand_in(tmp_path_factory.mktemp("bin") / "benchmark_model")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Artifact]:
    sp = get_space("nb201")
    cache = ModelCache(tmp_path_factory.mktemp("adb-cache"))
    return [cache.get(sp.build(a), "tflite") for a in sp.sample(4, 1)]


class TestADBConformance(DriverConformance):
    """The shared suite, unchanged: ADBDriver declares per_run_timings = False (benchmark_model prints
    statistics, not each run), and the suite checks that contract. The tests below add what is ADB's own."""

    @pytest.fixture
    def base_profile(self, phone, stand_in, tmp_path):
        return adb_profile(phone.address, stand_in, tmp_path / "adbkey")

    @pytest.fixture
    def make_driver(self):
        return ADBDriver

    def test_benchmark_model_statistics_are_kept(self, driver, artifact, profile):
        result = driver.run(driver.push(artifact))
        assert isinstance(result, BenchmarkRunResult) and not result.per_run
        bm = result.conditions_after["benchmark_model"]
        assert bm["timed"]["count"] == profile.policy.timed_runs
        assert bm["warmup"]["count"] == profile.policy.warmup_runs
        assert bm["per_run_latencies"] is False and result.warmup_ms == []
        assert result.timed_ms == [bm["timed"]["avg_ms"]] and result.timed_ms[0] > 0
        s = result.summary()
        assert s["min_ms"] <= s["median_ms"] <= bm["timed"]["max_ms"] and s["median_ms"] == bm["timed"]["median_ms"]
        assert result.init_ms and result.init_ms > 0

    def test_timeout_stops_the_leftover_run_before_the_next_model(self, make_driver, profile, artifact, phone):
        d = make_driver(with_policy(profile, timed_runs=1, min_seconds=30.0, timeout_seconds=1.0))
        d.prepare()
        try:
            t0 = time.monotonic()
            with pytest.raises(MeasurementTimeout) as info:
                d.run(d.push(artifact))
            assert info.value.kind.value == "timeout" and time.monotonic() - t0 < 10
            d.profile = profile
            result = d.run(d.push(artifact))
            assert result.conditions_after["benchmark_model"]["timed"]["count"] == profile.policy.timed_runs
            assert ["pkill", "-x", "benchmark_model"] in phone.executed  # the leftover run is stopped first
        finally:
            d.cleanup()


# --- the built-in virtual phone ---------------------------------------------------------------

def test_virtual_phone_profile_runs_a_campaign(store_path, cache_dir):
    profile = with_policy(ProfileRegistry("/nonexistent").get("virtual-phone"), **FAST)
    assert profile.connection.serial == "virtual"
    sp = get_space("nb201")
    archs = sp.sample(3, 0)
    with serving(profile) as served, Store(store_path) as st:
        assert served.connection.serial.startswith("127.0.0.1:")
        summary = run_campaign(st, served, sp, archs, cache=ModelCache(cache_dir))
        assert summary.ok == 3 and summary.status == "finished"
        assert summary.runs == 3 * FAST["timed_runs"]  # the tool's count, though it returns only statistics
        assert summary.conditions["device_model"] == "Harness Virtual Phone"
        assert summary.conditions["runtime_version"].startswith("benchmark_model sha256:")
        m = st.measurements("virtual-phone")
        # benchmark_model reports whole microseconds: the constant-output network among the three (no operators)
        # runs in about one, so it reads 0 or 1 us; every real network takes far more
        real = m["degenerate"] == 0
        assert (m["status"] == "ok").all() and (m["median_ms"][real] > 0.01).all() and (m["median_ms"] >= 0).all()
        assert real.sum() == 2
        assert (m["n_runs"] == FAST["timed_runs"]).all() and (m["per_run"] == 0).all()  # statistics, not runs
        assert (st.campaigns()["per_run"] == 0).all()


@pytest.mark.slow
def test_cli_measure_virtual_phone_needs_no_setup(cli_env, tmp_path):
    env = {**cli_env, "HOME": str(tmp_path / "home")}
    p = subprocess.run([sys.executable, "-m", "harness", "measure", "--device", "virtual-phone", "--space", "nb201",
                        "--sample", "5"], env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "5 measured, 0 failed" in p.stdout
    assert not (tmp_path / "home" / ".android").exists()  # no key needed, none created


def test_an_adaptive_policy_on_benchmark_model_says_the_fixed_count_it_times(cli_env, tmp_path):
    """benchmark_model times --num_runs: a phone profile on the default (adaptive) policy is told so, and the
    store holds exactly timed_runs runs per visit, not the adaptive 6-10 the profile seems to ask for."""
    (Path(cli_env["HARNESS_DEVICES"]) / "my-phone.yaml").write_text(
        "name: my-phone\nconnection: {kind: adb, serial: virtual}\nruntime: {name: tflite}\n"
        "policy: {warmup_runs: 1, rounds: 1, reference: none, adaptive: {max_runs: 8}}\n")
    env = {**cli_env, "HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "harness", "measure", "-d", "my-phone", "--arch", "0"], env=env,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "times a fixed count: 50 runs per visit" in p.stdout
    with Store(cli_env["HARNESS_STORE"]) as st:
        assert st.measurements("my-phone", "nb201").n_runs.tolist() == [50]


# --- faults -----------------------------------------------------------------------------------

class DropAfterSecondModel:
    """Observer that arms the phone to drop the connection in the middle of the third model."""

    def __init__(self, vp: VirtualPhone):
        self.vp = vp

    def started(self, summary, todo):
        pass

    def model_done(self, outcome, summary):
        if outcome.position == 2:
            self.vp.faults.drop_after = len(self.vp.services) + 2


def test_drop_mid_campaign_stops_cleanly_and_rerun_resumes(tmp_path, stand_in, store_path, cache_dir):
    sp = get_space("nb201")
    archs = sp.sample(4, 3)
    with VirtualPhone(tmp_path / "phone") as vp:
        profile = adb_profile(vp.address, stand_in, tmp_path / "adbkey")
        with Store(store_path) as st:
            with pytest.raises(ConnectionLost, match="lost the connection"):
                run_campaign(st, profile, sp, archs, cache=ModelCache(cache_dir), observer=DropAfterSecondModel(vp))
            m = st.measurements("test-phone")
            assert len(m) == 2 and (m["status"] == "ok").all()  # the finished models are kept
            assert st.db.execute("SELECT status FROM campaigns").fetchone()[0] == "failed"
            again = run_campaign(st, profile, sp, archs, cache=ModelCache(cache_dir))
            assert again.skipped == 2 and again.ok == 2 and again.status == "finished"
            assert set(st.measured_keys("test-phone", "nb201")) == {a.key for a in archs}


def test_stall_is_a_timeout_then_the_lost_phone_ends_the_campaign(tmp_path, stand_in, models):
    with VirtualPhone(tmp_path / "phone") as vp:
        d = ADBDriver(adb_profile(vp.address, stand_in, tmp_path / "adbkey", policy={"timeout_seconds": 1.0},
                                  connect_timeout_s=1))
        d.prepare()
        vp.faults.stall_after = len(vp.services)
        t0 = time.monotonic()
        with pytest.raises(MeasurementTimeout, match="no answer"):
            d.run(d.push(models[0]))
        assert time.monotonic() - t0 < 5
        with pytest.raises(ConnectionLost, match="reconnecting failed"):
            d.push(models[1])
        d.cleanup()


def test_refused_auth_is_a_clear_device_error(tmp_path, stand_in):
    with VirtualPhone(tmp_path / "phone", auth=True, faults=Faults(refuse_auth=True)) as vp:
        profile = adb_profile(vp.address, stand_in, tmp_path / "keys" / "adbkey")
        with pytest.raises(DeviceError, match="did not accept this computer's ADB key") as info:
            ADBDriver(profile).prepare()
        assert not isinstance(info.value, ConnectionLost) and "Allow USB debugging" in str(info.value)
        report = ADBDriver(profile).check()
        assert not report.ok and "tap 'Allow'" in report.message
        key = tmp_path / "keys" / "adbkey"
        assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_accepted_key_connects_and_nobody_at_the_phone_times_out(tmp_path, stand_in):
    key = tmp_path / "adbkey"
    with VirtualPhone(tmp_path / "phone", auth=True, accept_new_keys=True) as vp:
        report = ADBDriver(adb_profile(vp.address, stand_in, key)).check()
        assert report.ok and report.details["device_model"] == "Harness Virtual Phone"
    with VirtualPhone(tmp_path / "phone2", auth=True, accept_new_keys=False) as vp:
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="did not accept"):
            ADBDriver(adb_profile(vp.address, stand_in, tmp_path / "other", connect_timeout_s=1)).prepare()
        assert time.monotonic() - t0 < 5


def test_disk_full_push_is_a_clear_device_error(tmp_path, stand_in, models):
    with VirtualPhone(tmp_path / "phone") as vp:
        d = ADBDriver(adb_profile(vp.address, stand_in, tmp_path / "adbkey"))
        d.prepare()
        vp.set_disk_free(1000)
        with pytest.raises(DeviceError, match="No space left on device") as info:
            d.push(models[0])
        assert not isinstance(info.value, ConnectionLost)
        assert not [p for p in (vp.root / WORKDIR.lstrip("/")).iterdir() if p.suffix in (".tflite", ".part")]
        vp.set_disk_free(None)
        assert d.run(d.push(models[0])).timed_ms  # space freed: the driver carries on
        d.cleanup()


def test_unreachable_phone_is_reported_not_raised(tmp_path, stand_in):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = ADBDriver(adb_profile(f"127.0.0.1:{port}", stand_in, tmp_path / "adbkey")).check()
    assert not report.ok and not report.reachable and "cannot reach 127.0.0.1" in report.message
    assert "adb tcpip 5555" in report.message
    # the driver never starts a phone: 'virtual' is the CLI's to serve, and the message says so
    virtual = ADBDriver(adb_profile("virtual", stand_in, tmp_path / "adbkey", connect_timeout_s=1)).check()
    assert not virtual.ok and "serving(profile)" in virtual.message


# --- security -----------------------------------------------------------------------------------

HOSTILE = ["$(touch PWNED)", "`touch PWNED`", "a;touch PWNED", "x' ; touch PWNED; '", "-rf"]


def test_hostile_names_digests_and_workdir_are_never_executed(tmp_path, stand_in, models):
    workdir = "/data/local/tmp/h dir;$(touch PWNED) 'q'"
    with VirtualPhone(tmp_path / "phone") as vp:
        d = ADBDriver(adb_profile(vp.address, stand_in, tmp_path / "adbkey", workdir=workdir))
        d.prepare()
        for name in HOSTILE:
            folder = tmp_path / f"in {name}"
            folder.mkdir()
            local = folder / f"{name}.tflite"
            local.write_bytes(models[0].path.read_bytes())
            ref = d.push(Artifact(local, "tflite", name, False, 0.0))
            assert ref.startswith(workdir + "/") and "PWNED" not in ref[len(workdir):]
            assert d.run(ref).timed_ms
        d.cleanup()
        assert not list(vp.root.rglob("PWNED")) and not list(tmp_path.rglob("PWNED"))
        assert not [argv for argv in vp.executed if argv[0] == "touch"]
        assert (vp.root / workdir.lstrip("/")).is_dir()  # the odd name is a folder, literally


def test_bad_taskset_mask_and_missing_delegate_are_device_errors(tmp_path, stand_in, models):
    with VirtualPhone(tmp_path / "phone", model="pixel3") as vp:
        ok = ADBDriver(adb_profile(vp.address, stand_in, tmp_path / "adbkey", taskset="f0"))
        assert ok.run(ok.push(models[0])).timed_ms
        assert any(argv[:2] == ["taskset", "f0"] for argv in vp.executed)
        ok.cleanup()
        bad = ADBDriver(adb_profile(vp.address, stand_in, tmp_path / "adbkey", taskset="f00"))
        with pytest.raises(DeviceError, match="sched_setaffinity"):
            bad.run(bad.push(models[0]))
        bad.cleanup()
        p = adb_profile(vp.address, stand_in, tmp_path / "adbkey")
        gpu = ADBDriver(p.model_copy(update={"runtime": p.runtime.model_copy(update={"delegate": "gpu"})}))
        with pytest.raises(DeviceError, match="Failed to apply GPU delegate"):
            gpu.run(gpu.push(models[0]))
        assert any("--use_gpu=true" in argv for argv in vp.executed)
        gpu.cleanup()


# --- pushes, conditions, output ---------------------------------------------------------------

def test_push_skips_same_content_and_replaces_a_changed_binary(tmp_path, models):
    binary = write_stand_in(tmp_path / "benchmark_model")
    with VirtualPhone(tmp_path / "phone") as vp:
        d = ADBDriver(adb_profile(vp.address, binary, tmp_path / "adbkey"))
        sha1 = d.prepare()["benchmark_model_sha256"]
        d.push(models[0])
        d.cleanup()
        sends = vp.services.count("sync:")
        d = ADBDriver(adb_profile(vp.address, binary, tmp_path / "adbkey"))
        d.prepare()
        d.push(models[0])
        assert vp.services.count("sync:") - sends == 2  # two STATs, no SEND: both already there
        d.cleanup()
        binary.write_bytes(binary.read_bytes() + b"# v2\n")
        d = ADBDriver(adb_profile(vp.address, binary, tmp_path / "adbkey"))
        sha2 = d.prepare()["benchmark_model_sha256"]
        assert sha2 != sha1
        remote = vp.root / WORKDIR.lstrip("/") / "benchmark_model"
        assert remote.read_bytes() == binary.read_bytes() and remote.stat().st_mode & 0o111
        d.cleanup()


def test_conditions_before_and_after_each_model(phone, stand_in, models, tmp_path):
    d = ADBDriver(adb_profile(phone.address, stand_in, tmp_path / "adbkey"))
    static = d.prepare()
    assert static["device_model"] == "SM-T720 (harness virtual phone)" and static["simulated"] is True and static["soc"] == "SM6150" and static["android_version"] == "11"
    assert static["cpu_count"] == 8 and static["cpu_max_freq_mhz"]["cpu7"] == 2016.0
    assert static["governors"]["cpu0"] == "schedutil" and "battery" in static["thermal_zones"].values()
    result = d.run(d.push(models[1]))
    for cond in (result.conditions_before, result.conditions_after):
        assert set(cond["cpu_freq_mhz"]) == {f"cpu{i}" for i in range(8)}
        assert 15 < cond["battery_temp_c"] < 60 and 15 < cond["temperatures_c"]["cpu-0-0-usr"] < 60
    assert result.conditions_after["wall_s"] > 0
    # a min_freq_ratio gate can be judged on a phone: it read "not observable" (no maximum) and never held a model
    from harness.devices.profile import Gate
    from harness.measure.gating import violations

    state = d.state()
    assert state["max_freq_mhz"]["cpu7"] == 2016.0
    _, observable = violations(Gate(min_freq_ratio=0.5), state)
    assert observable
    d.cleanup()


def test_missing_binary_without_a_local_copy_is_explained(tmp_path):
    with VirtualPhone(tmp_path / "phone") as vp:
        with pytest.raises(DeviceError, match="set connection.benchmark_model"):
            ADBDriver(adb_profile(vp.address, None, tmp_path / "adbkey")).prepare()
        with pytest.raises(DeviceError, match="benchmark_model not found"):
            ADBDriver(adb_profile(vp.address, tmp_path / "nope", tmp_path / "adbkey")).prepare()


def test_malformed_benchmark_output_is_a_parse_error(phone, stand_in, models, tmp_path, monkeypatch):
    d = ADBDriver(adb_profile(phone.address, stand_in, tmp_path / "adbkey"))
    d.prepare()
    monkeypatch.setattr(bm_output, "stat_line", lambda values: "count=5 first=12 curr=1x3 min=9 max=20 avg=1"
                                                                   "2.5 std=3")
    with pytest.raises(ParseError, match="curr is not a number"):
        d.run(d.push(models[0]))
    monkeypatch.undo()
    assert d.run(d.push(models[0])).timed_ms
    d.cleanup()


# --- the parser on every format benchmark_model has printed ----------------------------------

OLD_2018 = """Loaded model /data/local/tmp/m.tflite
resolved reporter
Initialized session in 9.933ms
Running benchmark for at least 4 iterations and at least 0.5 seconds
curr=66709 count=7 min=66709 max=127425 avg=76605.9 std=20944

Running benchmark for at least 10 iterations and at least 1 seconds
curr=66800 count=15 min=66699 max=66838 avg=66767.6 std=39

Average inference timings in us: Warmup: 76605.9, Init: 9933, no stats: 66767.6
"""

TF_2020 = """STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/espcn.tflite]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/espcn.tflite
The input model file size (MB): 0.004448
Initialized session in 0.855ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=15 first=49060 curr=33682 min=32825 max=49060 avg=34825.1 std=3930

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=32891 curr=33978 min=32641 max=34005 avg=33209.4 std=450

Inference timings in us: Init: 855, First inference: 49060, Warmup (avg): 34825.1, Inference (avg): 33209.4
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=0 overall=12.8672
"""

LITERT = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [20]
INFO: Num threads: [1]
INFO: Min warmup runs: [0]
INFO: Graph: [/data/local/tmp/harness/m.tflite]
INFO: Loaded model /data/local/tmp/harness/m.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 1.23457e+06
INFO: Initialized session in 12.5ms.
INFO: Running benchmark for at least 0 iterations and at least 0 seconds but terminate if exceeding 121 seconds.
INFO: count=0 p5=0 median=0 p95=0

INFO: Running benchmark for at least 20 iterations and at least 0 seconds but terminate if exceeding 121 seconds.
INFO: count=20 curr=1500(all same) p5=1500 median=1500 p95=1500

INFO: Inference timings in us: Init: 12500, First inference: 0, Warmup (avg): nan, Inference (avg): 1500
INFO: Memory footprint delta from the start of the tool (MB): init=3.5 overall=4.25
INFO: Overall peak memory footprint (MB) via periodic monitoring: 9.75
INFO: - VmRSS              : 20 MB
"""


def test_parser_reads_every_generation_of_output():
    old = parse_output(OLD_2018)
    assert old.init() == 9.933 and old.timed_stat().count == 15 and old.timed_stat().avg_us == 66767.6
    assert old.warmup.stat.count == 7 and old.timings_us["inference_avg_us"] == 66767.6
    mid = parse_output(TF_2020.replace("\n", "\r\n"))
    t = mid.timed_stat()
    assert (t.count, t.first_us, t.curr_us, t.min_us, t.max_us, t.std_us) == (50, 32891, 33978, 32641, 34005, 450)
    assert mid.regular.max_secs == 150 and mid.info["num_threads"] == 4 and mid.memory_mb["peak_overall"] == 12.8672
    assert mid.timings_us == {"init_us": 855, "first_us": 49060, "warmup_avg_us": 34825.1,
                              "inference_avg_us": 33209.4}
    new = parse_output(LITERT)
    t = new.timed_stat()
    assert t.all_same and (t.count, t.min_us, t.max_us, t.avg_us, t.std_us, t.median_us) == (20, 1500, 1500, 1500, 0,
                                                                                                1500)
    assert new.warmup.stat.count == 0 and new.timings_us["warmup_avg_us"] is None
    assert new.info["model_size_mb"] == 1.23457e6 and new.memory_mb["vmrss"] == 20 and new.init() == 12.5


@pytest.mark.parametrize("bad", [
    TF_2020.replace("avg=33209.4", "avg=fast"),
    TF_2020.replace("count=50 first", "count=5O first"),
    TF_2020.replace("Initialized session in 0.855ms.", "Initialized session in 0,855ms."),
    TF_2020.replace("Inference (avg): 33209.4", "Inference (avg): nan"),
    TF_2020.replace("Init: 855,", "Init: ?,"),
    TF_2020.replace("count=50 first=32891 curr=33978 ", "count=50 first=32891 "),
    TF_2020.replace("Running benchmark for at least 50 iterations", "Running benchmark for at least many iterations"),
    "\n".join(line for line in TF_2020.splitlines() if not line.startswith("count=50")),
    "ERROR: Failed to mmap model m.tflite\nERROR: Benchmarking failed.\n",
])
def test_parser_never_turns_a_bad_number_into_zero(bad):
    with pytest.raises(ParseError):
        out = parse_output(bad)
        out.timed_stat()
        out.init()


def test_formatter_and_parser_agree():
    values = [1200, 1100, 1300, 1150, 1250]
    line = bm_output.stat_line(values)
    assert line == "count=5 first=1200 curr=1250 min=1100 max=1300 avg=1200 std=70 p5=1100 median=1200 p95=1300"
    assert bm_output.stat_line([7, 7, 7]) == "count=3 curr=7(all same) p5=7 median=7 p95=7"
    argv = adb_benchmark.command("/d/benchmark_model", "/d/m.tflite", threads=1, warmup_runs=3, num_runs=9,
                                 min_secs=0.5, max_secs=121, delegate="nnapi", taskset="c0")
    assert argv[:3] == ["taskset", "c0", "/d/benchmark_model"] and "--use_nnapi=true" in argv
    assert "--warmup_min_secs=0" in argv and "--min_secs=0.5" in argv and "--max_secs=121" in argv


def test_registry_knows_the_adb_driver():
    p = ProfileRegistry("/nonexistent").get("s5e")
    assert isinstance(make_driver(p), ADBDriver)


def test_a_zero_microsecond_average_is_a_parse_error_not_a_zero_latency():
    """benchmark_model's resolution is 1 us: a degenerate model on a fast phone can print avg=0, which must not
    be stored as a 0 ms success."""
    from harness.devices import adb_benchmark
    from harness.errors import ParseError

    zeros = LITERT.replace("count=20 curr=1500(all same) p5=1500 median=1500 p95=1500",
                           "count=20 curr=0(all same) p5=0 median=0 p95=0").replace("Inference (avg): 1500",
                                                                                   "Inference (avg): 0")
    assert zeros != LITERT
    with pytest.raises(ParseError, match="above 0"):
        adb_benchmark.run_result(zeros, 0, where="phone", timed_runs=1, before={}, after={})
    ok = adb_benchmark.run_result(LITERT, 0, where="phone", timed_runs=1, before={}, after={})
    assert ok.timed_ms[0] > 0
    one = adb_benchmark.run_result(LITERT.replace("count=20 ", "count=1 "), 0, where="phone", timed_runs=1, before={},
                                   after={})
    assert one.n_runs == 1 and one.summary()["std_ms"] is None  # benchmark_model's std=0 of one run is no spread


def test_error_lines_of_a_run_that_exits_0_are_never_dropped():
    """`ERROR: NNAPI delegate failed to apply: falling back to the CPU` then normal statistics was stored as a clean
    success: a CPU latency under the NNAPI profile's name. Other ERROR lines now mark the visit suspect."""
    from harness.campaign import judge
    from harness.devices import adb_benchmark
    from harness.devices.profile import Policy
    from harness.errors import DeviceError

    fallback = LITERT.replace("INFO: STARTING!", "INFO: STARTING!\nERROR: NNAPI delegate failed to apply: falling "
                              "back to the CPU", 1)
    with pytest.raises(DeviceError, match="NNAPI delegate failed.*none is stored"):
        adb_benchmark.run_result(fallback, 0, where="phone", timed_runs=1, before={}, after={})
    odd = LITERT.replace("INFO: STARTING!", "INFO: STARTING!\nERROR: something the tool did not like", 1)
    r = adb_benchmark.run_result(odd, 0, where="phone", timed_runs=1, before={}, after={})
    _, suspect = judge(r, Policy())
    assert "something the tool did not like" in suspect
    clean = adb_benchmark.run_result(LITERT, 0, where="phone", timed_runs=1, before={}, after={})
    assert judge(clean, Policy())[1] is None
