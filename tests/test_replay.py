"""The replay device: a profile that answers from a published table, through the real campaign path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.campaign import run_campaign, stale_keys
from harness.devices.driver import make_driver
from harness.devices.profile import parse_profile
from harness.devices.registry import ProfileRegistry
from harness.errors import DeviceError, ProfileError
from harness.models.cache import EXPORTER_VERSION, ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from tests.conftest import harness


@pytest.fixture(autouse=True)
def _no_leftover_ctrl_c():
    """Campaigns stop on a counted Ctrl-C (harness.interrupts is process-wide): start each test clean."""
    from harness import interrupts

    interrupts.reset()
    yield

SPACE = get_space("nb201")


def small_table(path: Path, n: int = 40, seed: int = 0, drop: tuple[int, ...] = ()) -> pd.DataFrame:
    """A tidy NB201 table with two latency columns; rows in ``drop`` have no value in dev_a."""
    rng = np.random.default_rng(seed)
    archs = SPACE.sample(n, seed)
    df = pd.DataFrame({"nb201_index": [a.columns["nb201_index"] for a in archs],
                       "arch_str": [a.columns["arch_str"] for a in archs],
                       "dev_a_ms": rng.uniform(1, 10, n), "dev_b_ms": rng.uniform(1, 10, n)})
    df.loc[list(drop), "dev_a_ms"] = np.nan
    df.to_csv(path, index=False)
    return df


def replay_profile(folder: Path, name: str, table: Path, column: str = "dev_a_ms", **conn) -> Path:
    body = {"name": name, "connection": {"kind": "replay", "table": str(table), "column": column, **conn},
            "policy": {"warmup_runs": 1, "timed_runs": 5}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_campaign_on_replay_stores_the_table_values_without_exporting(tmp_path, store_path):
    df = small_table(tmp_path / "t.csv")
    replay_profile(tmp_path, "rehearsal", tmp_path / "t.csv")
    profile = ProfileRegistry(tmp_path).get("rehearsal")
    archs = [SPACE.parse(str(i)) for i in df.nb201_index[:6]]
    cache = ModelCache(tmp_path / "cache")
    with Store(store_path) as st:
        s = run_campaign(st, profile, SPACE, archs, cache=cache)
        assert (s.ok, s.failed, s.exported) == (6, 0, 0)
        assert not (tmp_path / "cache").exists()  # nothing was exported
        lat = st.latencies("nb201", ["rehearsal"]).set_index("key").latency_ms
        expected = dict(zip([a.key for a in archs], df.dev_a_ms[:6]))
        for key, v in expected.items():
            assert lat[key] == pytest.approx(v)
        m = st.measurements("rehearsal")
        assert len(st.runs(int(m.id.iloc[0]))) == 5
        # resumable by content like every campaign
        again = run_campaign(st, profile, SPACE, archs, cache=cache)
        assert again.status == "nothing to do"
        # no model of ours was measured, so no exporter makes them stale (they once all read "stale")
        assert st.campaigns(EXPORTER_VERSION).stale.tolist() == [0]
        assert stale_keys(st, profile, SPACE, archs) == [] and again.stale == 0
        assert run_campaign(st, profile, SPACE, archs, cache=cache, remeasure_stale=True).status == "nothing to do"


def test_missing_architecture_is_a_device_error_never_a_number(tmp_path, store_path):
    df = small_table(tmp_path / "t.csv", drop=(1,))
    replay_profile(tmp_path, "rehearsal", tmp_path / "t.csv")
    profile = ProfileRegistry(tmp_path).get("rehearsal")
    absent = next(a for a in SPACE.sample(200, 7) if a.columns["nb201_index"] not in set(df.nb201_index))
    archs = [SPACE.parse(str(df.nb201_index[0])), SPACE.parse(str(df.nb201_index[1])), absent]
    with Store(store_path) as st:
        s = run_campaign(st, profile, SPACE, archs, cache=ModelCache(tmp_path / "cache"))
        assert (s.ok, s.failed, s.failures) == (1, 2, {"device_error": 2})
        m = st.measurements("rehearsal")
        failed = m[m.status == "failed"]
        assert set(failed.failure_kind) == {"device_error"} and failed.median_ms.isna().all()
        assert len(st.latencies("nb201", ["rehearsal"])) == 1


def test_rows_the_table_lacks_never_stop_a_rerun_before_the_rest_is_measured(tmp_path, store_path):
    """A resumed campaign retries failed architectures first: the table's gaps (NB201's constant-output cells in
    Eagle's table) were five failures in a row, the campaign stopped before anything else, at every rerun."""
    df = small_table(tmp_path / "t.csv", n=30, drop=tuple(range(6)))
    replay_profile(tmp_path, "rehearsal", tmp_path / "t.csv")
    profile = ProfileRegistry(tmp_path).get("rehearsal")
    archs = [SPACE.parse(str(i)) for i in df.nb201_index]  # the six gaps first, as a rerun retries them
    with Store(store_path) as st:
        s = run_campaign(st, profile, SPACE, archs, cache=ModelCache(tmp_path / "cache"), max_consecutive_failures=3)
        assert s.status == "finished" and (s.ok, s.failed) == (24, 6)
        assert len(st.latencies("nb201", ["rehearsal"])) == 24
        # rerun once finished: only the gaps are left, which is no reason to refuse what was asked (was exit 2)
        again = run_campaign(st, profile, SPACE, archs, cache=ModelCache(tmp_path / "cache"))
        assert again.status == "finished" and (again.ok, again.failed) == (0, 6)


def test_noise_is_seeded_and_relative(tmp_path):
    small_table(tmp_path / "t.csv")
    profile = parse_profile({"name": "r", "connection": {"kind": "replay", "table": str(tmp_path / "t.csv"),
                                                         "column": "dev_b_ms", "noise": 0.05, "seed": 3}}, "x")
    d1, d2 = make_driver(profile), make_driver(profile)
    key = next(iter(d1.table.ms))
    r1, r2 = d1.run(key), d2.run(key)
    assert r1.timed_ms == r2.timed_ms and len(set(r1.timed_ms)) > 1
    assert np.median(r1.timed_ms) == pytest.approx(d1.table.ms[key], rel=0.15)
    other = parse_profile({**profile.as_dict(), "connection": {**profile.as_dict()["connection"], "seed": 4}}, "x")
    assert make_driver(other).run(key).timed_ms != r1.timed_ms


def test_bad_table_or_column_is_a_clear_error(tmp_path):
    small_table(tmp_path / "t.csv")
    bad_col = parse_profile({"name": "r", "connection": {"kind": "replay", "table": str(tmp_path / "t.csv"),
                                                         "column": "dev_z_ms"}}, "x")
    report = make_driver(bad_col).check()
    assert not report.ok and "dev_z_ms" in report.message and "dev_a_ms" in report.message
    missing = parse_profile({"name": "r", "connection": {"kind": "replay", "table": str(tmp_path / "no.csv"),
                                                         "column": "dev_a_ms"}}, "x")
    with pytest.raises(DeviceError, match="does not exist"):
        make_driver(missing).prepare()
    fb = get_space("fbnet").sample(1, 0)[0]
    with pytest.raises(DeviceError, match="nb201 architectures, not fbnet"):
        make_driver(bad_col.model_copy(update={"connection": missing.connection.model_copy(
            update={"table": str(tmp_path / "t.csv")})})).push_arch(fb)


def test_replay_profile_validation_names_the_field(tmp_path):
    with pytest.raises(ProfileError, match="connection.column: required field is missing"):
        parse_profile({"name": "r", "connection": {"kind": "replay", "table": "t.csv"}}, "x")
    with pytest.raises(ProfileError, match="noise"):
        parse_profile({"name": "r", "connection": {"kind": "replay", "table": "t", "column": "c_ms", "noise": -1}},
                      "x")
    with pytest.raises(ProfileError, match="allowed here: kind, table, column, noise, seed"):
        parse_profile({"name": "r", "connection": {"kind": "replay", "table": "t", "column": "c_ms", "nois": 1}}, "x")
    for col in ("acc_cifar100_test_200ep", "nb201_index"):  # "measured" at 70.29 ms and 1 ms before
        with pytest.raises(ProfileError, match=f"connection.column.*'{col}' is not a latency column"):
            parse_profile({"name": "r", "connection": {"kind": "replay", "table": "t", "column": col}}, "x")


def test_measure_cli_on_a_replay_device(tmp_path, cli_env, devices_dir, store_path):
    small_table(tmp_path / "t.csv", drop=(0,))
    replay_profile(devices_dir, "rehearsal", tmp_path / "t.csv")
    df = pd.read_csv(tmp_path / "t.csv")
    keys = ",".join(str(i) for i in df.nb201_index[:3])
    out = harness("measure", "-d", "rehearsal", "--arch", keys, env=cli_env, check=False)
    assert out.returncode == 0, out.stderr
    assert "2 measured, 1 failed" in out.stdout and "device_error" in out.stdout
    chk = harness("devices", "check", "rehearsal", env=cli_env, check=False)
    assert chk.returncode == 0, chk.stdout + chk.stderr


def test_a_table_of_another_space_or_of_none_of_the_list_is_refused_before_measuring(tmp_path, store_path):
    """`measure -d fb-pi --space nb201` recorded 5 device_error visits and said "rerun when the device is back"; later
    each refusal still left a failed campaign behind."""
    from harness.errors import HarnessError

    df = small_table(tmp_path / "t.csv")
    replay_profile(tmp_path, "rehearsal", tmp_path / "t.csv")
    profile = ProfileRegistry(tmp_path).get("rehearsal")
    fbnet = get_space("fbnet")
    absent = [a for a in SPACE.sample(300, 7) if a.columns["nb201_index"] not in set(df.nb201_index)][:4]
    with Store(store_path) as st:
        with pytest.raises(HarnessError, match="holds nb201 architectures, not fbnet; .*--space nb201"):
            run_campaign(st, profile, fbnet, fbnet.sample(3, 0), cache=ModelCache(tmp_path / "cache"))
        with pytest.raises(HarnessError, match="no value for any of the 4 nb201"):
            run_campaign(st, profile, SPACE, absent, cache=ModelCache(tmp_path / "cache"))
        assert len(st.measurements("rehearsal")) == 0 and st.campaigns().empty


def test_a_value_that_is_no_latency_is_named_as_such(tmp_path, store_path):
    df = small_table(tmp_path / "t.csv")
    df.loc[0, "dev_a_ms"] = -2.5
    df.to_csv(tmp_path / "t.csv", index=False)
    replay_profile(tmp_path, "rehearsal", tmp_path / "t.csv")
    profile = ProfileRegistry(tmp_path).get("rehearsal")
    with Store(store_path) as st:
        s = run_campaign(st, profile, SPACE, [SPACE.parse(str(df.nb201_index[0])), SPACE.parse(str(df.nb201_index[1]))],
                         cache=ModelCache(tmp_path / "cache"))
        assert (s.ok, s.failed) == (1, 1)
        msg = st.measurements("rehearsal").failure_message.dropna().iloc[0]
    assert "-2.5" in msg and "not a latency" in msg


def test_measure_refuses_a_replay_table_of_another_space_alone_and_in_a_farm(tmp_path, cli_env, devices_dir):
    """One device: a NameError traceback from the flag hint (it read measure.run's lazily imported return type);
    several: the device recorded device_error visits and the command exited 0."""
    fb = get_space("fbnet")
    archs = fb.sample(5, 0)
    pd.DataFrame({"op_idx_list": [a.key for a in archs], "fb_ms": np.linspace(1, 2, 5)}).to_csv(
        tmp_path / "fb.csv", index=False)
    replay_profile(devices_dir, "fb-table", tmp_path / "fb.csv", column="fb_ms")
    small_table(tmp_path / "t.csv")
    replay_profile(devices_dir, "nb-table", tmp_path / "t.csv")
    keys = ",".join(str(i) for i in pd.read_csv(tmp_path / "t.csv").nb201_index[:2])
    alone = harness("measure", "-d", "fb-table", "--arch", keys, env=cli_env, check=False)
    flat = " ".join(alone.stderr.split())
    assert alone.returncode == 2 and "holds fbnet architectures, not nb201" in flat and "Traceback" not in flat
    both = harness("measure", "-d", "fb-table,nb-table", "--arch", keys, env=cli_env, check=False)
    assert both.returncode == 1 and "Traceback" not in both.stderr
    with Store(cli_env["HARNESS_STORE"]) as st:
        assert len(st.measurements("fb-table")) == 0 and len(st.measurements("nb-table")) == 2
