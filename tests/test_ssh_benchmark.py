"""benchmark_model over SSH (Raspberry Pi style): the real sshd fixture, a stand-in benchmark_model that prints
LiteRT's format, and the ADB driver's parser."""

from __future__ import annotations

import json

import pytest

from harness.campaign import run_campaign
from harness.devices.driver import driver_key, make_driver
from harness.devices.profile import parse_profile
from harness.devices.registry import ProfileRegistry
from harness.errors import DeviceError, DriverUnavailable, ProfileError
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from harness.sim.benchmark_model import install
from harness.testing.sshd import TestSSHServer, sshd_available

SPACE = get_space("nb201")


def test_raspi4_builtin_uses_benchmark_model_over_ssh():
    p = ProfileRegistry().get("raspi4")
    assert p.runtime.name == "tflite" and p.connection.benchmark_model
    assert driver_key(p) == ("ssh", "tflite:benchmark_model")
    assert type(make_driver(p)).__name__ == "SSHBenchmarkModelDriver"


def test_benchmark_model_needs_tflite():
    body = {"name": "p", "connection": {"kind": "ssh", "host": "h", "user": "u", "benchmark_model": "/bm"},
            "runtime": {"name": "onnxruntime"}}
    with pytest.raises(ProfileError, match="connection.benchmark_model times TFLite models"):
        parse_profile(body, "p.yaml")




@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not sshd_available():
        pytest.skip("OpenSSH server not installed")
    with TestSSHServer(tmp_path_factory.mktemp("sshd-bm")) as server:
        yield server


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> str:
    return install(str(tmp_path_factory.mktemp("bm-bin")))


def pi_profile(sshd, binary: str, **runtime):
    return sshd.profile("ssh-bm", connection={"benchmark_model": binary},
                        runtime={"name": "tflite", "threads": 1, **runtime},
                        policy={"warmup_runs": 2, "timed_runs": 4, "min_seconds": 0.0})


def test_campaign_over_ssh_with_benchmark_model(sshd, binary, tmp_path, cache_dir):
    p = pi_profile(sshd, binary)
    with Store(tmp_path / "s.db") as st:
        s = run_campaign(st, p, SPACE, SPACE.parse_many(["3", "77"]), cache=ModelCache(cache_dir))
        assert s.ok == 2, s.failures
        m = st.measurements("ssh-bm")
        cond = json.loads(st.db.execute("SELECT conditions_json FROM measurements").fetchone()[0])
        camp = json.loads(st.db.execute("SELECT conditions_json FROM campaigns").fetchone()[0])
    bm = cond["after"]["benchmark_model"]
    assert bm["timed"]["count"] == 4 and bm["per_run_latencies"] is False
    assert m.median_ms.iloc[0] == pytest.approx(bm["timed"]["median_ms"])
    assert camp["benchmark_model"] == binary and camp["kernel"]
    import hashlib  # which build timed them, as over ADB (it said "benchmark_model": an upgrade went unrecorded)

    assert camp["runtime_version"] == f"benchmark_model sha256:{hashlib.sha256(open(binary, 'rb').read()).hexdigest()[:16]}"
    assert "cpu_freq_mhz" in cond["before"] and "wall_s" in cond["after"]


def test_benchmark_model_failure_is_a_device_error(sshd, binary):
    with make_driver(pi_profile(sshd, binary, delegate="gpu")) as d:
        art = ModelCache(sshd.root / "c").get(SPACE.build(SPACE.parse("3")), "tflite")
        with pytest.raises(DeviceError, match="Failed to apply GPU delegate"):
            d.run(d.push(art))


def test_missing_binary_fails_before_any_model_naming_the_field(sshd, tmp_path):
    p = pi_profile(sshd, str(tmp_path / "nowhere" / "benchmark_model"))
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(DriverUnavailable, match="connection.benchmark_model: no executable"):
            run_campaign(st, p, SPACE, SPACE.sample(2, 0), cache=ModelCache(tmp_path / "c"))
        assert st.measurements().empty
    report = make_driver(p).check()
    assert not report.ok and report.reachable is True  # it connected, and found no binary
    nokey = pi_profile(sshd, str(tmp_path / "bm"))
    nokey = nokey.model_copy(update={"connection": nokey.connection.model_copy(update={"key_file": str(tmp_path / "k")})})
    assert make_driver(nokey).check().reachable is None  # never tried: the key file is not there (said True)


def test_devices_check_on_a_benchmark_model_board_reports_instead_of_crashing(sshd, binary, cli_env):
    """The README's check step for a Raspberry Pi: it crashed (AssertionError) asking for stability facts from
    a runner channel this driver never opens."""
    import yaml

    from pathlib import Path

    from tests.conftest import harness

    body = pi_profile(sshd, binary).as_dict()
    (Path(cli_env["HARNESS_DEVICES"]) / "ssh-bm.yaml").write_text(yaml.safe_dump(body))
    out = harness("devices", "check", "ssh-bm", env={**cli_env, "COLUMNS": "200"})
    assert "ssh-bm: ok" in out.stdout and "cannot observe the device's state" in out.stdout
    with make_driver(pi_profile(sshd, binary)) as d:
        assert "cpu_freq_mhz" in d.state()  # gating reads frequencies and temperatures over the shell


def test_a_board_that_drops_while_benchmark_model_runs_is_a_lost_connection(binary, tmp_path, cache_dir):
    """It was stored as device_error 'benchmark_model failed (exit -1)' with its raw output, as if the model were
    broken, and counted towards --max-failures."""
    import threading

    from harness.errors import ConnectionLost

    server = TestSSHServer(tmp_path / "dropping").start()
    try:
        p = server.profile("pi-drop", connection={"benchmark_model": binary, "reconnect_attempts": 0},
                           runtime={"name": "tflite", "threads": 1},
                           policy={"warmup_runs": 0, "timed_runs": 1, "min_seconds": 5.0, "timeout_seconds": 60})
        art = ModelCache(cache_dir).get(SPACE.build(SPACE.parse("3")), "tflite")
        with make_driver(p) as d:
            ref = d.push(art)
            timer = threading.Timer(1.5, server.kill)
            timer.start()
            with pytest.raises(ConnectionLost, match="dropped while benchmark_model ran"):
                d.run(ref)
            timer.join()
    finally:
        server.kill()


def test_a_timed_out_benchmark_model_is_stopped_on_the_board(sshd, binary, cache_dir):
    """After a timeout the stuck benchmark_model ran on while the next 5 models were timed, and after harness
    exited: nothing marked them."""
    import time

    from harness.errors import MeasurementTimeout
    from harness.testing.sshd import processes_with

    p = sshd.profile("ssh-bm-slow", connection={"benchmark_model": binary}, runtime={"name": "tflite", "threads": 1},
                     policy={"warmup_runs": 0, "timed_runs": 1_000_000, "timeout_seconds": 3})
    art = ModelCache(cache_dir).get(SPACE.build(SPACE.parse("7")), "tflite")
    with make_driver(p) as d:
        ref = d.push(art)
        with pytest.raises(MeasurementTimeout, match="stopped"):
            d.run(ref)
        deadline = time.time() + 10
        while processes_with(ref) and time.time() < deadline:
            time.sleep(0.2)
        assert processes_with(ref) == []

