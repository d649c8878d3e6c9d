"""The closed loop (`harness transfer`): rounds, stopping, resume after Ctrl-C, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as hst

from harness.analysis import closed_loop as cl
from harness.analysis import pareto
from harness.analysis import transfer_loop as tl
from harness.analysis.workflow import open_context, predict
from harness.campaign import run_campaign
from harness.devices.registry import ProfileRegistry
from harness.errors import HarnessError
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.importer import import_table
from harness.results.store import Store
from tests.conftest import harness


@pytest.fixture(autouse=True)
def _no_leftover_ctrl_c():
    """Campaigns stop on a counted Ctrl-C (harness.interrupts is process-wide): start each test clean."""
    from harness import interrupts

    interrupts.reset()
    yield

SPACE = get_space("nb201")
N = 240


def synthetic_table(path: Path, n: int = N, seed: int = 0) -> pd.DataFrame:
    """Four related devices and an accuracy on n NB201 architectures (latency grows with conv count)."""
    rng = np.random.default_rng(seed)
    archs = SPACE.sample(n, seed)
    x = np.stack([SPACE.encode(a) for a in archs]).astype(float)
    cost = x @ rng.uniform(0.2, 2.0, x.shape[1])
    acc = 40 + 3 * cost + rng.normal(0, 2, n)
    df = pd.DataFrame({"nb201_index": [a.columns["nb201_index"] for a in archs],
                       "arch_str": [a.columns["arch_str"] for a in archs],
                       "src_a_ms": np.exp(0.30 * cost) * rng.lognormal(0, 0.03, n),
                       "src_b_ms": 2 + cost ** 1.5 * rng.lognormal(0, 0.05, n),
                       "src_c_ms": rng.lognormal(0, 1, n),
                       "tgt_ms": 0.5 * np.exp(0.28 * cost) * rng.lognormal(0, 0.03, n),
                       "acc_test": acc})
    df.to_csv(path, index=False)
    return df


@pytest.fixture
def loop_setup(tmp_path, store_path, cache_dir):
    table = tmp_path / "table.csv"
    df = synthetic_table(table)
    devices = tmp_path / "loop-devices"
    devices.mkdir()
    (devices / "tgt-replay.yaml").write_text(yaml.safe_dump({
        "name": "tgt-replay", "connection": {"kind": "replay", "table": str(table), "column": "tgt_ms"},
        "policy": {"warmup_runs": 0, "timed_runs": 3}}))
    with Store(store_path) as st:
        import_table(st, table)
    return {"table": table, "df": df, "devices": devices, "store": store_path, "cache": cache_dir}


def ctx_of(st, s):
    return open_context(st, "nb201", str(s["cache"]))


def plan(st, s, **cfg):
    ctx = open_context(st, "nb201", str(s["cache"]))
    return tl.plan_loop(ctx, ProfileRegistry(s["devices"]), "tgt-replay", "acc_test",
                        cfg=cl.LoopConfig(**{"first_batch": 6, "batch": 3, "budget": 30, **cfg}))


def campaign(st, p, s):
    def measure(archs):
        run_campaign(st, p.profile, SPACE, archs, cache=ModelCache(s["cache"]))
    return measure


def test_loop_measures_through_campaigns_and_settles_the_front(loop_setup):
    s = loop_setup
    with Store(s["store"]) as st:
        p = plan(st, s)
        assert "tgt" in p.excluded_sources and "tgt" not in p.pool.source_names  # its own data is no source
        seen = []
        result = tl.run_loop(p, campaign(st, p, s), seen.append)
        last = result.rounds[-1]
        assert seen == result.rounds and last.stop in ("stable", "budget")
        measured = st.latencies("nb201", ["tgt-replay"])
        assert len(measured) == last.n_samples <= 30
        assert len(st.campaigns()) == len(result.rounds)  # one campaign per batch
        truth = s["df"].set_index("arch_str").tgt_ms
        keys = [a.key for a in p.archs]
        lat = np.exp(cl.predict_log(cl._fit(p.pool, np.array(sorted(tl.measured_state(p)[0])),
                                            np.array([v for _, v in sorted(tl.measured_state(p)[0].items())])),
                                    p.pool))
        check = pareto.check(lat, truth.reindex(keys).to_numpy(), p.pool.accuracy)
        assert check.hv_ratio > 0.97
        assert set(result.front.columns) >= {"nb201_index", "arch_str", "acc_test", "predicted_ms", "p_front"}
        saved = st.latest_predictor("nb201", "tgt-replay")
        assert saved["provenance"]["loop_id"] == p.loop_id and saved["method"] == "multiproxy"
        predicted = predict(ctx_of(st, s), "tgt-replay")  # `harness predict` reads the loop's predictor
        assert len(predicted) == 15625 and (predicted.predicted_ms > 0).all()


def test_interrupted_loop_resumes_and_measures_nothing_twice(loop_setup, tmp_path):
    s = loop_setup
    with Store(s["store"]) as st:
        p = plan(st, s)
        calls = []

        def flaky(archs):
            calls.append(len(archs))
            if len(calls) == 2:  # Ctrl-C in the middle of the second batch
                run_campaign(st, p.profile, SPACE, archs[:1], cache=ModelCache(s["cache"]))
                raise KeyboardInterrupt
            run_campaign(st, p.profile, SPACE, archs, cache=ModelCache(s["cache"]))

        with pytest.raises(KeyboardInterrupt):
            tl.run_loop(p, flaky)
        assert len(tl.history(p)) == 1
        resumed = tl.run_loop(p, campaign(st, p, s))
        assert resumed.resumed_from == 1
        m = st.measurements("tgt-replay")
        assert m.key.is_unique  # nothing measured twice
        if resumed.rounds[-1].stop == "stable":
            again = tl.run_loop(p, lambda archs: pytest.fail("a settled loop must not measure"))
            assert again.already_done
        decisions = [r.next_batch for r in tl.history(p)]
    # an uninterrupted run in a fresh store takes the very same decisions
    fresh = tmp_path / "fresh.db"
    with Store(fresh) as st2:
        import_table(st2, s["table"])
        p2 = plan(st2, {**s, "store": fresh})
        straight = tl.run_loop(p2, campaign(st2, p2, s))
    assert [r.next_batch for r in straight.rounds] == decisions


def test_rerun_resumes_its_loop_though_a_device_joined_all_and_small_ones_are_no_sources(loop_setup, tmp_path):
    """A device measured since (another target's loop) joined `--proxy all`: the same command started a new loop,
    measured a new first batch and threw the history away; that target, measured 20 times, became a source."""
    s = loop_setup
    with Store(s["store"]) as st:
        p = plan(st, s)
        calls = []

        def once(archs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            run_campaign(st, p.profile, SPACE, archs, cache=ModelCache(s["cache"]))

        with pytest.raises(KeyboardInterrupt):
            tl.run_loop(p, once)
        df = s["df"]
        extra = df[["nb201_index", "arch_str"]].assign(late_ms=df.src_b_ms * 1.1)
        extra.to_csv(tmp_path / "late.csv", index=False)
        import_table(st, tmp_path / "late.csv")  # a full-size device that was not there when the loop began
        df[["nb201_index", "arch_str"]].head(25).assign(tiny_ms=df.src_a_ms.head(25)).to_csv(tmp_path / "t.csv",
                                                                                            index=False)
        import_table(st, tmp_path / "t.csv")
        again = plan(st, s)
        assert again.loop_id == p.loop_id and again.pool.source_names == p.pool.source_names
        assert tl.run_loop(again, campaign(st, again, s)).resumed_from == 1
        other = tl.plan_loop(ctx_of(st, s), ProfileRegistry(s["devices"]), "tgt-replay", "acc_test",
                             proxies=["src_a", "late"], cfg=cl.LoopConfig(first_batch=6, batch=3, budget=30))
        assert other.loop_id != p.loop_id  # named proxies are another loop
    with Store(tmp_path / "fresh.db") as st2:  # a fresh store: `all` is every full-size device, not the tiny one
        import_table(st2, s["table"])
        import_table(st2, tmp_path / "late.csv")
        import_table(st2, tmp_path / "t.csv")
        ctx = ctx_of(st2, s)
        fresh = tl.plan_loop(ctx, ProfileRegistry(s["devices"]), "tgt-replay", "acc_test",
                             cfg=cl.LoopConfig(first_batch=6, batch=3, budget=30))
        assert "late" in fresh.pool.source_names and "tiny" not in fresh.pool.source_names
        assert any("tiny (25)" in n for n in ctx.notes)


def test_a_replay_table_with_gaps_never_spends_a_pick_on_them(loop_setup, tmp_path, cli_env):
    """Farthest-point first batches love extremes, and a public table often lacks exactly those (Eagle's i7 lacks
    341 of NB201's architectures): the loop must never pick what its replay target cannot answer."""
    s = loop_setup
    with Store(s["store"]) as st:
        whole = plan(st, s)
        first = [whole.archs[i].key for i in cl.first_batch(whole.pool, 6, 0)]
    df = s["df"].copy()
    gaps = set(first[:4]) | set(df.arch_str.iloc[::10])  # the picks it would make first, and more
    df["gappy_ms"] = df.tgt_ms.where(~df.arch_str.isin(gaps))
    table = tmp_path / "gappy.csv"
    df.drop(columns="tgt_ms").to_csv(table, index=False)
    (s["devices"] / "gappy.yaml").write_text(yaml.safe_dump({
        "name": "gappy", "connection": {"kind": "replay", "table": str(table), "column": "gappy_ms"},
        "policy": {"warmup_runs": 0, "timed_runs": 3}}))
    with Store(s["store"]) as st:
        p = tl.plan_loop(open_context(st, "nb201", str(s["cache"])), ProfileRegistry(s["devices"]), "gappy",
                         "acc_test", cfg=cl.LoopConfig(first_batch=6, batch=3, budget=15))
        constant = {a.key for a in whole.ctx.candidates() if a.key in set(df.arch_str)} - {a.key for a in whole.archs}
        assert p.constant_output == len(constant) > 0
        assert p.unanswerable == len(gaps - constant) and len(p.archs) == N - len(gaps | constant)
        assert not gaps & {a.key for a in p.archs}
        assert p.loop_id != whole.loop_id  # rounds hold pool rows: another pool is another loop
        result = tl.run_loop(p, campaign(st, p, s))
        m = st.measurements("gappy")
        assert (m.status == "ok").all() and not gaps & set(m.key)
        assert result.rounds[0].n_samples == 6  # the whole first batch is usable
        df.assign(gappy_ms=np.nan).drop(columns="tgt_ms").to_csv(table, index=False)  # a table of gaps only
        with pytest.raises(HarnessError, match="has no value for any nb201 architecture with acc_test"):
            tl.plan_loop(open_context(st, "nb201", str(s["cache"])), ProfileRegistry(s["devices"]), "gappy",
                         "acc_test")
        df.drop(columns="tgt_ms").to_csv(table, index=False)
    env = {**cli_env, "HARNESS_DEVICES": str(s["devices"]), "HARNESS_STORE": str(s["store"])}
    out = harness("transfer", "--target", "gappy", "--accuracy", "acc_test", "--budget", "15", env=env)
    assert f"({len(gaps - constant)} candidates left out: the replay table has no value for them)" in out.stdout
    assert f"({len(constant)} candidates left out: their network's output is a constant)" in out.stdout
    # search leaves them out too (it listed them, and --verify found out by measuring: "0 of 2 held (4 measured)")
    from harness.analysis import search as search_mod

    budget = float(df.gappy_ms.max()) * 2
    found = json.loads(harness("search", "--target", "gappy", "--accuracy", "acc_test", "--max-ms", str(budget),
                               "--top", "50", "--json", env=env).stdout)
    assert found["left_out_unanswerable"] == len(gaps - constant)
    assert not gaps & {row["arch_str"] for row in found["top"]}
    with Store(s["store"]) as st:  # the library without `answerable`: verify counts the failures as failures
        ctx = open_context(st, "nb201", str(s["cache"]))
        r = search_mod.search(ctx, "gappy", budget, "acc_test", top=len(N * [0]))
        holes = [i for i, a in enumerate(r.archs) if a.key in gaps][:2]
        fine = [i for i, (a, src) in enumerate(zip(r.archs, r.top.source)) if a.key not in gaps and src == "predicted"]
        assert len(holes) == 2 and fine, "the ranked list holds the table's gaps"
        pick = [fine[0], *holes]
        r.archs, r.top = [r.archs[i] for i in pick], r.top.iloc[pick].reset_index(drop=True)
        profile = ProfileRegistry(s["devices"]).get("gappy")
        checked = search_mod.verify(ctx, r, 3, lambda archs: run_campaign(st, profile, SPACE, archs,
                                                                          cache=ModelCache(s["cache"])))
        assert checked.attrs["newly_measured"] == 1 and checked.attrs["failed"] == 2
        n_campaigns = len(st.campaigns())
        with pytest.raises(HarnessError, match="has no value for any of the 2 nb201 architecture"):
            run_campaign(st, profile, SPACE, [r.archs[1], r.archs[2]], cache=ModelCache(s["cache"]), remeasure=True)
        assert len(st.campaigns()) == n_campaigns  # refused before a campaign row: no failed campaign left behind

def test_the_budget_counts_what_the_target_had_before_the_loop(loop_setup):
    """A target with 50 earlier measurements and --budget 30 measured a first batch of 10 more and then said 'the
    budget of 30 samples is spent' after 59: the budget is the target's measurements in all."""
    s = loop_setup
    with Store(s["store"]) as st:
        p = plan(st, s, budget=12)
        run_campaign(st, p.profile, SPACE, p.archs[:12], cache=ModelCache(s["cache"]))
        result = tl.run_loop(p, lambda archs: pytest.fail(f"the budget is spent, yet {len(archs)} more were measured"))
        assert result.rounds[0].n_samples == 12 and result.rounds[0].stop == "budget"
        asked = []
        q = plan(st, s, budget=14, seed=5)  # two left: the first batch of 6 shrinks to them

        def measure(archs):
            asked.append(len(archs))
            run_campaign(st, q.profile, SPACE, archs, cache=ModelCache(s["cache"]))

        last = tl.run_loop(q, measure).rounds[-1]
        assert asked == [2] and last.n_samples == 14 and last.stop == "budget"


def test_bad_input_is_refused_before_anything_is_measured(loop_setup):
    s = loop_setup
    with Store(s["store"]) as st:
        ctx = open_context(st, "nb201", str(s["cache"]))
        reg = ProfileRegistry(s["devices"])
        with pytest.raises(HarnessError, match="--budget 4 is smaller than the first batch"):
            tl.plan_loop(ctx, reg, "tgt-replay", "acc_test", cfg=cl.LoopConfig(first_batch=6, budget=4))
        with pytest.raises(HarnessError, match="'acc_nope' is not a nb201 accuracy column.*acc_test"):
            tl.plan_loop(ctx, reg, "tgt-replay", "acc_nope")
        with pytest.raises(HarnessError, match="no device profile and no nb201 data"):
            tl.plan_loop(ctx, reg, "no-such-phone", "acc_test")
        # imported data: adding NAME.yaml (the old advice) ends in "one name is one device" after the pool is built
        with pytest.raises(HarnessError, match="'src_a' is imported data.*src_a-replay.yaml.*column src_a_ms"):
            tl.plan_loop(ctx, reg, "src_a", "acc_test")
        (s["devices"] / "src_a.yaml").write_text(yaml.safe_dump({
            "name": "src_a", "connection": {"kind": "replay", "table": str(s["table"]), "column": "src_a_ms"}}))
        with pytest.raises(HarnessError, match="'src_a' is imported data"):  # refused before the pool, not after
            tl.plan_loop(ctx, ProfileRegistry(s["devices"]), "src_a", "acc_test")
        (s["devices"] / "src_a.yaml").unlink()
        with pytest.raises(HarnessError, match="fbnet"):
            tl.plan_loop(open_context(st, "fbnet", str(s["cache"])), reg, "tgt-replay", None)
        assert st.campaigns().empty


def test_cli_transfer_prints_rounds_and_front_and_refuses_bad_budget(loop_setup, cli_env):
    s = loop_setup
    env = {**cli_env, "HARNESS_DEVICES": str(s["devices"]), "HARNESS_STORE": str(s["store"])}
    base = ["transfer", "--target", "tgt-replay", "--accuracy", "acc_test"]
    bad = harness(*base, "--budget", "5", env=env, check=False)
    assert bad.returncode == 2 and "--budget 5 is smaller than the first batch (10)" in bad.stderr
    assert "Traceback" not in bad.stderr
    out = harness(*base, "--budget", "20", "--batch", "4", "--json", env=env, check=False)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["rounds"][0]["n_samples"] == 10 and r["rounds"][-1]["n_samples"] <= 20 and r["front"]
    human = harness(*base, "--budget", "20", "--batch", "4", env=env, check=False)
    assert human.returncode == 0 and "predicted Pareto front on tgt-replay" in human.stdout


def test_transfer_on_a_device_another_command_measures_is_busy_exit_3_as_measure_says(loop_setup, cli_env):
    from harness.devices.lease import DeviceLease, lock_dir_for

    s = loop_setup
    env = {**cli_env, "HARNESS_DEVICES": str(s["devices"]), "HARNESS_STORE": str(s["store"])}
    with DeviceLease("tgt-replay", lock_dir_for(s["store"]), wait=0):
        r = harness("transfer", "--target", "tgt-replay", "--accuracy", "acc_test", env=env, check=False)
    assert r.returncode == 3 and "busy:" in r.stderr and "Traceback" not in r.stderr
    assert "rerun with --wait" in " ".join(r.stderr.split())  # it sent transfer users to `harness measure --wait`
    import threading  # --wait: transfer waits for the holder, then runs (it had no --wait)

    lease = DeviceLease("tgt-replay", lock_dir_for(s["store"]), wait=0).acquire()
    threading.Timer(1.0, lease.release).start()
    r = harness("transfer", "--target", "tgt-replay", "--accuracy", "acc_test", "--budget", "12", "--wait",
                env={**env, "COLUMNS": "200"})
    assert "waiting: tgt-replay is being measured by" in " ".join(r.stderr.split())


def test_simulated_loop_beats_its_own_start():
    rng = np.random.default_rng(1)
    archs = SPACE.sample(400, 1)
    x = np.stack([SPACE.encode(a) for a in archs]).astype(float)
    cost = x @ rng.uniform(0.2, 2.0, x.shape[1])
    src = np.stack([np.exp(0.3 * cost) * rng.lognormal(0, 0.05, 400), rng.lognormal(0, 1, 400)], axis=1)
    truth = np.exp(0.25 * cost + 0.1 * x[:, 3]) * rng.lognormal(0, 0.02, 400)
    acc = 40 + 3 * cost + rng.normal(0, 2, 400)
    pool = cl.Pool([a.key for a in archs], src, ["a", "c"], x, x, acc)
    hist, _ = cl.simulate(pool, truth, cl.LoopConfig(first_batch=8, batch=4, budget=40))
    assert hist[0].n_samples == 8 and hist[-1].n_samples <= 40
    assert all(b.n_samples - a.n_samples <= 4 for a, b in zip(hist, hist[1:]))
    assert hist[-1].loo_srcc > 0.9


def small_pool(n=300, seed=2):
    rng = np.random.default_rng(seed)
    archs = SPACE.sample(n, seed)
    x = np.stack([SPACE.encode(a) for a in archs]).astype(float)
    cost = x @ rng.uniform(0.2, 2.0, x.shape[1])
    src = np.stack([np.exp(0.3 * cost) * rng.lognormal(0, 0.05, n), rng.lognormal(0, 1, n)], axis=1)
    truth = np.exp(0.25 * cost + 0.3 * x[:, 3]) * rng.lognormal(0, 0.05, n)
    acc = 40 + 3 * cost + rng.normal(0, 2, n)
    return cl.Pool([a.key for a in archs], src, ["a", "c"], x, x, acc), truth


def test_diverse_order_is_nested():
    pool, _ = small_pool()
    first = cl.first_batch(pool, 8, 3).tolist()
    assert cl.first_batch(pool, 14, 3).tolist() == first + cl.diverse_next(pool, set(first), 6, 3)
    # rows taken out of order (a failed or resumed batch) are skipped, the order goes on
    assert cl.diverse_next(pool, set(first[:4]), 6, 3) == first[4:] + cl.diverse_next(pool, set(first), 2, 3)


def test_loop_explores_like_a_fixed_k_campaign_then_picks_uncertain_ones():
    pool, truth = small_pool()
    cfg = cl.LoopConfig(first_batch=6, batch=4, budget=30, explore=12, stable_rounds=99)
    hist, _ = cl.simulate(pool, truth, cfg)
    fixed12 = cl.first_batch(pool, 12, 0).tolist()
    # rounds at 6 and 10 samples: the diverse order, exactly what a fixed K = 10 / 12 campaign measures
    assert cl.first_batch(pool, 6, 0).tolist() + hist[0].next_batch == fixed12[:10]
    crossing = hist[1].next_batch  # 10 -> 14: two to reach explore = 12, then two where the front is unsure
    assert hist[1].n_samples == 10 and crossing[:2] == fixed12[10:]
    assert set(crossing[2:]).isdisjoint(cl.diverse_next(pool, set(fixed12), 2, 0))
    mixed, _ = cl.simulate(pool, truth, cl.LoopConfig(first_batch=6, batch=4, budget=18, explore=12,
                                                      stable_rounds=99, pick="mixed"))
    assert mixed[1].next_batch[:3] == cl.first_batch(pool, 13, 0).tolist()[10:]  # 2 explore + half of the rest
    with pytest.raises(cl.LoopError, match="unknown pick"):
        cl.LoopConfig(pick="best").validate(100)
    with pytest.raises(cl.LoopError, match="--explore"):
        cl.LoopConfig(explore=-1).validate(100)


def test_loop_can_explore_where_its_predictor_is_unsure():
    """explore_by="uncertain": after the first batch, explore rounds pick by the ensemble's disagreement
    (sampling.select_uncertain on the fitted model), not the diverse order; never a measured row twice."""
    pool, truth = small_pool()
    cfg = cl.LoopConfig(first_batch=6, batch=4, budget=14, explore=14, stable_rounds=99, explore_by="uncertain")
    hist, model = cl.simulate(pool, truth, cfg)
    first = cl.first_batch(pool, 6, 0).tolist()
    cols = [pool.source_names.index(s) for s in model.sources]
    assert hist[0].next_batch != cl.diverse_next(pool, set(first), 4, 0)
    taken = first + hist[0].next_batch + hist[1].next_batch
    assert len(set(taken)) == len(taken) == 14 and cols
    with pytest.raises(cl.LoopError, match="unknown --explore-by"):
        cl.LoopConfig(explore_by="psychic").validate(100)


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.tuples(hst.integers(1, 30), hst.integers(0, 30)), min_size=1, max_size=60))
def test_front_mask_is_the_pareto_mask(points):
    lat = np.array([p[0] for p in points], dtype=float)
    acc = np.array([p[1] for p in points], dtype=float)
    np.testing.assert_array_equal(cl.front_mask(lat, acc), pareto.pareto_mask(lat, acc))


def test_search_under_budget_then_verify_on_the_device(loop_setup, cli_env):
    from harness.analysis import search as search_mod

    s = loop_setup
    with Store(s["store"]) as st:
        ctx = open_context(st, "nb201", str(s["cache"]))
        with pytest.raises(HarnessError, match="no nb201 measurements and no predictor.*harness transfer"):
            search_mod.search(ctx, "tgt-replay", 5.0, "acc_test")
        p = plan(st, s)
        tl.run_loop(p, campaign(st, p, s))
        budget = float(np.median(s["df"].tgt_ms))
        r = search_mod.search(ctx, "tgt-replay", budget, "acc_test", top=5)
        assert len(r.top) == 5 and (r.top.latency_ms <= budget).all()
        assert list(r.top.acc_test) == sorted(r.top.acc_test, reverse=True)
        assert set(r.top.source) <= {"measured", "predicted"} and "closed loop, round" in r.predictor
        n_before = len(st.measurements("tgt-replay"))
        checked = search_mod.verify(ctx, r, 3, campaign(st, p, s))
        truth = s["df"].set_index("arch_str").tgt_ms
        assert len(checked) == 5 and checked.attrs["verified"] == 3  # the whole list, its top 3 verified
        for _, row in checked.head(3).iterrows():
            assert row.measured_ms == pytest.approx(truth[row.arch_str])
            assert row.held == (truth[row.arch_str] <= budget)
        assert len(st.measurements("tgt-replay")) - n_before == (r.top.head(3).source == "predicted").sum()
        with pytest.raises(HarnessError, match="no nb201 architecture is under 1e-06 ms.*the fastest is"):
            search_mod.search(ctx, "tgt-replay", 1e-6, "acc_test")
    env = {**cli_env, "HARNESS_DEVICES": str(s["devices"]), "HARNESS_STORE": str(s["store"])}
    out = harness("search", "--target", "tgt-replay", "--accuracy", "acc_test", "--max-ms", str(budget), "--top",
                  "3", "--json", env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["top"]) == 3
    verify = ["search", "--target", "tgt-replay", "--accuracy", "acc_test", "--max-ms", str(budget), "--top", "5",
              "--verify", "3"]
    harness(*verify, env=env)
    again = harness(*verify, env={**env, "COLUMNS": "200"})
    flat = " ".join(again.stdout.split())  # the same top 3 verified twice: the second time nothing is new
    assert "verified the top 3:" in flat and "all 3 were measured before: nothing new to measure" in flat, flat
    bad = harness("search", "--target", "tgt-replay", "--accuracy", "acc_nope", "--max-ms", "1", env=env,
                  check=False)
    assert bad.returncode == 2 and "acc_nope" in bad.stderr and "Traceback" not in bad.stderr
    neg = harness(*verify[:-1], "-1", env=env, check=False)  # "must be at least 1" beside "(0 = don't)" before
    assert neg.returncode == 2 and "greater than or equal to 0" in " ".join(re.sub("[│╭╮╰╯─]", " ", neg.stderr).split())
    # picks predicted just under the budget get a note, and only they
    for b in (budget, budget * 0.6):
        args = ["search", "--target", "tgt-replay", "--accuracy", "acc_test", "--max-ms", str(b), "--top", "5"]
        top = pd.DataFrame(json.loads(harness(*args, "--json", env=env).stdout)["top"])
        said = " ".join(harness(*args, env={**env, "COLUMNS": "200"}).stdout.split())
        close = top[top.source == "predicted"].p_under
        assert ("sit close to the budget" in said) == bool(len(close) and close.median() < 0.75), said[-300:]


def test_search_with_confidence_drops_predictions_too_close_to_the_budget(loop_setup, cli_env):
    from harness.analysis import search as search_mod

    s = loop_setup
    with Store(s["store"]) as st:
        ctx = open_context(st, "nb201", str(s["cache"]))
        p = plan(st, s)
        tl.run_loop(p, campaign(st, p, s))
        budget = float(np.median(s["df"].tgt_ms))
        plain = search_mod.search(ctx, "tgt-replay", budget, "acc_test", top=10_000)
        sure = search_mod.search(ctx, "tgt-replay", budget, "acc_test", top=10_000, confidence=0.9)
        assert sure.sigma_log is not None and sure.sigma_log > 0
        assert 0 < sure.n_under < plain.n_under  # the coin flips near the budget are gone
        pred = sure.top[sure.top.source == "predicted"]
        assert (pred.p_under >= 0.9).all() and (pred.latency_ms < budget).all()
        # P(under) falls as the prediction nears the budget, and is 1/0 for what is measured
        pp = plain.top[plain.top.source == "predicted"].sort_values("latency_ms")
        assert pp.p_under.is_monotonic_decreasing and (plain.top.query("source == 'measured'").p_under == 1).all()
        with pytest.raises(HarnessError, match="confidence must be a probability"):
            search_mod.search(ctx, "tgt-replay", budget, "acc_test", confidence=1.0)
    env = {**cli_env, "HARNESS_DEVICES": str(s["devices"]), "HARNESS_STORE": str(s["store"])}
    out = harness("search", "--target", "tgt-replay", "--accuracy", "acc_test", "--max-ms", str(budget),
                  "--confidence", "0.9", "--top", "5", env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert "P(under)" in out.stdout and "with probability >= 0.9" in out.stdout


def test_rerunning_a_loop_that_spent_its_budget_shows_its_front_again(loop_setup, cli_env):
    """The same command after a budget stop said 'already spent its budget of 40 samples' and exited 2."""
    s = loop_setup
    env = {**cli_env, "HARNESS_DEVICES": str(s["devices"]), "HARNESS_STORE": str(s["store"]), "COLUMNS": "200"}
    cmd = ["transfer", "--target", "tgt-replay", "--accuracy", "acc_test", "--budget", "10"]
    first = harness(*cmd, env=env)
    assert "the budget of 10 samples is spent" in " ".join(first.stdout.split())
    again = harness(*cmd, env=env)
    flat = " ".join(again.stdout.split())
    assert "already stopped in round 0 with 10 samples, its budget spent (raise --budget above 10" in flat, flat
    assert "predicted Pareto front on tgt-replay" in flat


@pytest.mark.slow
def test_the_loop_and_verify_serve_a_virtual_phone_as_measure_does(loop_setup, cli_env):
    """`transfer --target virtual-phone` fitted for half a minute, then failed: 'cannot reach virtual' (only
    `measure` served the virtual phone); `search --verify` the same."""
    s = loop_setup
    (s["devices"] / "vphone.yaml").write_text(yaml.safe_dump({
        "name": "vphone", "connection": {"kind": "adb", "serial": "virtual"},
        "runtime": {"name": "tflite", "threads": 1}, "policy": {"warmup_runs": 1, "timed_runs": 3, "rounds": 1}}))
    env = {**cli_env, "HARNESS_DEVICES": str(s["devices"]), "HARNESS_STORE": str(s["store"])}
    out = harness("transfer", "--target", "vphone", "--accuracy", "acc_test", "--budget", "8", "--first-batch", "5",
                  "--batch", "3", env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    with Store(s["store"]) as st:
        m = st.measurements("vphone")
    assert len(m) == 8 and (m.status == "ok").all() and (m.median_ms > 0).all()
    budget = float(m.median_ms.max()) * 2
    out = harness("search", "--target", "vphone", "--accuracy", "acc_test", "--max-ms", str(budget), "--top", "4",
                  "--verify", "4", env=env, check=False)
    assert out.returncode == 0 and "verified the top" in " ".join(out.stdout.split()), out.stdout + out.stderr


def test_the_replayed_column_imported_under_another_name_is_no_source(loop_setup):
    """OneProxy's table imported with --prefix op- holds the replayed column again as op-tgt: the loop used the
    target's own answers as a source (a near-perfect fit that means nothing)."""
    s = loop_setup
    with Store(s["store"]) as st:
        import_table(st, s["table"], prefix="op-")
        p = plan(st, s)
        assert {"tgt", "op-tgt"} <= set(p.excluded_sources)
        assert not {"tgt", "op-tgt"} & set(p.pool.source_names) and "op-src_a" in p.pool.source_names
        with pytest.raises(HarnessError, match="drop op-tgt from --proxy .*replay table"):
            tl.plan_loop(ctx_of(st, s), ProfileRegistry(s["devices"]), "tgt-replay", "acc_test", ["src_a", "op-tgt"])


def test_the_loop_and_search_work_on_a_workload_series(loop_setup, cli_env):
    """A profile with a batch-4 workload measured the first batch and then found none of it (it read the results
    under the profile's name, not NAME@bs4); a series set by flags (tgt-replay@bs4) could be no target at all."""
    s = loop_setup
    (s["devices"] / "tgt-bs4.yaml").write_text(yaml.safe_dump({
        "name": "tgt-bs4", "connection": {"kind": "replay", "table": str(s["table"]), "column": "tgt_ms"},
        "policy": {"warmup_runs": 0, "timed_runs": 3}, "workload": {"batch_size": 4}}))
    env = {**cli_env, "HARNESS_DEVICES": str(s["devices"]), "HARNESS_STORE": str(s["store"])}
    for target, series in (("tgt-bs4", "tgt-bs4@bs4"), ("tgt-replay@bs4", "tgt-replay@bs4")):
        out = harness("transfer", "--target", target, "--accuracy", "acc_test", "--budget", "12", "--first-batch",
                      "6", "--batch", "3", env=env, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        with Store(s["store"]) as st:
            n = len(st.latencies("nb201", [series]))
            assert 6 <= n <= 12 and st.latest_predictor("nb201", series) is not None
        found = harness("search", "--target", target, "--accuracy", "acc_test", "--max-ms", "100", "--top", "3",
                        "--verify", "2", "--json", env=env, check=False)
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["target"] == series
    with Store(s["store"]) as st:
        assert len(st.latencies("nb201", ["tgt-replay"])) == 0  # the default series measured nothing
