"""Measurements you can trust, tested like a lab: a deterministic fake device with known physics.

The lab device (harness.sim.lab) has known true latencies, a thermal model, injected outliers and a
background hog, all on a virtual clock, so these tests are exact and fast.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, spearmanr

from harness.campaign import DeviceNotQuiet, run_campaign
from harness.devices.profile import parse_profile
from harness.errors import ProfileError
from harness.measure.stats import OUTLIER, PREEMPTED, estimate, median_ci, median_ci_ranks, median_rel_ci
from tests.conftest import harness
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from harness.sim.lab import LabDevice, Physics, VirtualClock

SPACE = get_space("nb201")


def lab_profile(**policy):
    return parse_profile({"name": "lab", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                          "policy": {"reference": "none", **policy}}, "<lab>")


def true_latencies(cache, archs, spread=(0.5, 5.0), seed=0):
    """Known true latencies by model digest, and by key for checking orders."""
    import random

    rng = random.Random(seed)
    by_digest, by_key = {}, {}
    for a in archs:
        art = cache.get(SPACE.build(a), "onnx")
        by_digest[art.digest] = by_key[a.key] = rng.uniform(*spread)
    return by_digest, by_key


@pytest.fixture
def cache(cache_dir):
    return ModelCache(cache_dir)


# --- statistics -------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [6, 7, 10, 20, 33, 50, 100, 257])
def test_median_ci_ranks_cover_95_percent_and_are_tightest(n):
    lo, hi = median_ci_ranks(n)
    assert hi == n - 1 - lo  # symmetric
    coverage = 1 - 2 * binom.cdf(lo, n, 0.5)  # P(x_(lo+1) <= median <= x_(hi+1)) for 1-based ranks
    assert coverage >= 0.95
    assert 1 - 2 * binom.cdf(lo + 1, n, 0.5) < 0.95  # one rank tighter would not cover


def test_median_ci_needs_six_runs():
    assert median_ci_ranks(5) is None and median_ci([1.0] * 5) is None
    assert median_rel_ci([1.0, 2.0]) == float("inf")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=1e4, allow_nan=False), min_size=6, max_size=300))
def test_median_ci_brackets_the_median(xs):
    import statistics

    lo, hi = median_ci(xs)
    assert lo <= statistics.median(xs) <= hi
    assert median_rel_ci(xs) >= 0


def test_estimate_leaves_out_preempted_runs_and_flags_outliers():
    timed = [1.0, 1.01, 0.99, 5.0, 1.0, 1.02, 0.98, 1.0, 30.0, 1.01]
    waits = [0, 0, 0, 4.0, 0, 0, 0, 0, 0, 0]
    e = estimate(timed, waits, outlier_k=5)
    assert e.flags[3] & PREEMPTED and not e.flags[3] & OUTLIER is False or e.flags[3] & PREEMPTED
    assert e.flags[8] & OUTLIER and not e.flags[8] & PREEMPTED
    assert e.n_preempted == 1 and e.n_used == 9 and e.median_ms == pytest.approx(1.0, abs=0.011)
    kept = estimate(timed, waits, exclude_preempted=False)
    assert kept.n_used == 10


# --- policy errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("policy, field", [
    ({"adaptive": {"min_runs": 50, "max_runs": 10}}, "policy.adaptive"),
    ({"adaptive": {"target_rel_ci": 0}}, "policy.adaptive.target_rel_ci"),
    ({"adaptive": {"target_rel_ci": -0.1}}, "policy.adaptive.target_rel_ci"),
    ({"rounds": 0}, "policy.rounds"),
    ({"sentinels": {"archs": []}}, "policy.sentinels"),
    ({"gate": {"max_wait_s": -1}}, "policy.gate.max_wait_s"),
])
def test_contradictory_policies_are_profile_errors_naming_the_field(policy, field):
    with pytest.raises(ProfileError) as e:
        lab_profile(**policy)
    assert field in str(e.value)


def test_a_counted_policy_stays_fixed():
    p = lab_profile(timed_runs=7)
    assert p.policy.adaptive is None and p.policy.rounds == 1
    assert parse_profile({"name": "x", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"}},
                         "<x>").policy.adaptive is not None  # the default is adaptive


# --- adaptive repeats -------------------------------------------------------------------------

def test_adaptive_stops_early_on_quiet_models_and_late_on_noisy_ones(cache):
    quiet, noisy = (cache.get(SPACE.build(SPACE.parse(k)), "onnx") for k in ("1", "2"))
    prof = lab_profile(warmup_runs=2, adaptive={"target_rel_ci": 0.01, "min_runs": 10, "max_runs": 1000,
                                                "max_seconds": 100})
    lab = LabDevice(prof, Physics(noise=0.005, noisy={noisy.digest: 0.05}),
                    true_ms={quiet.digest: 1.0, noisy.digest: 1.0})
    q, n = lab.run(lab.push(quiet)), lab.run(lab.push(noisy))
    assert q.stop_rule == "ci_reached" and len(q.timed_ms) <= 12
    assert n.stop_rule == "ci_reached" and len(n.timed_ms) > 5 * len(q.timed_ms)
    assert median_rel_ci(n.timed_ms) <= 0.01
    capped = LabDevice(lab_profile(adaptive={"target_rel_ci": 0.001, "min_runs": 10, "max_runs": 30,
                                             "max_seconds": 100}), Physics(noise=0.2), true_ms={noisy.digest: 1})
    r = capped.run(capped.push(noisy))
    assert r.stop_rule == "max_runs" and len(r.timed_ms) == 30


def test_timed_runs_beside_adaptive_is_said_to_be_unused_where_adaptive_decides(cache, store_path):
    """`timed_runs: 3` beside `adaptive:` was silently ignored (26 runs over 3 visits) on harness's own runner."""
    prof = lab_profile(warmup_runs=1, timed_runs=3, adaptive={"min_runs": 6, "max_runs": 10})
    lab = LabDevice(prof)
    with Store(store_path) as st:
        s = run_campaign(st, prof, SPACE, SPACE.sample(1, 1), cache=cache, driver=lab, clock=lab.clock)
    assert s.unused_timed_runs == 3 and s.fixed_runs is None
    plain = lab_profile(warmup_runs=1, adaptive={"min_runs": 6, "max_runs": 10})  # nothing to say
    with Store(store_path) as st:
        s = run_campaign(st, plain, SPACE, SPACE.sample(1, 2), cache=cache, driver=LabDevice(plain), clock=lab.clock)
    assert s.unused_timed_runs is None


def test_a_campaign_stopped_by_an_unexpected_error_says_why_in_the_store(cache, store_path):
    """A plain OSError (not a harness error) left the campaign 'failed' with an empty message."""
    class FullDisk(LabDevice):
        def prepare(self):
            raise OSError(28, "No space left on device")

    prof = lab_profile(warmup_runs=1, timed_runs=3)
    with Store(store_path) as st:
        with pytest.raises(OSError):
            run_campaign(st, prof, SPACE, SPACE.sample(1, 1), cache=cache, driver=FullDisk(prof))
        row = st.campaigns().iloc[-1]
    assert row.status == "failed" and "No space left on device" in row.message


def test_fixed_policy_times_exactly_the_count(cache, store_path):
    archs = SPACE.sample(3, 1)
    prof = lab_profile(warmup_runs=1, timed_runs=9)
    lab = LabDevice(prof)
    with Store(store_path) as st:
        run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
        m = st.measurements("lab")
        assert list(m.n_runs) == [9, 9, 9]
        assert set(st.db.execute("SELECT stop_rule FROM measurements").fetchall()) == {("fixed",)}


# --- outliers and noisy neighbours ------------------------------------------------------------

def test_hog_runs_are_flagged_left_out_and_the_model_marked_suspect(cache, store_path):
    archs = SPACE.sample(4, 2)
    by_digest, by_key = true_latencies(cache, archs)
    prof = lab_profile(warmup_runs=1, timed_runs=40)
    lab = LabDevice(prof, Physics(noise=0.002, hog=(0.0, 1e9), hog_share=0.6, outlier_rate=0.05),
                    true_ms=by_digest)
    with Store(store_path) as st:
        run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
        v = st.visits("nb201", "lab")
        for _, row in v.iterrows():
            assert row.median_ms == pytest.approx(by_key[row.key], rel=0.01)  # hog runs left out
            assert row.n_preempted > 12 and "other processes used 90%" in row.suspect
            runs = st.run_table(int(row.id))
            assert (runs.flag & PREEMPTED).sum() == row.n_preempted
            assert ((runs.flag & PREEMPTED) > 0).eq(runs.wait_ms > 0).all()
        assert (st.db.execute("SELECT SUM(n_outliers) FROM measurements").fetchone()[0] or 0) > 0
        # mean, spread and p90 are of the runs the median is of: a CV is not the hog's time slices
        for mid, mean, std, p90 in st.db.execute("SELECT id, mean_ms, std_ms, p90_ms FROM measurements").fetchall():
            runs = st.run_table(int(mid))
            clean = runs[(runs.flag & PREEMPTED) == 0].latency_ms
            assert mean == pytest.approx(clean.mean()) and std == pytest.approx(clean.std(ddof=0))
            assert p90 <= clean.max() < runs.latency_ms.max()
        # and afterwards it still shows: per campaign, and per exported latency (how many visits behind it)
        assert list(st.campaigns().suspect) == [4]
        from harness.results.export import latency_table

        assert list(latency_table(st, "nb201")["lab_suspect"]) == [1, 1, 1, 1]


def test_one_timed_run_has_no_spread_and_the_summary_says_the_noise_is_unknown(cache, store_path):
    archs = SPACE.sample(2, 4)
    prof = lab_profile(warmup_runs=0, timed_runs=1)
    lab = LabDevice(prof)
    with Store(store_path) as st:
        s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
        assert s.no_ci == 2 and not s.unstable
        assert [r[0] for r in st.db.execute("SELECT std_ms FROM measurements")] == [None, None]  # not 0.0
        from harness.measure.confidence import model_ci, noise_draws

        ci = model_ci(noise_draws(st, "nb201", "lab", 50))  # export --ci: unknown, not a zero-width interval
        assert len(ci) == 2 and ci.isna().all().all()


# --- gating -----------------------------------------------------------------------------------

def test_the_temperature_gate_reads_the_runners_state_as_it_names_it():
    """The local and SSH runner's state says temperatures_c (the conditions schema; runner.dynamic_conditions); the
    gate read temperature_c, so max_start_temp_c was never observable there and never held a model back."""
    from harness.devices import runner
    from harness.devices.conditions import check_conditions
    from harness.measure.gating import violations
    from harness.measure.policy import Gate

    assert "temperatures_c" in runner.dynamic_conditions()  # the key the runner's state answers with
    state = {"temperatures_c": {"cpu-thermal": 81.0}, "cpu_freq_mhz": None, "loadavg_1m": 0.2}  # as it answers
    assert check_conditions(state) == []
    reasons, observable = violations(Gate(max_start_temp_c=70), state)
    assert observable and reasons == ["temperature 81.0 C > 70 C"]
    lab = LabDevice(lab_profile(), Physics())  # the stand-ins answer in the same names
    assert check_conditions(lab.state()) == [] and violations(Gate(max_start_temp_c=70), lab.state())[1]


def test_gating_waits_until_the_device_is_cool_and_records_the_wait(cache, store_path):
    archs = SPACE.sample(3, 3)
    prof = lab_profile(warmup_runs=1, timed_runs=5, gate={"max_start_temp_c": 40, "max_wait_s": 600, "poll_s": 2})
    lab = LabDevice(prof, Physics(heat_c_per_s=0.5, cool_ratio=1.0))
    lab.load_s = 60  # starts hot: 60 C

    class Watching:  # what the CLI's progress line hears while nothing moves
        said: list = []

        def started(self, summary, todo): pass

        def model_done(self, outcome, summary): pass

        def waiting(self, reasons): self.said.append(reasons)

        def model_starting(self, arch): self.said.append(["starting", arch.key])

    watching = Watching()
    with Store(store_path) as st:
        s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock, observer=watching)
        waits = [r[0] for r in st.db.execute("SELECT gate_wait_s FROM measurements ORDER BY id")]
        gates = [json.loads(r[0])["gate"] for r in st.db.execute("SELECT conditions_json FROM measurements")]
    assert s.ok == 3 and s.gate_timeouts == 0
    assert waits[0] == pytest.approx(40, abs=2.1)  # (60 - 40) C / 0.5 C per s of cooling
    assert all(w <= 2.0 for w in waits[1:])  # a model heats it a little; one poll cools it again
    assert all(g["state"]["temperatures_c"]["lab"] <= 40 and not g["timed_out"] for g in gates)
    assert s.gate_wait_s == pytest.approx(sum(waits))
    waits_said = [r for r in watching.said if r[0] != "starting"]
    assert len(waits_said) >= 19 and "temperature" in waits_said[0][0]  # told at every 2 s poll of ~40 s
    assert [r[1] for r in watching.said if r[0] == "starting"] == [a.key for a in archs]  # before each model


@pytest.mark.parametrize("on_timeout", ["continue", "stop"])
def test_a_device_never_quiet_is_recorded_and_never_hangs(cache, store_path, on_timeout):
    archs = SPACE.sample(3, 4)
    prof = lab_profile(warmup_runs=1, timed_runs=5,
                       gate={"max_loadavg": 1.0, "max_wait_s": 30, "poll_s": 5, "on_timeout": on_timeout})
    lab = LabDevice(prof, Physics(hog=(0.0, float("inf"))))
    with Store(store_path) as st:
        if on_timeout == "stop":
            with pytest.raises(DeviceNotQuiet, match="loadavg 2.00 > 1"):
                run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
            assert st.measurements("lab").empty
        else:
            s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
            assert s.ok == 3 and s.gate_timeouts == 3
            assert all("device not quiet" in x for x in st.measurements("lab").pipe(
                lambda m: [r[0] for r in st.db.execute("SELECT suspect FROM measurements")]))
        events = st.events()
        assert (events.kind == "gate_timeout").sum() == (1 if on_timeout == "stop" else 3)
    assert lab.clock.now() < 200  # bounded: 30 s per model at most


# --- sentinels --------------------------------------------------------------------------------

def test_sentinels_fire_on_the_thermal_window_mark_it_and_pause_until_recovery(cache, store_path):
    archs = SPACE.sample(40, 5)
    by_digest, _ = true_latencies(cache, archs, spread=(20, 40))
    prof = lab_profile(warmup_runs=2, timed_runs=20,
                       sentinels={"count": 2, "every": 5, "band": 0.05, "max_pause_s": 600, "pause_step_s": 10})
    # each model is ~0.6 s of load; it throttles 20 % after 8 s of load, i.e. around model 10
    lab = LabDevice(prof, Physics(noise=0.003, throttle=0.2, throttle_after_s=8, cool_ratio=1.0),
                    true_ms=by_digest)
    with Store(store_path) as st:
        s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
        series = st.sentinel_series("lab")
        suspect = [r[0] for r in st.db.execute("SELECT suspect IS NOT NULL FROM measurements ORDER BY id")]
        events = st.events()
    assert s.ok == 40
    assert set(series.phase) >= {"baseline", "check", "pause"}
    first_bad = int(series[(series.phase == "check") & (series.in_band == 0)].models_done.min())
    # the window measured since the last good check is marked, nothing before it
    assert suspect[:first_bad - 5] == [0] * (first_bad - 5)
    assert suspect[first_bad - 5:first_bad] == [1] * 5
    assert (events.kind == "sentinel_drift").any() and (events.kind == "pause").any()
    assert '"recovered": true' in events[events.kind == "pause"].detail_json.iloc[0]
    assert s.paused_s > 0
    assert s.suspect == sum(suspect)  # the summary counts the window the sentinel marked (it said 0)
    # each check keeps the band it was judged by (the profile's 5 %, or twice its own CI where wider)
    assert (series.band >= 0.05).all()
    dev = (series.median_ms / series.baseline_ms - 1).abs()
    assert ((dev <= series.band) == series.in_band.astype(bool)).all()


def test_sentinel_writes_wait_out_a_busy_store_as_measurements_do(cache, store_path, monkeypatch):
    """A 36 s write lock by another process failed a sentinel campaign (22/40) with "it is retried": the
    sentinel's, drift's and pause's writes were not."""
    from harness.errors import StoreError

    archs = SPACE.sample(12, 5)
    by_digest, _ = true_latencies(cache, archs, spread=(20, 40))
    prof = lab_profile(warmup_runs=2, timed_runs=20,
                       sentinels={"count": 1, "every": 3, "band": 0.05, "max_pause_s": 600, "pause_step_s": 10})
    lab = LabDevice(prof, Physics(noise=0.003, throttle=0.2, throttle_after_s=2, cool_ratio=1.0), true_ms=by_digest)
    busy = {"n": 0}

    def flaky(real):
        def write(*a, **k):
            busy["n"] += 1
            if busy["n"] % 2:  # every other write finds the store locked once
                err = StoreError("database is locked")
                err.transient = True
                raise err
            return real(*a, **k)
        return write

    with Store(store_path) as st:
        for name in ("record_sentinel", "record_event", "mark_suspect"):
            monkeypatch.setattr(st, name, flaky(getattr(st, name)))
        s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
        assert s.ok == 12 and s.status == "finished"
        assert len(st.sentinel_series("lab")) >= 4 and (st.events().kind == "sentinel_drift").any()
    assert busy["n"] >= 8


# --- interleaved rounds -----------------------------------------------------------------------

def _srcc_to_truth(store, by_key):
    lat = store.latencies("nb201", ["lab"]).set_index("key").latency_ms
    keys = list(lat.index)
    return spearmanr([lat[k] for k in keys], [by_key[k] for k in keys]).statistic


def test_rounds_cancel_the_bias_of_drift(cache, tmp_path):
    archs = SPACE.sample(30, 6)
    by_digest, by_key = true_latencies(cache, archs, spread=(1.0, 1.6))  # close latencies: drift re-orders them
    physics = dict(noise=0.002, throttle=0.5, throttle_after_s=0.0, ramp_s=5.0, cool_ratio=0.0)
    srcc = {}
    for rounds in (1, 5):
        prof = lab_profile(warmup_runs=2, timed_runs=max(4, 100 // rounds), rounds=rounds)
        lab = LabDevice(prof, Physics(**physics), true_ms=by_digest)
        with Store(tmp_path / f"r{rounds}.db") as st:
            run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
            v = st.visits("nb201", "lab")
            assert len(v) == 30 * rounds and set(v["round"]) == set(range(1, rounds + 1))
            srcc[rounds] = _srcc_to_truth(st, by_key)
    assert srcc[1] < 0.85  # one pass: the drift partly ranks models by when they were measured
    assert srcc[5] > 0.95 and srcc[5] > srcc[1] + 0.15


def test_rounds_resume_mid_round_without_losing_or_repeating_a_visit(cache, store_path):
    archs = SPACE.sample(6, 7)
    prof = lab_profile(warmup_runs=1, timed_runs=5, rounds=3)
    seen = []

    class StopAfter:
        def started(self, summary, todo):
            pass

        def model_done(self, outcome, summary):
            seen.append((outcome.arch.key, outcome.round))
            if len(seen) == 8:  # in the middle of round 2
                raise KeyboardInterrupt

    with Store(store_path) as st:
        lab = LabDevice(prof)
        with pytest.raises(KeyboardInterrupt):
            run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock, observer=StopAfter())
        s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=LabDevice(prof), clock=VirtualClock())
        assert s.ok == 18 - 8
        v = st.visits("nb201", "lab")
        assert len(v) == 18 and not v.duplicated(["key", "round"]).any()
        assert len(st.measurements("lab")) == 18
        again = run_campaign(st, prof, SPACE, archs, cache=cache, driver=LabDevice(prof), clock=VirtualClock())
        assert again.status == "nothing to do"
    first_round = [k for k, r in seen if r == 1]
    second_round = [k for k, r in seen if r == 2]
    assert len(first_round) == 6 and second_round != first_round[:len(second_round)] or len(second_round) < 2


def test_latency_is_the_median_over_rounds(cache, store_path):
    archs = SPACE.sample(2, 8)
    prof = lab_profile(warmup_runs=1, timed_runs=5, rounds=3)
    lab = LabDevice(prof, Physics(noise=0.05))
    with Store(store_path) as st:
        run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
        v = st.visits("nb201", "lab")
        lat = st.latencies("nb201", ["lab"]).set_index("key").latency_ms
        assert st.measurements("lab").model_digest.notna().all()  # later rounds keep the model's identity
        for key, g in v.groupby("key"):
            assert lat[key] == pytest.approx(g.median_ms.median())


@pytest.mark.parametrize("session_sd, noted", [(0.15, True), (0.0, False)])
def test_visits_that_disagree_beyond_their_own_runs_are_named(cache, store_path, session_sd, noted, capsys):
    """On a GPU each session ran at its own speed: visits of one model differed by ~13 % while each visit's runs
    agreed within 1 %. The summary says so (no count of runs per visit shows it); a steady device gets no note."""
    from harness.campaign import visit_disagreement
    from harness.cli.measure import print_visit_notes

    archs = SPACE.sample(8, 3)
    prof = lab_profile(warmup_runs=1, timed_runs=30, rounds=3)
    lab = LabDevice(prof, Physics(noise=0.01, session_sd=session_sd))
    with Store(store_path) as st:
        s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
    d = visit_disagreement(s)
    assert (d is not None) == noted
    if noted:
        assert d.archs == 8 and d.median_diff > 0.05 and d.within < 0.03 and d.worst_diff >= d.median_diff
        print_visit_notes(s)
        out = " ".join(capsys.readouterr().out.split())
        assert "visits disagree" in out and "(policy.rounds)" in out


@pytest.mark.parametrize("spread, noted", [((1.0, 1.08), "rankings unreliable"), ((0.5, 5.0), "rounds agree")])
def test_the_summary_gives_the_rankings_noise_floor_between_rounds(cache, store_path, spread, noted, capsys):
    """Architectures closer together than the device moves between visits (an H200 at batch 1: SRCC -0.34 between
    rounds, and every visit's own CI looked fine) are ranked by noise; the summary says so, and says how well the
    rounds agree when they do."""
    from harness.campaign import round_agreement
    from harness.cli.measure import print_visit_notes

    archs = SPACE.sample(12, 5)
    by_digest, _ = true_latencies(cache, archs, spread=spread, seed=1)
    prof = lab_profile(warmup_runs=1, timed_runs=20, rounds=2)
    lab = LabDevice(prof, Physics(noise=0.01, session_sd=0.04), true_ms=by_digest)
    with Store(store_path) as st:
        s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
    r, n = round_agreement(s)
    assert n == 12 and ((r < 0.9) if noted == "rankings unreliable" else (r > 0.95))
    print_visit_notes(s)
    out = " ".join(capsys.readouterr().out.split())
    assert noted in out
    # the lab device is no GPU: no CUDA-graph advice (it was given to CPUs too); a GPU runtime's own switch is named
    assert "cuda_graph" not in out and s.cuda_graph_setting is None
    if noted == "rankings unreliable":
        s.cuda_graph_setting = parse_profile({"name": "g", "connection": {"kind": "local"}, "runtime": {
            "name": "onnxruntime", "execution_provider": "TensorrtExecutionProvider"}}, "g").runtime.cuda_graph_setting
        print_visit_notes(s)
        assert "trt_cuda_graph_enable: '1'" in " ".join(capsys.readouterr().out.split())


def test_too_few_architectures_visited_twice_for_a_noise_floor_is_said(cache, store_path, capsys):
    """Below 8 architectures visited twice the summary gave no rounds line at all, as if all were well."""
    from harness.campaign import round_agreement
    from harness.cli.measure import print_visit_notes

    archs = SPACE.sample(4, 5)
    prof = lab_profile(warmup_runs=1, timed_runs=10, rounds=2)
    lab = LabDevice(prof, Physics(noise=0.01))
    with Store(store_path) as st:
        s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
    assert round_agreement(s) is None
    print_visit_notes(s)
    assert "4 architectures were visited more than once here, too few" in " ".join(capsys.readouterr().out.split())


def test_a_paired_reference_cancels_the_speed_its_pair_shares(cache, store_path, capsys):
    """Each visit at its own speed, the reference timed right before each run at the same speed: the stored
    latency (median / reference median) cancels it, and so do the summary's checks, which compare visits as
    stored: no "visits disagree", the rounds agree."""
    from harness.campaign import round_agreement, visit_disagreement

    archs = SPACE.sample(10, 4)
    by_digest, _ = true_latencies(cache, archs, spread=(1.0, 1.3), seed=2)
    results = {}
    for reference in ("none", "auto"):
        prof = lab_profile(warmup_runs=1, timed_runs=20, rounds=2, reference=reference)
        lab = LabDevice(prof, Physics(noise=0.01, session_sd=0.15), true_ms=dict(by_digest))
        with Store(store_path.with_name(f"{reference}.db")) as st:
            s = run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
        results[reference] = (visit_disagreement(s), round_agreement(s)[0])
    assert results["none"][0] is not None and results["none"][1] < 0.9
    assert results["auto"][0] is None and results["auto"][1] > 0.95


# --- devices check: what endangers stable timing ----------------------------------------------

def test_stability_warnings_name_what_endangers_timing():
    from harness.measure.stability import warnings

    quiet = {"kind": "local", "governors": {"cpu0": "performance"}, "turbo": False, "cpu_count": 4,
             "loadavg_1m": 0.1, "busy_processes": [], "steal_share": 0.0, "isolated_cpus": "3"}
    assert warnings(quiet) == []
    noisy = {**quiet, "governors": {"cpu0": "schedutil"}, "turbo": True, "loadavg_1m": 3.5,
             "busy_processes": [{"pid": 42, "name": "hog", "cpu_share": 0.97}], "steal_share": 0.1}
    text = "\n".join(warnings(noisy))
    for part in ("schedutil, not performance", "turbo", "load average 3.50", "process 42 (hog) is using 97%",
                 "steals 10%"):
        assert part in text
    phone = {"kind": "adb", "battery_level": 12, "battery_temp_c": 41.0, "charging": True, "screen_on": True,
             "thermal_status": 2}
    assert len(warnings(phone)) == 5
    assert "cpupower" in text  # a PC's tool for a PC; a phone is told how a rooted phone sets it
    on_phone = " ".join(warnings({**phone, "governors": {"cpu0": "schedutil"}}))
    assert "cpupower" not in on_phone and "adb shell su -c" in on_phone and "unrooted phones cannot" in on_phone


def test_dumpsys_parsers():
    from harness.measure.stability import parse_dumpsys_battery, parse_dumpsys_power, parse_dumpsys_thermal

    battery = "Current Battery Service state:\n  AC powered: false\n  USB powered: true\n  level: 87\n  temperature: 312\n"
    assert parse_dumpsys_battery(battery) == {"battery_level": 87, "battery_temp_c": 31.2, "charging": True}
    assert parse_dumpsys_power("  Display Power: state=OFF\n") == {"screen_on": False}
    assert parse_dumpsys_power("mWakefulness=Awake") == {"screen_on": True}
    assert parse_dumpsys_thermal("IsStatusOverride: false\nThermal Status: 0\n") == {"thermal_status": 0}
    assert parse_dumpsys_battery("garbage") == {}


def test_devices_check_reports_stability_of_the_local_machine(cli_env):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "harness", "devices", "check", "fast-onnx"], env=cli_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "stability:" in out.stdout


# --- rank confidence --------------------------------------------------------------------------

def _two_lab_devices(store_path, cache, noisy_sd):
    archs = SPACE.sample(12, 9)
    by_digest, by_key = true_latencies(cache, archs, spread=(1.0, 3.0))
    with Store(store_path) as st:
        for name, sd, seed in (("lab-a", 0.003, 1), ("lab-b", noisy_sd, 2)):
            prof = lab_profile(warmup_runs=1, timed_runs=15, rounds=2).model_copy(update={"name": name})
            lab = LabDevice(prof, Physics(noise=sd), true_ms=by_digest, seed=seed)
            run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
    return by_key


def test_noise_draws_give_model_cis_that_cover_the_truth_and_widen_with_noise(cache, store_path):
    from harness.measure.confidence import model_ci, noise_draws

    by_key = _two_lab_devices(store_path, cache, noisy_sd=0.08)
    with Store(store_path) as st:
        quiet = model_ci(noise_draws(st, "nb201", "lab-a", 300))
        noisy = model_ci(noise_draws(st, "nb201", "lab-b", 300))
    width = lambda c: ((c.ci_high_ms - c.ci_low_ms) / c.ci_low_ms).median()  # noqa: E731
    assert width(noisy) > 5 * width(quiet)
    covered = sum(noisy.ci_low_ms[k] <= by_key[k] <= noisy.ci_high_ms[k] for k in noisy.index)
    assert covered >= 10  # of 12, at 95 %


def test_srcc_ci_compare_and_export_columns_on_the_cli(cache, store_path, cli_env, tmp_path):
    import subprocess
    import sys

    _two_lab_devices(store_path, cache, noisy_sd=0.3)
    run = lambda *a: subprocess.run([sys.executable, "-m", "harness", *a], env=cli_env, capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    out = run("srcc", "--ci", "100", "--json")
    assert out.returncode == 0, out.stderr
    pair = json.loads(out.stdout)[0]
    assert pair["noise_resampled"] == "lab-a, lab-b" and pair["ci_low"] < pair["srcc"] <= pair["ci_high"] + 1e-9
    out = run("compare", "lab-a", "lab-b", "--ci", "100")
    assert out.returncode == 0, out.stderr
    assert "cannot tell apart" in out.stdout and "within measurement noise" in out.stdout
    out = run("export", "-o", str(tmp_path / "t.csv"), "--ci", "50")
    assert out.returncode == 0, out.stderr
    import pandas as pd

    df = pd.read_csv(tmp_path / "t.csv")
    assert {"lab-a_ci_low_ms", "lab-b_ci_high_ms"} <= set(df.columns)
    assert (df["lab-b_ci_low_ms"] <= df["lab-b_ms"]).all() and (df["lab-b_ms"] <= df["lab-b_ci_high_ms"]).all()


def test_compare_does_not_call_flips_of_imported_tables_real_and_refuses_devices_with_nothing_in_common(
        cli_env, tmp_path):
    """Imported tables keep no runs: every flip was "real" (0 within noise). Two devices without a common
    architecture printed "0 of 0 pairs" with exit 0."""
    from tests.conftest import harness

    (tmp_path / "t.csv").write_text("nb201_index,a_ms,b_ms,c_ms\n1,1,2,\n2,2,1,\n3,3,3,\n4,4,5,\n5,,,1\n")
    harness("import", str(tmp_path / "t.csv"), env=cli_env)
    out = " ".join(harness("compare", "a", "b", env=cli_env).stdout.split())
    assert "1 pairs ordered differently; how many the noise of a and b explains is unknown" in out
    assert "only 4 architectures in common" in out  # srcc and proxy mask such pairs; compare said nothing
    assert "real disagreements" not in out
    none = harness("compare", "a", "c", env=cli_env, check=False)
    assert none.returncode != 0 and "no nb201 architecture in common" in " ".join(none.stderr.split())


def test_compare_and_proxy_name_a_constant_device_instead_of_nan_or_too_few_architectures(cli_env, tmp_path):
    from tests.conftest import harness

    rows = "\n".join(f"{i},{i},2.0" for i in range(1, 41))
    (tmp_path / "t.csv").write_text(f"nb201_index,ra_ms,flat_ms\n{rows}\n")
    harness("import", str(tmp_path / "t.csv"), env=cli_env)
    r = harness("compare", "flat", "ra", env=cli_env)
    out = " ".join(r.stdout.split())
    assert "no SRCC: flat's latencies are all equal on the 40 common architecture(s)" in out and "nan" not in out
    assert "RuntimeWarning" not in r.stderr
    p = harness("proxy", "--target", "flat", env=cli_env, check=False)
    said = " ".join(p.stderr.split())
    assert p.returncode != 0 and "although they share up to 40" in said and "all equal" in said


def test_drift_correct_without_sentinel_devices_says_it_added_nothing(cli_env, tmp_path):
    (tmp_path / "t.csv").write_text("nb201_index,a_ms\n1,1\n2,2\n3,3\n")
    harness("import", str(tmp_path / "t.csv"), env=cli_env)
    r = harness("export", "-o", str(tmp_path / "o.csv"), "--drift-correct", env=cli_env)
    assert "added no column" in " ".join(r.stderr.split())
    assert "a_drift_corrected_ms" not in (tmp_path / "o.csv").read_text()
    r = harness("export", "-o", str(tmp_path / "o.csv"), "--ci", "50", env=cli_env)  # it said nothing
    assert "--ci added no column" in " ".join(r.stderr.split())


def test_measure_rounds_flag_interleaves_and_reports(cli_env):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "harness", "measure", "-d", "fast-onnx", "--sample", "3",
                          "--rounds", "2"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "6 measured" in out.stdout and "timed runs" in out.stdout
    assert "(2 interleaved visits to each of 3 architecture(s))" in " ".join(out.stdout.split())  # 6 for 3 is no bug
    with Store(cli_env["HARNESS_STORE"]) as st:
        v = st.visits("nb201", "fast-onnx")
        assert sorted(v["round"].tolist()) == [1, 1, 1, 2, 2, 2]
    bad = subprocess.run([sys.executable, "-m", "harness", "measure", "-d", "fast-onnx", "--sample", "3",
                          "--rounds", "0"], env=cli_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--rounds" in bad.stderr


def test_degenerate_models_are_counted_once_per_architecture_not_per_visit(cli_env):
    # 11759's output ignores its input (nothing reaches node 3 but through 'none'); 0 is a real network
    out = harness("measure", "-d", "fast-onnx", "--arch", "11759,0", "--rounds", "3", env=cli_env)
    flat = " ".join(out.stdout.split())
    assert "6 measured" in flat and "1 degenerate model(s)" in flat, flat


def _throttling_campaign_with_sentinels(cache, store_path, archs, timed_runs: int, throttle_after_s: float) -> dict:
    """A lab device that slows 25 % after ``throttle_after_s`` of load and never recovers, measured with 2
    sentinels every 5 models that only mark; returns the true latency by architecture key."""
    by_digest, by_key = true_latencies(cache, archs, spread=(20, 40))
    prof = lab_profile(warmup_runs=2, timed_runs=timed_runs, sentinels={"count": 2, "every": 5, "on_drift": "mark"})
    lab = LabDevice(prof, Physics(noise=0.002, throttle=0.25, throttle_after_s=throttle_after_s, cool_ratio=0.0),
                    true_ms=by_digest)
    with Store(store_path) as st:
        run_campaign(st, prof, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
    return by_key


def test_drift_correction_in_export_uses_the_sentinel_series(cache, store_path):
    import numpy as np

    from harness.measure.sentinels import corrected_latencies

    by_key = _throttling_campaign_with_sentinels(cache, store_path, SPACE.sample(30, 10), timed_runs=20,
                                                 throttle_after_s=6)
    with Store(store_path) as st:
        raw = st.latencies("nb201", ["lab"]).set_index("key").latency_ms
        fixed = corrected_latencies(st, "nb201", "lab")
    err = lambda s: np.median([abs(s[k] / by_key[k] - 1) for k in s.index])  # noqa: E731
    assert err(raw) > 0.15  # most models were measured throttled
    assert err(fixed) < 0.03


def test_sentinel_checks_belong_to_the_workload_series_their_campaign_measured(cache, store_path):
    """A batch-2 campaign's checks were filed under the plain device: `export --drift-correct` divided them out of
    the default series and found none for dev@bs2 ("no device here was measured with sentinels")."""
    from harness.measure.sentinels import corrected_latencies

    archs = SPACE.sample(12, 4)
    prof = lab_profile(warmup_runs=1, timed_runs=5, sentinels={"count": 2, "every": 5, "on_drift": "mark"})
    with Store(store_path) as st:
        for p in (prof, prof.with_workload(batch_size=2)):
            lab = LabDevice(p, Physics(noise=0.002))
            run_campaign(st, p, SPACE, archs, cache=cache, driver=lab, clock=lab.clock)
        both = st.sentinel_series()
        assert set(both.device) == {"lab", "lab@bs2"}
        for series in ("lab", "lab@bs2"):
            mine = st.sentinel_series(series)
            assert len(mine) and set(mine.campaign_id) == set(both[both.device == series].campaign_id)
            assert len(corrected_latencies(st, "nb201", series)) == 12


# --- the farm (several devices): one visit per architecture; rounds/sentinels/gating refused ------

def _sleep_profile(name: str, **policy):
    return parse_profile({"name": name, "connection": {"kind": "sleep", "latency_ms": 5.0},
                          "runtime": {"name": "onnxruntime"},
                          "policy": {"warmup_runs": 0, "timeout_seconds": 30,
                                     "adaptive": {"min_runs": 6, "max_runs": 8}, **policy}}, "test profile")


def test_farm_measures_one_visit_each_and_judges_it(store_path, cache_dir):
    from harness.farm.engine import run_farm
    from harness.farm.local import local_lanes
    from harness.farm.plan import make_plan

    archs = SPACE.sample(3, 5)
    profiles = [_sleep_profile("f0"), _sleep_profile("f1")]
    assert profiles[0].policy.rounds == 3  # the default, which the farm measures as one visit
    with Store(store_path) as st:
        plan = make_plan(st, profiles, SPACE, archs, "each")
        run_farm(st, plan, local_lanes(plan, ModelCache(cache_dir)))
        m = st.measurements()
        assert len(m[m.status == "ok"]) == 6
        v = st.visits(SPACE.name)
        assert set(v["rounds"]) == {1} and set(v["round"]) == {1}
        assert v["n_used"].notna().all() and v["ci_low_ms"].notna().all()
        assert len(st.latencies(SPACE.name)) == 6
        again = make_plan(st, profiles, SPACE, archs, "each")  # resume: nothing left
        assert all(not q.todo for q in again.queues.values())


@pytest.mark.parametrize("policy, field", [({"rounds": 5}, "policy.rounds"),
                                           ({"sentinels": {"count": 1}}, "policy.sentinels"),
                                           ({"gate": {"max_loadavg": 4.0}}, "policy.gate")])
def test_farm_refuses_rounds_sentinels_and_gating_by_name(store_path, policy, field):
    from harness.farm.plan import make_plan

    with Store(store_path) as st, pytest.raises(ProfileError, match=field):
        make_plan(st, [_sleep_profile("f0", **policy), _sleep_profile("f1")], SPACE, SPACE.sample(2, 0), "each")


def test_report_draws_the_sentinel_series_with_the_out_of_band_checks(cache, store_path, tmp_path):
    from harness.analysis.api import report

    _throttling_campaign_with_sentinels(cache, store_path, SPACE.sample(20, 6), timed_runs=10, throttle_after_s=3)
    with Store(store_path) as st:
        assert (st.sentinel_series("lab").in_band == 0).any()
    out = report(store_path, tmp_path / "r.html", png_dir=tmp_path / "png")
    text = out.read_text()
    assert "Sentinel series per device" in text and "out of band (red circles)" in text
    assert "fewer than two devices" in text  # one device: no empty heat map
    assert (tmp_path / "png" / "sentinel_series.png").stat().st_size > 1000


def test_a_sentinel_baseline_timed_under_load_widens_the_band_of_its_later_checks():
    from harness.measure.sentinels import Monitor

    m = Monitor(0.05)
    m.check("a", 10.0, 0.31)  # the baseline: +-31 % (a busy machine)
    later = m.check("a", 8.3, 0.01)  # a steady check 17 % off that uncertain baseline
    assert later.in_band and later.effective_band == pytest.approx(0.62)
    m.check("b", 10.0, 0.01)
    assert not m.check("b", 8.3, 0.01).in_band  # a steady baseline: the profile's band judges


def test_sentinels_are_never_networks_with_a_constant_output():
    """A constant-output network runs in microseconds, where timer jitter is +-100 %: picked as the cheapest
    sentinel, it left its band at every check and paused the campaign (seen with --sample 6 --seed 50)."""
    from harness.measure import sentinels
    from harness.measure.policy import Sentinels
    from harness.models.passes import is_degenerate, prepare

    constant = SPACE.parse_many(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "11759"])
    archs = constant + SPACE.sample(9, 4)
    picked = sentinels.choose(SPACE, archs, Sentinels(count=3))
    assert len(picked) == 3 and not any(is_degenerate(prepare(SPACE.build(a), "prune")) for a in picked)
    assert not set(a.key for a in picked) & {a.key for a in constant}


def test_compare_counts_every_pair_as_the_plain_double_loop_does():
    """compare went from a Python double loop (minutes and 6.5 GB for NB201's 15,625 architectures) to numpy
    blocks: the counts and the listed disagreements must be exactly what the plain definition gives."""
    from harness.measure import confidence

    rng = np.random.default_rng(3)
    n = 200
    keys = [f"k{i}" for i in range(n)]
    a = rng.lognormal(0, 0.5, n)
    b = a * rng.lognormal(0, 0.3, n)
    b[::7] = a[::7]  # ties in the order too
    wide = pd.DataFrame({"a": a, "b": b}, index=keys)
    lo = a * rng.uniform(0.9, 0.99, n)
    hi = a * rng.uniform(1.01, 1.1, n)
    lo[::11] = hi[::11] = np.nan  # models without a CI are never blurred
    ci = {"a": pd.DataFrame({"ci_low_ms": lo, "ci_high_ms": hi}, index=keys)}
    lo_, hi_, a_, b_ = lo.tolist(), hi.tolist(), a.tolist(), b.tolist()  # plain floats: the loop stays fast
    flips = noisy = overlapping = 0
    real = []
    for i in range(n):
        for j in range(i + 1, n):
            overlap = lo_[i] <= hi_[j] and lo_[j] <= hi_[i]  # False with a NaN
            overlapping += overlap
            if (a_[i] - a_[j]) * (b_[i] - b_[j]) < 0:
                flips += 1
                if overlap:
                    noisy += 1
                else:
                    real.append(abs(np.log(a_[i] / a_[j])) + abs(np.log(b_[i] / b_[j])))
    monkey_block = confidence.PAIR_BLOCK
    try:
        confidence.PAIR_BLOCK = 1000  # several blocks, so the block seams are crossed
        r = confidence.compare(wide, "a", "b", ci, top=5)
    finally:
        confidence.PAIR_BLOCK = monkey_block
    assert (r["flipped"], r["flipped_within_noise"], r["real"]) == (flips, noisy, len(real))
    assert r["indistinguishable"] == {"a": overlapping}
    assert [round(g, 9) for g, *_ in r["real_disagreements"]] == [round(g, 9) for g in sorted(real, reverse=True)[:5]]


def test_the_farm_skips_what_a_single_device_campaign_measured_in_rounds(store_path, cache_dir):
    """`measure -d a,b --sample 5` after `measure -d a --sample 50` measured the 5 again (a 1-visit plan did not
    count the 3-round visits) and export then took the new single visits."""
    from harness.farm.plan import make_plan

    archs = SPACE.sample(3, 5)
    alone, other = _sleep_profile("f0"), _sleep_profile("f1")
    with Store(store_path) as st:
        assert run_campaign(st, alone, SPACE, archs, cache=ModelCache(cache_dir)).ok == 9  # 3 rounds each
        plan = make_plan(st, [alone, other], SPACE, archs, "each")
        assert not plan.queues[plan.queue_of["f0"]].todo and len(plan.queues[plan.queue_of["f1"]].todo) == 3


def test_a_pairs_noise_interval_does_not_depend_on_the_other_devices_listed():
    from harness.measure.confidence import srcc_with_noise

    rng = np.random.default_rng(3)
    keys = [f"k{i}" for i in range(20)]
    base = rng.lognormal(0, 0.5, 20)
    wide = pd.DataFrame({"a": base, "b": base * rng.lognormal(0, 0.2, 20), "c": rng.lognormal(0, 0.5, 20)},
                        index=keys)
    noise = {d: pd.DataFrame(np.outer(wide[d], rng.lognormal(0, 0.05, 50)), index=keys) for d in wide}
    alone = srcc_with_noise(wide[["a", "b"]], noise, 50, seed=1).iloc[0]
    beside = srcc_with_noise(wide[["a", "c", "b"]], noise, 50, seed=1)
    pair = beside[(beside.device_a == "a") & (beside.device_b == "b")].iloc[0]
    assert (alone.ci_low, alone.ci_high) == (pair.ci_low, pair.ci_high)


def test_srcc_ci_names_a_pair_whose_resamples_were_mostly_undefined(cli_env, tmp_path):
    """99 equal values and one other: 39 % of the draws had no SRCC and the interval silently covered the rest."""
    import re

    from tests.conftest import harness

    rows = "\n".join(f"{i},{i},{5.0 if i == 7 else 2.0}" for i in range(1, 101))
    (tmp_path / "t.csv").write_text(f"nb201_index,ra_ms,onediff_ms\n{rows}\n")
    harness("import", str(tmp_path / "t.csv"), env=cli_env)
    out = " ".join(harness("srcc", "--ci", "200", env={**cli_env, "COLUMNS": "200"}).stdout.split())
    m = re.search(r"ra vs onediff: (\d+)% of the resamples had no value", out) or re.search(
        r"onediff vs ra: (\d+)% of the resamples had no value", out)
    assert m and 25 <= int(m.group(1)) <= 50, out[-600:]


def test_short_visits_are_judged_on_pooled_neighbour_counters_not_one_tick():
    """/proc/stat counts in 10 ms ticks: a 10 ms visit read 0 or 1 tick, so a busy neighbour went unmarked in about
    half the visits and a quiet machine read '112 % of the CPUs' in 5-9 % of them (walk L)."""
    import re

    from harness.campaign import _recent, judge
    from harness.devices.driver import RunResult
    from harness.devices.profile import Policy

    pol = Policy()

    def visit(others: float) -> RunResult:
        return RunResult([1.0, 1.1, 1.0], neighbours={"wall_s": 0.01, "others_cpu_s": others, "steal_s": 0.0,
                                                      "cpus": 2})

    _recent.pop("quiet", None), _recent.pop("busy", None)
    quiet = [judge(visit(0.03 if i % 25 == 24 else 0.0), pol, "quiet")[1] for i in range(100)]
    assert not any(quiet)  # one stray tick in a short visit is no neighbour
    assert judge(visit(0.03), pol)[1] == "other processes used 100% of the CPUs"  # unpooled: one tick, capped
    rng = np.random.default_rng(0)  # 1.6 of 2 CPUs busy: each 10 ms visit reads 1 or 2 ticks of 10 ms
    busy = [judge(visit(0.01 * (1 + (rng.random() < 0.6))), pol, "busy")[1] for i in range(100)]
    assert all(busy[60:]) and re.search(r"other processes used (7[5-9]|8\d)% of the CPUs", busy[-1])
