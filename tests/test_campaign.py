"""Campaigns: resume by content, failures recorded with kinds, nothing lost."""

from __future__ import annotations

import numpy as np
import pytest

from harness.campaign import CampaignAborted, run_campaign
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from tests.conftest import write_profile

SPACE = get_space("nb201")


def test_rerun_measures_only_what_is_missing(registry, store_path, cache_dir):
    profile = registry.get("fast-onnx")
    with Store(store_path) as st:
        first = run_campaign(st, profile, SPACE, SPACE.sample(4, 0), cache=ModelCache(cache_dir))
        assert (first.ok, first.skipped, first.status) == (4, 0, "finished")
        second = run_campaign(st, profile, SPACE, SPACE.sample(6, 0), cache=ModelCache(cache_dir))
        assert (second.ok, second.skipped) == (2, 4)  # a larger sample with the same seed extends the first
        again = run_campaign(st, profile, SPACE, SPACE.sample(6, 0), cache=ModelCache(cache_dir))
        assert again.status == "nothing to do" and again.campaign_id is None
        m = st.measurements("fast-onnx")
        assert m.key.is_unique and len(m) == 6
        mid = int(m.id.iloc[0])
        assert len(st.runs(mid)) == profile.policy.timed_runs
        assert len(st.runs(mid, warmup=True)) == profile.policy.warmup_runs


def test_remeasure_adds_rows(registry, store_path, cache_dir):
    profile = registry.get("fast-tflite")
    archs = SPACE.parse_many(["1", "2"])
    with Store(store_path) as st:
        run_campaign(st, profile, SPACE, archs, cache=ModelCache(cache_dir))
        s = run_campaign(st, profile, SPACE, archs, cache=ModelCache(cache_dir), remeasure=True)
        assert s.ok == 2 and s.skipped == 0
        assert len(st.measurements("fast-tflite")) == 4


def test_conditions_are_recorded(registry, store_path, cache_dir):
    import json

    profile = registry.get("fast-onnx")
    with Store(store_path) as st:
        run_campaign(st, profile, SPACE, SPACE.parse_many(["3"]), cache=ModelCache(cache_dir))
        camp = json.loads(st.db.execute("SELECT conditions_json FROM campaigns").fetchone()[0])
        meas = json.loads(st.db.execute("SELECT conditions_json FROM measurements").fetchone()[0])
        profile_used = json.loads(st.db.execute("SELECT profile_json FROM campaigns").fetchone()[0])
        m = st.measurements()
        assert (m["per_run"] == 1).all() and (m["n_runs"] == profile.policy.timed_runs).all()
        assert st.campaigns()["per_run"].tolist() == [1]
    assert camp["runtime"] == "onnxruntime" and camp["runtime_version"] and camp["threads"] == 1
    assert camp["cpu_model"] and camp["kernel"]
    assert "cpu_freq_mhz" in meas["before"] and "temperatures_c" in meas["after"]
    assert profile_used["runtime"]["threads"] == 1


def test_failures_are_recorded_with_kind_and_campaign_aborts(devices_dir, registry, store_path, cache_dir):
    # a session option onnxruntime refuses: every model fails to load on the device (the profile itself parses)
    write_profile(devices_dir, "broken-ep", {"name": "onnxruntime",
                                             "options": {"optimization.minimal_build_optimizations": "bogus"}})
    profile = registry.get("broken-ep")
    with Store(store_path) as st:
        with pytest.raises(CampaignAborted, match="3 models failed in a row"):
            run_campaign(st, profile, SPACE, SPACE.sample(10, 0), cache=ModelCache(cache_dir),
                         max_consecutive_failures=3)
        m = st.measurements("broken-ep")
        assert len(m) == 3 and set(m.failure_kind) == {"device_error"} and m.median_ms.isna().all()
        status, message = st.db.execute("SELECT status, message FROM campaigns").fetchone()
        assert status == "failed" and "minimal_build_optimizations" in message


def test_timeout_failure_then_success_on_resume(devices_dir, registry, store_path, cache_dir):
    write_profile(devices_dir, "slow", {"name": "onnxruntime"}, {"min_seconds": 0.99, "timeout_seconds": 1})
    archs = SPACE.parse_many(["11"])
    with Store(store_path) as st:
        s = run_campaign(st, registry.get("slow"), SPACE, archs, cache=ModelCache(cache_dir))
        assert s.failed == 1 and s.failures == {"timeout": 1} and s.status == "failed"  # nothing measured
        row = st.db.execute("SELECT status, message FROM campaigns ORDER BY id DESC").fetchone()
        assert row[0] == "failed" and row[1].startswith("every one of 1 visit(s) failed: timeout=1; last: timeout: ")
        write_profile(devices_dir, "slow", {"name": "onnxruntime"})  # the user fixes the policy
        s = run_campaign(st, registry.get("slow"), SPACE, archs, cache=ModelCache(cache_dir))
        assert s.ok == 1


def test_graph_mode_and_exporter_version_are_recorded_and_part_of_the_identity(registry, store_path, cache_dir):
    from harness.models.cache import EXPORTER_VERSION

    prune = registry.get("fast-onnx")
    assert prune.graph == "prune"  # the default: what a deployment converter exports
    keep = prune.model_copy(update={"graph": "keep"})
    archs = SPACE.parse_many(["1", "2"])
    with Store(store_path) as st:
        run_campaign(st, prune, SPACE, archs, cache=ModelCache(cache_dir))
        s = run_campaign(st, keep, SPACE, archs, cache=ModelCache(cache_dir))
        assert (s.ok, s.skipped) == (2, 0)  # another model: measured again, not mixed
        m = st.measurements("fast-onnx")
    assert sorted(m.graph_mode) == ["keep", "keep", "prune", "prune"]
    assert set(m.exporter_version) == {EXPORTER_VERSION}
    assert m.groupby("key").model_digest.nunique().eq(2).all()


def test_degenerate_models_are_measured_and_marked(registry, store_path, cache_dir):
    """All-'none' NB201: a constant network; both runtimes load it, it is timed, the store marks it."""
    archs = SPACE.parse_many(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "1"])
    with Store(store_path) as st:
        for name in ("fast-onnx", "fast-tflite"):
            s = run_campaign(st, registry.get(name), SPACE, archs, cache=ModelCache(cache_dir))
            assert (s.ok, s.failed, s.degenerate) == (2, 0, 1)
        m = st.measurements()
    assert m.groupby("key").degenerate.max().to_dict() == {archs[0].key: 1, archs[1].key: 0}
    assert (m.median_ms > 0).all()


def test_stale_measurements_are_kept_reported_and_remeasured_only_when_asked(registry, store_path, cache_dir):
    from harness.models.cache import EXPORTER_VERSION

    profile = registry.get("fast-tflite")
    archs = SPACE.parse_many(["4", "5", "6"])
    with Store(store_path) as st:
        run_campaign(st, profile, SPACE, archs[:2], cache=ModelCache(cache_dir))
        st.db.execute("UPDATE measurements SET exporter_version = ? WHERE id = (SELECT MIN(id) FROM measurements)",
                      (EXPORTER_VERSION - 1,))  # as if measured with the previous exporter
        s = run_campaign(st, profile, SPACE, archs, cache=ModelCache(cache_dir))
        assert (s.ok, s.skipped, s.stale) == (1, 2, 1)  # stale: kept and reported, not silently re-measured
        assert st.campaigns(EXPORTER_VERSION).stale.tolist() == [1, 0]
        s = run_campaign(st, profile, SPACE, archs, cache=ModelCache(cache_dir), remeasure_stale=True)
        assert (s.ok, s.skipped, s.stale) == (1, 2, 0)
        s = run_campaign(st, profile, SPACE, archs, cache=ModelCache(cache_dir))
        assert s.status == "nothing to do" and s.stale == 0


def test_analyses_can_leave_degenerate_architectures_out(registry, store_path, cache_dir):
    from harness import analysis

    archs = SPACE.parse_many(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "1", "2"])
    with Store(store_path) as st:
        run_campaign(st, registry.get("fast-onnx"), SPACE, archs, cache=ModelCache(cache_dir))
    assert len(analysis.latencies(store_path, "nb201")) == 3
    assert set(analysis.latencies(store_path, "nb201", degenerate=False).index) == {archs[1].key, archs[2].key}


def test_a_driver_bug_is_a_typed_failure_and_the_campaign_goes_on(tmp_path, cache_dir):
    """A plug-in driver that raises a plain RuntimeError on one model: that visit fails with device_error and
    the exception named, the rest are measured, no traceback reaches the user."""
    from harness.devices.profile import parse_profile
    from harness.sim.sleep import SleepDriver

    class Buggy(SleepDriver):
        calls = 0

        def run(self, model_ref):
            Buggy.calls += 1
            if Buggy.calls == 2:
                raise RuntimeError("index out of range in my parser")
            return super().run(model_ref)

    prof = parse_profile({"name": "buggy", "connection": {"kind": "sleep", "latency_ms": 1},
                          "runtime": {"name": "onnxruntime"}, "policy": {"warmup_runs": 0, "timed_runs": 2}}, "t")
    with Store(tmp_path / "s.db") as st:
        s = run_campaign(st, prof, SPACE, SPACE.sample(3, 0), cache=ModelCache(cache_dir), driver=Buggy(prof))
        failed = st.db.execute("SELECT failure_kind, failure_message FROM measurements WHERE status = 'failed'").fetchall()
    assert (s.ok, s.failed, s.status) == (2, 1, "finished")
    assert failed[0][0] == "device_error" and "unexpected RuntimeError from the sleep driver: index out" in failed[0][1]


def test_a_device_that_refuses_the_connection_stops_the_campaign_at_once(tmp_path, cache_dir):
    """A host key changed mid-campaign was charged to five models (device_error rows) before the 5-in-a-row stop."""
    from harness.devices.profile import parse_profile
    from harness.errors import AccessRefused
    from harness.sim.sleep import SleepDriver

    class Rekeyed(SleepDriver):
        calls = 0

        def run(self, model_ref):
            Rekeyed.calls += 1
            if Rekeyed.calls >= 2:
                raise AccessRefused("host key of 127.0.0.1:22 CHANGED")
            return super().run(model_ref)

    prof = parse_profile({"name": "rekeyed", "connection": {"kind": "sleep", "latency_ms": 1},
                          "runtime": {"name": "onnxruntime"}, "policy": {"warmup_runs": 0, "timed_runs": 2}}, "t")
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(AccessRefused):
            run_campaign(st, prof, SPACE, SPACE.sample(6, 0), cache=ModelCache(cache_dir), driver=Rekeyed(prof))
        rows = st.db.execute("SELECT status FROM measurements").fetchall()
    assert rows == [("ok",)] and Rekeyed.calls == 2  # the finished one kept, no failure rows, nothing tried after


def test_the_unsteady_line_names_each_architectures_worst_visit():
    """With rounds, each unsteady visit overwrote the architecture's CV: "CV 16 %" was shown for one whose first
    visit had 35 % (found by an audit recomputing the store's visits)."""
    from harness.campaign import CampaignSummary, Measured, count_outcome
    from harness.devices.driver import RunResult

    arch = get_space("nb201").parse("77")
    s = CampaignSummary("d", "nb201", 1, 0, rounds=3)
    for rnd, runs in enumerate(([1.0, 1.9, 1.0, 2.2, 1.0, 1.1, 2.5, 1.0], [1.0, 1.3, 1.0, 1.4, 1.0, 1.1, 1.3, 1.0]), 1):
        count_outcome(s, Measured(arch, "onnx", "t", 0.1, result=RunResult(timed_ms=runs), round_no=rnd, rounds=3),
                      rnd, 2)
    assert s.unstable == [arch.key, arch.key]  # both visits unsteady (95 % CI of the median beyond +-5 %)
    first = [1.0, 1.9, 1.0, 2.2, 1.0, 1.1, 2.5, 1.0]
    assert s.unstable_cv[arch.key] == pytest.approx(np.std(first) / np.mean(first))  # 40 %, not the later 14 %
