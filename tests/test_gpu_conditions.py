"""GPU, Jetson and energy readers on a fake NVML and recorded sysfs trees; energy through a real campaign;
`devices check` warnings."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from harness.campaign import run_campaign
from harness.devices import hwprobe
from harness.devices.driver import make_driver
from harness.devices.profile import parse_profile
from harness.devices.runner_client import condition_warnings
from harness.errors import DriverUnavailable, ProfileError
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.export import latency_table
from harness.results.store import Store
from harness.sim.nvml import FakeGPU, FakeNVML

TREES = Path(__file__).parent / "data" / "sysfs"
SPACE = get_space("nb201")


def fake_nvml(**gpu) -> FakeNVML:
    nv = FakeNVML([FakeGPU(**gpu)])
    nv.nvmlInit()
    return nv


def test_nvml_conditions_from_the_fake():
    nv = fake_nvml(reasons=0x1)
    static, dyn = hwprobe.nvml_static(nv), hwprobe.nvml_dynamic(nv)
    assert static["gpu_name"] == "NVIDIA GeForce GTX 1080 Ti" and static["nvidia_driver"] == "535.104.05"
    assert static["cuda_driver"] == "12.2" and static["persistence_mode"] is True and static["max_sm_clock_mhz"] == 1911
    assert dyn["sm_clock_mhz"] == 1480 and dyn["gpu_temperature_c"] == 41 and dyn["gpu_power_w"] == 62.0
    assert dyn["app_sm_clock_mhz"] is None  # not supported on GeForce: absent, not an error
    assert dyn["clocks_locked"] is False and dyn["clock_event_reasons"] == ["gpu_idle"]
    locked = hwprobe.nvml_dynamic(fake_nvml(reasons=0x2 | 0x4))
    assert locked["clocks_locked"] is True and locked["clock_event_reasons"] == ["user_defined_clocks", "sw_power_cap"]


def test_jetson_nano_tree():
    c = hwprobe.jetson_conditions(str(TREES / "jetson-nano"))
    assert c["jetson_model"] == "NVIDIA Jetson Nano Developer Kit"
    assert (c["power_mode_id"], c["power_mode"]) == (1, "5W")
    assert c["jetson_clocks"] is False and c["gpu_freq_mhz"] == 76.8 and c["gpu_max_freq_mhz"] == 640.0
    assert c["emc_freq_mhz"] == 1600.0
    assert hwprobe.jetson_conditions(str(TREES / "x86-rapl")) is None  # not a Jetson


def test_jetson_clocks_on_when_every_clock_is_pinned(tmp_path):
    root = tmp_path / "nano"
    shutil.copytree(TREES / "jetson-nano", root)
    (root / "sys/devices/gpu.0/devfreq/57000000.gpu/min_freq").write_text("640000000\n")
    (root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq").write_text("918000\n")
    assert hwprobe.jetson_conditions(str(root))["jetson_clocks"] is True


def test_check_warns_about_unlocked_clocks_and_the_power_mode():
    p = parse_profile({"name": "nano", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                       "policy": {"power_mode": "MAXN"}}, "nano.yaml")
    nv = fake_nvml(reasons=0x1, persistence=0)
    gpu = {"nvml": {**hwprobe.nvml_static(nv), **hwprobe.nvml_dynamic(nv)},
           "jetson": hwprobe.jetson_conditions(str(TREES / "jetson-nano"))}
    warnings = condition_warnings(p, gpu)
    assert any("clocks are not locked" in w and "nvidia-smi -lgc" in w for w in warnings)
    assert any("persistence mode is off" in w for w in warnings)
    assert any("jetson_clocks is not on" in w for w in warnings)
    assert any("power mode is 5W" in w and "policy.power_mode is MAXN" in w for w in warnings)
    nv_ok = fake_nvml(reasons=0x2)
    assert condition_warnings(p.model_copy(update={"policy": p.policy.model_copy(update={"power_mode": "5W"})}),
                              {"nvml": {**hwprobe.nvml_static(nv_ok), **hwprobe.nvml_dynamic(nv_ok)}}) == []


def test_rapl_counter_with_wrap_around(tmp_path):
    root = tmp_path / "rapl"
    shutil.copytree(TREES / "x86-rapl", root)
    counter = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    meter = hwprobe.rapl_meter(str(root))
    assert meter is not None and meter.method == "rapl"
    meter.start()
    counter.write_text(str(123456789 + 5_000_000))  # 5 J over 10 inferences
    assert meter.stop(10) == pytest.approx(500.0)
    counter.write_text("262143000000")
    meter.start()
    counter.write_text("1000000")  # wrapped past max_energy_range_uj
    assert meter.stop(1) == pytest.approx((262143328850 - 262143000000 + 1000000) / 1000)
    assert hwprobe.rapl_meter(str(tmp_path / "nothing")) is None


def test_nvml_energy_counter_and_power_integration():
    nv = fake_nvml(power_mw=100_000)
    meter = hwprobe.energy_meter("nvml", nvml=nv)
    assert meter.method == "nvml-energy"
    per, facts = meter.measure(lambda: time.sleep(0.004), min_s=0.3)
    assert per == pytest.approx(100_000 * facts["window_s"] / facts["runs"], rel=0.03)  # steps seen within 1 ms
    assert per == pytest.approx(100_000 * 0.004, rel=0.5) and facts["steps"] >= 3
    old = fake_nvml(power_mw=100_000, energy_counter=False)  # pre-Volta: no counter, power is integrated
    meter = hwprobe.energy_meter("nvml", nvml=old)
    assert meter.method == "nvml-power"
    per, facts = meter.measure(lambda: time.sleep(0.004), min_s=0.2)
    assert per == pytest.approx(100_000 * facts["window_s"] / facts["runs"], rel=0.1)


def test_the_fake_counter_moves_in_steps_as_nvml_does():
    """On an H200 NVML's total energy moved every 100 ms (harness's probe, driver 580.159): reads between two
    steps are equal, and a step adds the energy of a whole period."""
    nv = fake_nvml(power_mw=100_000, energy_period_s=0.05)
    h = nv.nvmlDeviceGetHandleByIndex(0)
    seen = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.26:
        v = nv.nvmlDeviceGetTotalEnergyConsumption(h)
        if not seen or v != seen[-1]:
            seen.append(v)
        time.sleep(0.001)
    steps = [b - a for a, b in zip(seen, seen[1:])]
    assert 4 <= len(steps) <= 6 and all(s == pytest.approx(100_000 * 0.05, rel=0.05) for s in steps)


def test_energy_is_read_between_the_counters_steps_not_at_arbitrary_moments():
    """Energy per inference of a 3 ms model on a 100 W GPU whose counter steps every 100 ms. Read over a short
    window at arbitrary moments (as harness did, around 20 timed runs) it is 0 or a whole step's worth; read
    between steps over the energy pass it is the model's own."""
    nv = fake_nvml(power_mw=100_000, energy_period_s=0.1)
    meter = hwprobe.energy_meter("nvml", nvml=nv)
    naive = []
    for _ in range(6):
        meter.start()
        for _ in range(10):
            time.sleep(0.003)
        naive.append(meter.stop(10))
    assert any(v == 0 for v in naive)  # no step inside the window: "0 mJ" (the old figure could be this)
    ends = []

    def invoke():
        time.sleep(0.003)
        ends.append(time.perf_counter())

    per, facts = meter.measure(invoke, min_s=0.5)
    cycle = (ends[-1] - ends[0]) / (len(ends) - 1)  # one inference back to back, as the pass runs them
    assert per == pytest.approx(100_000 * cycle, rel=0.05)
    assert facts["window_s"] >= 0.5 and facts["steps"] >= 5


@pytest.mark.parametrize("period_s, inference_s", [(0.05, 0.15), (0.1, 0.12), (0.001, 0.02)])
def test_energy_is_exact_for_inferences_as_long_as_a_step_or_far_longer_than_one(period_s, inference_s):
    """Each inference counts by the share of its time between the first and last step: counting whole inferences
    that ended in the window overstated a 200 ms inference 1.26x on 1 ms steps, and dropped one longer than the
    window altogether."""
    nv = fake_nvml(power_mw=100_000, energy_period_s=period_s)
    per, facts = hwprobe.energy_meter("nvml", nvml=nv).measure(lambda: time.sleep(inference_s), min_s=0.4)
    spans = facts["window_s"] / facts["runs"]  # the time one inference took, as the pass saw it
    assert spans == pytest.approx(inference_s, rel=0.15)
    assert per == pytest.approx(100_000 * spans, rel=0.05)


def test_rapl_unwraps_each_package_on_its_own(tmp_path):
    """Two packages summed: when one wraps and the other does not, adding the summed range was off by the other's
    whole range."""
    base = tmp_path / "sys/class/powercap"
    for d, start in (("intel-rapl:0", 262_000_000_000), ("intel-rapl:1", 5_000_000)):
        (base / d).mkdir(parents=True)
        (base / d / "energy_uj").write_text(str(start))
        (base / d / "max_energy_range_uj").write_text("262143328850")
    meter = hwprobe.rapl_meter(str(tmp_path))
    meter.start()
    (base / "intel-rapl:0" / "energy_uj").write_text("1000000")  # wrapped: +143,328,850 + 1,000,000 uJ
    (base / "intel-rapl:1" / "energy_uj").write_text("7000000")  # +2,000,000 uJ
    assert meter.stop(1) == pytest.approx((143_328_850 + 1_000_000 + 2_000_000) / 1000)


def test_the_energy_pass_is_kept_out_of_the_timed_runs_neighbour_window(tmp_path, monkeypatch):
    """The other processes' CPU share that marks a visit suspect is over the timed runs; the energy pass after them
    (1 s against a 40 ms visit) diluted it 29x."""
    from harness.devices import runner
    from harness.models.cache import ModelCache

    class SlowMeter:
        method = "fake"

        def measure(self, invoke, min_s):
            time.sleep(0.6)
            return 1.0, {"runs": 1}

    monkeypatch.setattr(runner, "energy_meter", lambda req: SlowMeter())
    art = ModelCache(tmp_path).get(SPACE.build(SPACE.parse("0")), "onnx")
    resp = runner.handle({"op": "run", "runtime": "onnxruntime", "model": str(art.path), "timed_runs": 5,
                          "warmup_runs": 0, "energy": "nvml"})
    assert resp["ok"] and resp["energy_mj"] == 1.0
    assert resp["neighbours"]["wall_s"] < 0.4


def test_a_counter_that_does_not_move_gives_no_energy_and_says_why():
    meter = hwprobe.CounterMeter("rapl", lambda: 5.0)
    per, facts = meter.measure(lambda: time.sleep(0.001), min_s=0.05, max_s=0.1)
    assert per is None and "moved 0 time(s)" in facts["why"]


def test_jetson_ina_and_battery_meters():
    meter = hwprobe.energy_meter("auto", root=str(TREES / "jetson-nano"), nvml=None)
    if meter.method != "jetson-ina":  # auto prefers NVML; this machine has none, so the rails answer
        pytest.skip("a real NVML answered first")
    assert set(hwprobe.ina_rails(str(TREES / "jetson-nano"))) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}
    meter.start()
    time.sleep(0.1)
    assert meter.stop(1) == pytest.approx(2800 * 0.1, rel=0.3)  # the board's input rail, 2.8 W
    battery = hwprobe.energy_meter("battery", root=str(TREES / "phone-battery"))
    assert battery.method == "battery-coarse" and battery.read_mw() == pytest.approx(1755.0)


@pytest.fixture
def rapl_tree(tmp_path, monkeypatch):
    """A RAPL counter that rises 50 W while the test runs, seen by the runner subprocess."""
    root = tmp_path / "sysfs"
    shutil.copytree(TREES / "x86-rapl", root)
    counter = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    stop = threading.Event()

    def tick():
        t0, e0 = time.perf_counter(), 123456789
        while not stop.wait(0.002):
            tmp = counter.with_suffix(".tmp")
            tmp.write_text(str(int(e0 + (time.perf_counter() - t0) * 50e6)))  # 50 W = 50e6 µJ/s
            os.replace(tmp, counter)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    monkeypatch.setenv("HARNESS_SYSFS_ROOT", str(root))
    yield root
    stop.set()
    thread.join()


def test_energy_per_inference_is_stored_and_exported(rapl_tree, tmp_path, cache_dir):
    p = parse_profile({"name": "cpu-energy", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                       "policy": {"warmup_runs": 1, "timed_runs": 20, "min_seconds": 0.2, "energy": "rapl"}}, "<e>")
    with Store(tmp_path / "s.db") as st:
        assert run_campaign(st, p, SPACE, SPACE.parse_many(["3", "9"]), cache=ModelCache(cache_dir)).ok == 2
        m = st.measurements("cpu-energy")
        df = latency_table(st, "nb201")
    assert set(m.energy_method) == {"rapl"} and (m.energy_mj > 0).all()
    # 50 W over the metered window (the file ticks every 2 ms): at least 50 W x the runs' own time, at most 50 W x
    # the whole visit (on a loaded machine the window also holds time the runner waited for a CPU: 3.5x once)
    for mj, mean_ms, visit_s, n in zip(m.energy_mj, m.mean_ms, m.duration_s, m.n_runs):
        assert 0.5 * 50 * mean_ms <= mj <= 1.2 * 50 * visit_s * 1000 / n, (mj, mean_ms, visit_s, n)
    assert "cpu-energy_mj" in df.columns and df["cpu-energy_mj"].notna().sum() == 2


@pytest.mark.parametrize("visits, metered", [("first", 2), ("all", 6)])
def test_the_energy_pass_runs_on_each_architectures_first_visit_unless_asked_for_every_visit(
        rapl_tree, tmp_path, cache_dir, visits, metered, capsys):
    """Each energy pass adds energy_seconds to its visit: on every visit of every round it multiplied a fast
    campaign's time several-fold for the same figure. By default only each architecture's first visit meters it,
    and export still gives every architecture its energy (the latest visit that has one)."""
    from harness.cli.measure import print_visit_notes

    p = parse_profile({"name": "cpu-energy", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                       "policy": {"warmup_runs": 1, "timed_runs": 5, "rounds": 3, "energy": "rapl",
                                  "energy_seconds": 0.05, "energy_visits": visits}}, "<e>")
    with Store(tmp_path / "s.db") as st:
        s = run_campaign(st, p, SPACE, SPACE.parse_many(["3", "9"]), cache=ModelCache(cache_dir))
        assert s.ok == 6
        m = st.measurements("cpu-energy")
        df = latency_table(st, "nb201")
        conditions = [json.loads(c) for (c,) in st.db.execute("SELECT conditions_json FROM measurements")]
    assert m.energy_mj.notna().sum() == metered and (m.energy_mj.dropna() > 0).all()
    assert sum("energy" in c for c in conditions) == metered  # the other visits ran no energy pass at all
    assert df["cpu-energy_mj"].notna().sum() == 2
    print_visit_notes(s)  # the summary says what was metered (it said nothing when all went well)
    assert f"energy: {metered} visit(s) metered (rapl), median" in " ".join(capsys.readouterr().out.split())
    if visits == "first":  # the report has an energy table (energy was in export only)
        from harness.analysis.api import report

        html = report(tmp_path / "s.db", tmp_path / "r.html").read_text()
        assert "<h2>Energy</h2>" in html and "SRCC energy vs latency" in html and "rapl" in html
        from harness.analysis.report import energy_table

        with Store(tmp_path / "s.db") as st:
            t = energy_table(st.latencies("nb201").pivot(index="key", columns="device", values="latency_ms"),
                             st.energies("nb201")).iloc[0]
        # 50 W ticking counter: the implied power is ~50 W (more when the window held time waiting for a CPU)
        assert t.architectures == 2 and 25 <= t["median W"] <= 200, t


def test_a_counter_that_never_moves_leaves_energy_empty_and_the_summary_says_why(tmp_path, monkeypatch, cache_dir):
    root = tmp_path / "sysfs"
    shutil.copytree(TREES / "x86-rapl", root)  # a recorded counter: it never moves
    monkeypatch.setenv("HARNESS_SYSFS_ROOT", str(root))
    p = parse_profile({"name": "still", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                       "policy": {"warmup_runs": 0, "timed_runs": 5, "energy": "rapl", "energy_seconds": 0.05}}, "<e>")
    with Store(tmp_path / "s.db") as st:
        s = run_campaign(st, p, SPACE, SPACE.parse_many(["3"]), cache=ModelCache(cache_dir))
        m = st.measurements("still")
        cond = json.loads(st.db.execute("SELECT conditions_json FROM measurements").fetchone()[0])
    assert s.ok == 1 and m.energy_mj.isna().all() and m.median_ms.notna().all()  # the latency stands
    assert s.no_energy == 1 and "moved 0 time(s)" in s.no_energy_why
    assert cond["energy"]["runs"] > 0 and "why" in cond["energy"]


def test_a_campaign_stops_metering_a_counter_that_never_moved(tmp_path, monkeypatch, cache_dir, capsys):
    """A dead counter under energy_visits: first retried the pass on every visit (none gave a figure): each pass
    waits up to 2 x energy_seconds + 1 s, so a campaign took 37x as long for nothing. Three passes, then none."""
    from harness.campaign import ENERGY_GIVE_UP_PASSES
    from harness.cli.measure import print_visit_notes

    root = tmp_path / "sysfs"
    shutil.copytree(TREES / "x86-rapl", root)  # a recorded counter: it never moves
    monkeypatch.setenv("HARNESS_SYSFS_ROOT", str(root))
    p = parse_profile({"name": "still", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                       "policy": {"warmup_runs": 0, "timed_runs": 3, "rounds": 3, "energy": "rapl",
                                  "energy_seconds": 0.05}}, "<e>")
    with Store(tmp_path / "s.db") as st:
        s = run_campaign(st, p, SPACE, SPACE.parse_many(["3", "9"]), cache=ModelCache(cache_dir))
        passes = sum("energy" in json.loads(c) for (c,) in st.db.execute("SELECT conditions_json FROM measurements"))
    assert s.ok == 6 and passes == s.no_energy == ENERGY_GIVE_UP_PASSES and s.energy_given_up
    print_visit_notes(s)
    assert "the campaign ran no more" in " ".join(capsys.readouterr().out.split())


def test_energy_method_missing_on_the_device_stops_the_campaign(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("HARNESS_SYSFS_ROOT", str(tmp_path / "empty"))
    p = parse_profile({"name": "no-energy", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                       "policy": {"warmup_runs": 0, "timed_runs": 1, "energy": "rapl"}}, "<e>")
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(DriverUnavailable, match="policy.energy: rapl is not available"):
            run_campaign(st, p, SPACE, SPACE.sample(3, 0), cache=ModelCache(cache_dir))
        assert st.measurements().empty or st.measurements().status.eq("failed").all()
    report = make_driver(p).check()  # `devices check` says so before any campaign (it said ok)
    assert not report.ok and "policy.energy: rapl is not available" in report.message


def test_phone_battery_energy_on_the_virtual_phone(tmp_path, cache_dir):
    from harness.devices.registry import ProfileRegistry
    from harness.sim.adb.server import serving

    p = ProfileRegistry().get("virtual-phone")
    p = p.model_copy(update={"name": "vphone-energy", "policy": p.policy.model_copy(update={
        "energy": "battery", "warmup_runs": 1, "timed_runs": 3})})
    with serving(p) as served, Store(tmp_path / "s.db") as st:
        assert run_campaign(st, served, SPACE, SPACE.parse_many(["3", "77"]), cache=ModelCache(cache_dir)).ok == 2
        m = st.measurements("vphone-energy")
        conds = [json.loads(c) for (c,) in st.db.execute("SELECT conditions_json FROM measurements ORDER BY id")]
    assert (m.energy_method == "battery-coarse").all() and (m.energy_mj > 0).all()
    # the gauge's power times the latency as stored (the median): it was the mean, so at constant power a noisy
    # model's energy ranked unlike its latency (the report's "SRCC energy vs latency" 0.66 instead of 1)
    for mj, median_ms, c in zip(m.energy_mj, m.median_ms, conds):
        watts = c["before"]["battery_power_mw"] / 1000
        assert mj == pytest.approx(watts * median_ms, rel=0.02), (mj, median_ms, watts)


@pytest.mark.parametrize("connection, runtime, energy, msg", [
    ({"kind": "adb", "serial": "x:5555"}, {"name": "tflite"}, "rapl", "not readable on a phone"),
    ({"kind": "local"}, {"name": "trtexec"}, "nvml", "not measured around trtexec yet"),
])
def test_energy_methods_the_device_kind_cannot_have_are_refused_up_front(connection, runtime, energy, msg):
    # by the profile itself, so `devices check` refuses what `measure` would (it used to pass check)
    from harness.errors import ProfileError

    with pytest.raises(ProfileError, match=f"policy.energy: .*{msg}"):
        parse_profile({"name": "p", "connection": connection, "runtime": runtime, "policy": {"energy": energy}}, "p")
    off = parse_profile({"name": "p", "connection": connection, "runtime": runtime, "policy": {"energy": "off"}}, "p")
    assert off.policy.energy == "off"


def test_an_energy_pass_that_would_outlast_the_models_timeout_is_refused():
    with pytest.raises(ProfileError, match="energy_seconds 60 needs a longer timeout_seconds.*10 s are kept for loading.*at least 131"):
        parse_profile({"name": "p", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                       "policy": {"energy": "nvml", "energy_seconds": 60}}, "p")
    ok = parse_profile({"name": "p", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                        "policy": {"energy": "nvml", "energy_seconds": 60, "timeout_seconds": 131}}, "p")
    assert ok.policy.energy_seconds == 60


def test_auto_energy_skips_nvml_for_a_model_on_the_cpu(monkeypatch):
    """On a GPU box, `energy: auto` for a CPU provider gave every CPU model the idle GPU's power times its latency."""
    from harness.devices import runner

    runner.probe({})
    monkeypatch.setitem(runner._PROBE, "nvml", fake_nvml())
    monkeypatch.setattr(runner, "sysfs_root", lambda: str(TREES / "jetson-nano"))  # a board that also has rails
    on_gpu = runner.energy_meter({"energy": "auto", "runtime": "onnxruntime",
                                  "execution_provider": "CUDAExecutionProvider"})
    on_cpu = runner.energy_meter({"energy": "auto", "runtime": "onnxruntime",
                                  "execution_provider": "CPUExecutionProvider"})
    tflite = runner.energy_meter({"energy": "auto", "runtime": "tflite", "delegate": "xnnpack"})
    assert on_gpu.method == "nvml-energy"
    assert on_cpu.method == tflite.method == "jetson-ina"  # the board's rails, not the GPU's counter
    asked = runner.energy_meter({"energy": "nvml", "runtime": "onnxruntime"})  # named explicitly: as asked
    assert asked.method == "nvml-energy"
