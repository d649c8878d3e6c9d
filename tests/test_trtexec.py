"""TensorRT through trtexec: output and --exportTimes parsing, the engine cache, and the drivers, locally and
over a real sshd, against the stand-in trtexec (harness/sim/trtexec.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.campaign import run_campaign
from harness.devices.driver import make_driver
from harness.devices.profile import parse_profile
from harness.devices.trtexec import WARMUP_KEPT, kept_warmup
from harness.devices.trtexec_output import parse_output, parse_times, version_from_tag
from harness.errors import DeviceError, DriverUnavailable, ParseError
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from harness.sim.trtexec import install
from harness.testing.sshd import TestSSHServer, sshd_available

SPACE = get_space("nb201")
ARCH = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"

# trtexec 8.6's own output, as its sources print it (abridged: the lines the parser reads and some it skips)
REAL = """&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # /usr/src/tensorrt/bin/trtexec --loadEngine=m.engine
[11/29/2026-10:00:00] [I] === Device Information ===
[11/29/2026-10:00:00] [I] Available Devices: 
[11/29/2026-10:00:00] [I]   Device 0: "NVIDIA GeForce GTX 1080 Ti" UUID: GPU-5f1c0b5e-0d1e-4a1f-9c7c-0123456789ab
[11/29/2026-10:00:00] [I] Selected Device: NVIDIA GeForce GTX 1080 Ti
[11/29/2026-10:00:00] [I] Selected Device ID: 0
[11/29/2026-10:00:00] [I] Compute Capability: 6.1
[11/29/2026-10:00:00] [I] SMs: 28
[11/29/2026-10:00:00] [I] Application Compute Clock Rate: 1.6705 GHz
[11/29/2026-10:00:00] [I] TensorRT version: 8.6.1
[11/29/2026-10:00:01] [W] [TRT] CUDA lazy loading is not enabled.
[11/29/2026-10:00:02] [I] Warmup completed 118 queries over 200 ms
[11/29/2026-10:00:02] [I] Timing trace has 1712 queries over 3.00293 s
[11/29/2026-10:00:02] [I] === Performance summary ===
[11/29/2026-10:00:02] [I] Throughput: 570.105 qps
[11/29/2026-10:00:02] [I] Latency: min = 1.66797 ms, max = 2.9812 ms, mean = 1.74082 ms, median = 1.72119 ms, percentile(90%) = 1.78723 ms, percentile(95%) = 1.81592 ms, percentile(99%) = 2.11035 ms
[11/29/2026-10:00:02] [I] GPU Compute Time: min = 1.61426 ms, max = 2.91992 ms, mean = 1.68457 ms, median = 1.66504 ms, percentile(90%) = 1.72803 ms, percentile(95%) = 1.75781 ms, percentile(99%) = 2.05078 ms
&&&& PASSED TensorRT.trtexec [TensorRT v8601] # /usr/src/tensorrt/bin/trtexec --loadEngine=m.engine
"""


def test_real_output_is_read():
    out = parse_output(REAL)
    assert out.passed and out.tensorrt_version == "8.6.1" and out.version_tag == "8601"
    assert out.device["gpu_name"] == "NVIDIA GeForce GTX 1080 Ti" and out.device["compute_capability"] == "6.1"
    assert out.summary["GPU Compute Time"]["median"] == 1.66504 and out.summary["Latency"]["p99"] == 2.11035
    assert (out.warmup_queries, out.timed_queries, out.throughput_qps) == (118, 1712, 570.105)
    assert out.warnings == ["[TRT] CUDA lazy loading is not enabled."]
    failed = parse_output(REAL.replace("&&&& PASSED", "&&&& FAILED"))
    assert not failed.passed and failed.status == "FAILED"
    assert not parse_output(REAL.rsplit("&&&&", 1)[0]).passed  # killed before the end: not a success


def test_version_tags():
    assert version_from_tag("8601") == "8.6.1" and version_from_tag("8205") == "8.2.5"
    assert version_from_tag("100001") == "10.0.1" and version_from_tag("100300") == "10.3.0"


def test_broken_numbers_are_parse_errors():
    bad = REAL.replace("median = 1.66504 ms", "median = nan ms")
    with pytest.raises(ParseError, match="GPU Compute Time median"):
        parse_output(bad)
    with pytest.raises(ParseError, match="cannot read"):
        parse_output(REAL.replace("min = 1.61426 ms", "minimum 1.6"))


def _trace(starts: list[float], compute: list[float]) -> list[dict]:
    out = []
    for s, c in zip(starts, compute):
        out.append({"startEnqMs": s, "endEnqMs": s + 0.01, "startH2dMs": s, "endH2dMs": s + 0.02,
                    "startComputeMs": s + 0.02, "endComputeMs": s + 0.02 + c, "startD2hMs": s + 0.02 + c,
                    "endD2hMs": s + 0.03 + c, "h2dMs": 0.02, "computeMs": c, "d2hMs": 0.01, "latencyMs": c + 0.03,
                    "endToEndMs": c + 0.03})
    return out


def _as_trtexec_writes_it(queries: list[dict]) -> str:
    lines = ["["] + [("  " if i == 0 else ", ") + "{ " + ", ".join(f'"{k}" : {v:.6g}' for k, v in q.items()) + " }"
                     for i, q in enumerate(queries)] + ["]"]
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.001, 50), min_size=1, max_size=40), st.floats(0, 100))
def test_export_times_keep_every_query_and_split_warmup_like_trtexec(compute, warmup_ms):
    starts, t = [], 0.0
    for c in compute:
        starts.append(t)
        t += c + 0.05
    queries = _trace(starts, compute)
    text = _as_trtexec_writes_it(queries)
    expected_timed = [q for q in json.loads(text) if q["startComputeMs"] >= warmup_ms]
    if not expected_timed:
        with pytest.raises(ParseError):
            parse_times(text, warmup_ms)
        return
    warm, timed = parse_times(text, warmup_ms)
    assert len(warm) + len(timed) == len(queries)
    assert [q["computeMs"] for q in timed] == [q["computeMs"] for q in expected_timed]
    assert all(q["startComputeMs"] < warmup_ms for q in warm)


def test_trtexecs_own_count_splits_a_query_its_rounded_start_puts_on_the_warm_up_boundary():
    # the stand-in's 199.99996 ms start is written as 200 (6 significant digits): by time it was a 21st timed query
    starts = [150.0, 175.0, 199.97996, 225.0, 250.0]  # (compute starts 0.02 ms later)
    text = _as_trtexec_writes_it(_trace(starts, [1.0] * 5))
    warm, timed = parse_times(text, 200.0)
    assert len(timed) == 3  # the file alone cannot tell
    warm, timed = parse_times(text, 200.0, timed_queries=2)  # "Timing trace has 2 queries"
    assert len(warm) == 3 and len(timed) == 2 and timed[0]["startComputeMs"] == 225.02


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.dictionaries(st.sampled_from(
    ["startComputeMs", "computeMs", "latencyMs", "h2dMs"]), st.one_of(st.floats(), st.text(max_size=3), st.none())),
    max_size=5).map(json.dumps)))
def test_export_times_garbage_is_a_parse_error(text):
    try:
        warm, timed = parse_times(text, 0.0)
    except ParseError:
        return
    assert timed and all(q["computeMs"] >= 0 for q in timed)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80), max_size=20))
def test_arbitrary_log_lines_never_crash_the_parser(bodies):
    text = "\n".join(f"[11/29/2026-10:00:00] [I] {b}" for b in bodies)
    try:
        parse_output(text)
    except ParseError:
        pass


# --- drivers -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trtexec_bin(tmp_path_factory) -> str:
    return install(str(tmp_path_factory.mktemp("trt-bin")))


def trt_profile(binary: str, name: str = "trt", connection: dict | None = None, **workload):
    return parse_profile({"name": name, "connection": connection or {"kind": "local"},
                          "runtime": {"name": "trtexec", "binary": binary, "options": {"warmup_ms": 5}},
                          "policy": {"warmup_runs": 1, "timed_runs": 4, "timeout_seconds": 120},
                          "workload": workload}, f"<{name}>")


def test_local_campaign_builds_each_engine_once(trtexec_bin, tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("HARNESS_ENGINE_CACHE", str(tmp_path / "engines"))
    archs = SPACE.parse_many([ARCH, "3"])
    p16 = trt_profile(trtexec_bin, precision="fp16", batch_size=2)
    with Store(tmp_path / "s.db") as st:
        s = run_campaign(st, p16, SPACE, archs, cache=ModelCache(cache_dir))
        assert s.ok == 2 and s.status == "finished"
        engines = sorted(p.name for p in (tmp_path / "engines").iterdir())
        assert len(engines) == 2 and all("-trt8601-fp16-bs2.engine" in e for e in engines)
        again = run_campaign(st, p16, SPACE, archs, cache=ModelCache(cache_dir), remeasure=True)
        assert again.ok == 2 and len(list((tmp_path / "engines").iterdir())) == 2  # served from the cache
        run_campaign(st, trt_profile(trtexec_bin), SPACE, archs[:1], cache=ModelCache(cache_dir))
        assert len(list((tmp_path / "engines").iterdir())) == 3  # fp32 bs1: its own engine
        m = st.measurements("trt")
        assert (m.n_runs >= 4).all() and len(st.runs(int(m.id.iloc[0]))) == m.n_runs.iloc[0]
        cond = json.loads(st.db.execute("SELECT conditions_json FROM measurements ORDER BY id").fetchone()[0])
        init = st.db.execute("SELECT init_ms FROM measurements ORDER BY id").fetchall()
        camp = json.loads(st.db.execute("SELECT conditions_json FROM campaigns").fetchone()[0])
    info = cond["before"]["trtexec"]
    assert info["tensorrt"] == "8.6.1" and info["timed"] == "computeMs" and info["gpu_name"].startswith("harness")
    from harness.analysis.data import device_facts  # the report names the GPU trtexec ran on (it said "?")

    with Store(tmp_path / "s.db") as st:
        facts = device_facts(st, "nb201", ["trt@bs2.fp16", "trt"]).set_index("device")
    assert facts.machine.str.contains("stand-in").all() and list(facts.origin) == ["measured", "measured"]
    # its timing as trtexec ran it: a warm-up by time (it said "1 warm-up", which trtexec never reads)
    assert facts.policy.iloc[0].startswith("5 ms warm-up (trtexec --warmUp) + 4 timed runs")
    assert camp["tensorrt"] == "8.6.1" and "cuda" in camp
    assert init[0][0] > 0 and init[2][0] is None  # the build time, once; a cached engine has none


def test_include_transfers_times_host_latency(trtexec_bin, tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("HARNESS_ENGINE_CACHE", str(tmp_path / "engines"))
    p = trt_profile(trtexec_bin)
    p = p.model_copy(update={"policy": p.policy.model_copy(update={"include_transfers": True})})
    art = ModelCache(cache_dir).get(SPACE.build(SPACE.parse(ARCH)), "onnx")
    with make_driver(p) as d:
        r = d.run(d.push(art))
    assert r.conditions_before["trtexec"]["timed"] == "latencyMs"


def test_a_long_warm_up_of_tiny_queries_keeps_its_ends_and_count_not_every_query(trtexec_bin, tmp_path,
                                                                                  monkeypatch, cache_dir):
    """trtexec warms up for a time: 200 ms (its default) of 10 us GPU queries would store 20,000 warm-up runs per
    model (a campaign on the stand-in stored 72,000 rows)."""
    monkeypatch.setenv("HARNESS_ENGINE_CACHE", str(tmp_path / "engines"))
    p = trt_profile(trtexec_bin)
    p = p.model_copy(update={"runtime": p.runtime.model_copy(update={"options": {"warmup_ms": 400}})})
    art = ModelCache(cache_dir).get(SPACE.build(SPACE.parse(ARCH)), "onnx")
    with make_driver(p) as d:
        r = d.run(d.push(art))
    n = r.conditions_before["trtexec"]["warmup_queries"]
    assert len(r.warmup_ms) == min(n, 2 * WARMUP_KEPT)  # the stand-in runs ~250 queries in 400 ms here
    many = [{"computeMs": float(i)} for i in range(1000)]
    kept = kept_warmup(many)
    assert len(kept) == 2 * WARMUP_KEPT and kept[0] is many[0] and kept[-1] is many[-1]
    assert kept_warmup(many[:7]) == many[:7]


def test_stale_cached_engine_is_rebuilt_once(trtexec_bin, tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("HARNESS_ENGINE_CACHE", str(tmp_path / "engines"))
    art = ModelCache(cache_dir).get(SPACE.build(SPACE.parse(ARCH)), "onnx")
    with make_driver(trt_profile(trtexec_bin)) as d:
        d.run(d.push(art))
        engine = next((tmp_path / "engines").iterdir())
        engine.write_bytes(b"not an engine")
        r = d.run(d.push(art))
    assert r.init_ms is not None and engine.read_bytes().startswith(b"HARNESS-SIM-TRT-ENGINE")


def test_missing_trtexec_fails_before_any_model_naming_the_field(tmp_path, cache_dir):
    p = trt_profile(str(tmp_path / "no" / "trtexec"))
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(DriverUnavailable, match="runtime.binary.*JetPack"):
            run_campaign(st, p, SPACE, SPACE.sample(3, 0), cache=ModelCache(cache_dir))
        assert st.measurements().empty
    report = make_driver(p).check()
    assert not report.ok and "runtime.binary" in report.message


def test_a_model_trtexec_cannot_build_is_a_device_error(trtexec_bin, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_ENGINE_CACHE", str(tmp_path / "engines"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with make_driver(trt_profile(trtexec_bin)) as d:
        with pytest.raises(DeviceError, match="engine build failed"):
            d.run(str(bad))
    assert list((tmp_path / "engines").iterdir()) == []  # no half-built engine left behind


@pytest.mark.parametrize("bad, field", [
    ({"runtime": {"name": "trtexec", "delegate": "gpu"}}, "runtime"),
    ({"runtime": {"name": "trtexec", "options": {"threads": 2}}}, "trtexec options are device"),
    # values that became flags unchecked: "gpu0" a traceback, "false" turned CUDA graphs on, -5 a negative warm-up
    ({"runtime": {"name": "trtexec", "options": {"device": "gpu0"}}}, "device must be the GPU's index"),
    ({"runtime": {"name": "trtexec", "options": {"use_cuda_graph": "false"}}}, "true or false"),
    ({"runtime": {"name": "trtexec", "options": {"warmup_ms": -5}}}, "warmup_ms must be milliseconds >= 0"),
    ({"runtime": {"name": "onnxruntime", "binary": "/x"}}, "binary applies to trtexec only"),
    ({"connection": {"kind": "adb", "serial": "x:5555"}, "runtime": {"name": "trtexec"}}, "local or ssh"),
])
def test_trtexec_profile_errors(bad, field):
    from harness.errors import ProfileError

    body = {"name": "p", "connection": {"kind": "local"}, "runtime": {"name": "trtexec"}, **bad}
    with pytest.raises(ProfileError, match=field):
        parse_profile(body, "p.yaml")


@pytest.mark.slow
@pytest.mark.skipif(not sshd_available(), reason="OpenSSH server not installed")
def test_trtexec_over_ssh_with_engine_cache_on_the_device(trtexec_bin, tmp_path_factory, cache_dir):
    with TestSSHServer(tmp_path_factory.mktemp("sshd-trt")) as sshd:
        p = sshd.profile("ssh-trt", runtime={"name": "trtexec", "threads": 1, "binary": trtexec_bin,
                                             "options": {"warmup_ms": 5}},
                         workload={"precision": "int8", "calibration": {"samples": 2}})
        remote = Path(p.connection.workdir)
        with Store(tmp_path_factory.mktemp("st") / "s.db") as st:
            s = run_campaign(st, p, SPACE, SPACE.parse_many([ARCH, "5"]), cache=ModelCache(cache_dir))
            assert s.ok == 2, s.failures
            engines = sorted((remote / "engines").iterdir())
            assert len(engines) == 2 and all(e.name.endswith("-int8-bs1.engine") for e in engines)
            again = run_campaign(st, p, SPACE, SPACE.parse_many([ARCH]), cache=ModelCache(cache_dir), remeasure=True)
            assert again.ok == 1 and sorted((remote / "engines").iterdir()) == engines
            m = st.measurements("ssh-trt")
            assert set(m.precision) == {"int8"} and set(m.calibration) == {"random-n2-s0-s8sym"}  # TensorRT: symmetric
        leftovers = [f.name for f in remote.rglob("*") if f.name.endswith((".part", ".times.json"))]
        assert leftovers == []
        missing = sshd.profile("ssh-trt-missing", runtime={"name": "trtexec", "threads": 1,
                                                           "binary": str(remote / "nope" / "trtexec")})
        with pytest.raises(DriverUnavailable, match="runtime.binary"):
            make_driver(missing).prepare()


def test_a_refused_ssh_connection_is_not_reachable_for_trtexec_either():
    # `devices check` said "connection refused" beside reachable=True (onnxruntime's SSH profile said False)
    p = parse_profile({"name": "j", "connection": {"kind": "ssh", "host": "127.0.0.1", "port": 1, "user": "x",
                                                   "connect_timeout_s": 2, "reconnect_attempts": 0,
                                                   "insecure_skip_host_key_check": True},
                       "runtime": {"name": "trtexec"}}, "j")
    report = make_driver(p).check()
    assert not report.ok and report.reachable is False and "connection refused" in report.message


def test_devices_check_says_when_trtexec_is_the_stand_in(trtexec_bin):
    # it said runtime=trtexec version=8.6.1 and nothing else: a rehearsal could pass for a GPU check
    report = make_driver(trt_profile(trtexec_bin)).check()
    assert report.ok and "stand-in" in report.details["gpu_name"]
    assert any("no GPU measurements" in w for w in report.warnings)


def test_a_jetsons_power_mode_and_clocks_are_recorded_and_checked_for_trtexec(trtexec_bin, monkeypatch):
    """An onnxruntime profile warned about a Jetson in another power mode or without jetson_clocks; a trtexec one
    (Jetson + TensorRT, the main case) said "ok" and stored no power mode."""
    from harness.devices.trtexec import TrtexecSession

    tree = Path(__file__).parent / "data" / "sysfs" / "jetson-nano"  # nvpmodel 5W, clocks not pinned
    monkeypatch.setenv("HARNESS_SYSFS_ROOT", str(tree))
    body = trt_profile(trtexec_bin).as_dict()
    p = parse_profile({**body, "policy": {**body["policy"], "power_mode": "MAXN"}}, "<jetson>")
    report = make_driver(p).check()
    assert any("power mode is 5W" in w and "MAXN" in w for w in report.warnings)
    assert any("jetson_clocks is not on" in w for w in report.warnings)
    assert make_driver(p).prepare()["jetson"]["power_mode"] == "5W"  # the campaign's conditions keep it

    class Remote:  # a device's files read through its connection (SSHShell.read_text), no Python there
        def read_text(self, path: str) -> str:
            return (tree / path.lstrip("/")).read_text()

    session = TrtexecSession.__new__(TrtexecSession)
    session.shell = Remote()
    assert session._jetson()["power_mode_id"] == 1


def test_engines_follow_the_model_cache_a_user_moved(monkeypatch, tmp_path):
    # they went to ./models/engines of whatever folder the command ran in, and were built again from another
    from harness.devices.trtexec import engine_root

    monkeypatch.delenv("HARNESS_ENGINE_CACHE", raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    assert engine_root() == tmp_path / "cache" / "engines"
    monkeypatch.setenv("HARNESS_ENGINE_CACHE", str(tmp_path / "e"))
    assert engine_root() == tmp_path / "e"
    monkeypatch.delenv("HARNESS_ENGINE_CACHE")
    monkeypatch.delenv("HARNESS_CACHE")
    assert engine_root() == Path("models/engines")


@pytest.mark.parametrize("what, expect", [("folder", "cannot be run (a folder, or a file without execute"),
                                          ("noexec", "cannot be run (a folder, or a file without execute"),
                                          ("true", "did not answer as trtexec does")])
def test_a_binary_that_is_no_trtexec_says_what_it_is(tmp_path, what, expect):
    # each said "trtexec not found" or "--help failed: exit code 0"
    from harness.errors import DriverUnavailable

    binary = {"folder": tmp_path, "true": Path("/bin/true"), "noexec": tmp_path / "trtexec"}[what]
    if what == "noexec":
        binary.write_text("#!/bin/sh\necho hi\n")
    d = make_driver(trt_profile(str(binary)))
    with pytest.raises(DriverUnavailable, match="runtime.binary") as e:
        d.prepare()
    assert expect in str(e.value)
    assert not d.check().ok


def test_settings_trtexec_does_not_read_are_named(trtexec_bin, tmp_path, monkeypatch, cache_dir):
    """warmup_runs and threads were accepted and shown for trtexec profiles but did nothing (its warm-up is
    runtime.options.warmup_ms)."""
    from harness.campaign import run_campaign

    monkeypatch.setenv("HARNESS_ENGINE_CACHE", str(tmp_path / "engines"))
    body = trt_profile(trtexec_bin).as_dict()
    p = parse_profile({**body, "runtime": {**body["runtime"], "threads": 4}}, "<trt>")
    with Store(tmp_path / "s.db") as st:
        s = run_campaign(st, p, SPACE, SPACE.parse_many([ARCH]), cache=ModelCache(cache_dir))
    assert s.ok == 1 and any("policy.warmup_runs" in u for u in s.unused) and any("runtime.threads" in u for u in s.unused)
