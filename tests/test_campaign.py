"""Campaigns: resume by content, failures recorded with kinds, nothing lost."""

from __future__ import annotations

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
    write_profile(devices_dir, "broken-ep", {"name": "onnxruntime", "execution_provider": "NoSuchProvider"})
    profile = registry.get("broken-ep")
    with Store(store_path) as st:
        with pytest.raises(CampaignAborted, match="3 models failed in a row"):
            run_campaign(st, profile, SPACE, SPACE.sample(10, 0), cache=ModelCache(cache_dir),
                         max_consecutive_failures=3)
        m = st.measurements("broken-ep")
        assert len(m) == 3 and set(m.failure_kind) == {"device_error"} and m.median_ms.isna().all()
        status, message = st.db.execute("SELECT status, message FROM campaigns").fetchone()
        assert status == "failed" and "NoSuchProvider" in message


def test_timeout_failure_then_success_on_resume(devices_dir, registry, store_path, cache_dir):
    write_profile(devices_dir, "slow", {"name": "onnxruntime"}, {"min_seconds": 30, "timeout_seconds": 1})
    archs = SPACE.parse_many(["11"])
    with Store(store_path) as st:
        s = run_campaign(st, registry.get("slow"), SPACE, archs, cache=ModelCache(cache_dir))
        assert s.failed == 1 and s.failures == {"timeout": 1} and s.status == "finished"
        write_profile(devices_dir, "slow", {"name": "onnxruntime"})  # the user fixes the policy
        s = run_campaign(st, registry.get("slow"), SPACE, archs, cache=ModelCache(cache_dir))
        assert s.ok == 1
