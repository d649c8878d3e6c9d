"""Predictors, AdaProxy and our transfer, sample selection and Pareto validation."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from harness.analysis import pareto, sampling, workflow
from harness.analysis.ridge import fit_ridge
from harness.analysis.transfer import TransferError, fit_adaproxy, fit_linear, fit_multiproxy, model_from_json
from harness.errors import HarnessError
from harness.models.spaces import get_space
from harness.results.importer import import_table
from harness.results.store import Store
from tests.conftest import harness

SPACE = get_space("nb201")


def test_ridge_loo_error_matches_brute_force():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(15, 4))
    y = f @ [1.0, -2.0, 0.5, 0.0] + rng.normal(0, 0.3, 15)
    fit = fit_ridge(f, y, lambdas=np.array([0.7]))
    brute = []
    for i in range(15):
        keep = np.arange(15) != i
        sub = fit_ridge(f[keep], y[keep], lambdas=np.array([0.7]))
        # same standardisation as the full fit for an exact comparison is not available; compare loosely
        brute.append((sub.predict(f[i:i + 1])[0] - y[i]) ** 2)
    assert fit.loo_mse == pytest.approx(np.mean(brute), rel=0.25)


def synthetic_devices(n=600, seed=0):
    rng = np.random.default_rng(seed)
    archs = SPACE.sample(n, seed)
    x = np.stack([SPACE.encode(a) for a in archs]).astype(float)
    cost = x @ rng.uniform(0.1, 2.0, x.shape[1])
    return archs, x, {
        "a": np.exp(0.1 * cost) * rng.lognormal(0, 0.02, n),
        "b": cost ** 2 + 1 + rng.normal(0, 0.05, n),   # same ranking as a, different scale
        "c": rng.lognormal(0, 1, n),                      # unrelated
    }


def test_multiproxy_picks_the_related_source_and_ranks_well():
    archs, x, dev = synthetic_devices()
    target = 3.0 * dev["b"] ** 0.8
    pick = np.arange(20)
    sources = np.stack([dev["a"], dev["c"]], axis=1)
    model = fit_multiproxy(sources[pick], x[pick], target[pick], ["a", "c"])
    assert model.sources[0] == "a" and model.candidates["a"] > model.candidates["c"]
    cols = [["a", "c"].index(s) for s in model.sources]
    pred = model.predict(sources[20:][:, cols], x[20:])
    assert spearmanr(pred, target[20:]).statistic > 0.95
    again = model_from_json(json.loads(json.dumps(model.to_json())))
    np.testing.assert_allclose(again.predict(sources[20:][:, cols], x[20:]), pred)


def test_ridge_column_weights_penalise_that_column_more():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(20, 3))
    y = f @ [1.0, 1.0, 1.0] + rng.normal(0, 0.1, 20)
    lam = np.array([5.0])
    plain = fit_ridge(f, y, lambdas=lam)
    light = fit_ridge(f, y, lambdas=lam, weights=np.array([1.0, 1.0, 0.1]))
    dropped = fit_ridge(f, y, lambdas=lam, weights=np.array([1.0, 1.0, 0.0]))
    # the effect on the raw-scale coefficient: coef / scale
    raw = [m.coef / m.scale for m in (plain, light, dropped)]
    assert abs(raw[1][2]) < 0.2 * abs(raw[0][2]) and raw[2][2] == 0.0
    np.testing.assert_allclose(dropped.predict(f), fit_ridge(f[:, :2], y, lambdas=lam).predict(f[:, :2]))
    with pytest.raises(ValueError, match="weights"):
        fit_ridge(f, y, weights=np.array([1.0, -1.0, 1.0]))


def test_multiproxy_source_weights_are_never_negative():
    """Two near-copies of the target's driver plus their difference: an unconstrained fit plays them off
    against each other; ours keeps every source weight >= 0."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=40)
    a = base + rng.normal(0, 0.05, 40)
    b = base + rng.normal(0, 0.05, 40)
    y = base + 0.8 * (a - b) + rng.normal(0, 0.02, 40)
    src = np.exp(np.stack([a, b], axis=1))
    assert (fit_ridge(np.log(src), y).coef < 0).any()  # the unconstrained fit does use a negative weight
    x = np.zeros((40, 1))
    model = fit_multiproxy(src, x, np.exp(y), ["a", "b"])
    for part in model.parts:
        assert (part.fit.coef[:len(part.sources)] >= 0).all()
    assert sum(p.share for p in model.parts) + model.structure_share == pytest.approx(1.0)


def test_multiproxy_ensembles_and_blends_with_the_structure_model():
    archs, x, dev = synthetic_devices()
    target = 3.0 * dev["b"] ** 0.8
    sources = np.stack([dev["a"], dev["c"]], axis=1)
    structure = np.hstack([x, np.log1p(x.sum(axis=1, keepdims=True))])
    model = fit_multiproxy(sources[:20], x[:20], target[:20], ["a", "c"], structure=structure[:20])
    assert len(model.parts) == 3 and model.structure_fit is not None and 0 < model.structure_share < 1
    # one view: no "both" candidates; the structure features hold the one-hot, so no one-hot-only correction
    assert {p.correction for p in model.parts} == {"structure"}
    assert model.both_fit is None and model.both_share == 0
    cols = [["a", "c"].index(s) for s in model.sources]
    pred = model.predict(sources[20:][:, cols], x[20:], structure[20:])
    assert spearmanr(pred, target[20:]).statistic > 0.95
    again = model_from_json(json.loads(json.dumps(model.to_json())))
    np.testing.assert_allclose(again.predict(sources[20:][:, cols], x[20:], structure[20:]), pred)
    with pytest.raises(TransferError, match="structure features"):
        model.predict(sources[20:][:, cols], x[20:])


def _dead_code_target():
    """NB201 archs: the source runs dead convolutions (cost on every operation, live or not), the target prunes
    them. The plain view (one-hot) cannot tell a dead conv from a live one; the second view (live-edges-only
    one-hot) can."""
    from harness.analysis.features import live_onehot

    rng = np.random.default_rng(5)
    archs = SPACE.sample(400, 1)
    x = np.stack([SPACE.encode(a) for a in archs]).astype(float)
    live = live_onehot(SPACE, archs)
    costs = rng.uniform(0.2, 1.0, x.shape[1])
    src = np.exp(0.3 * x @ costs + rng.normal(0, 0.01, len(archs)))[:, None]
    target = np.exp(0.3 * live @ costs + rng.normal(0, 0.01, len(archs)))
    plain = np.hstack([x, np.log1p(x.sum(axis=1, keepdims=True))])
    second = np.hstack([live, np.log1p(live.sum(axis=1, keepdims=True))])
    return x, src, target, plain, second


def test_multiproxy_with_two_views_uses_the_one_the_target_follows():
    """A target that prunes dead code a source runs: with both views the ensemble reads the second one and
    ranks better than on the plain view alone; the saved model predicts the same after a JSON round trip."""
    x, src, target, plain, second = _dead_code_target()
    both = np.hstack([plain, second])
    k = 50  # enough samples for the dead-code difference to show in leave-one-out error
    one = fit_multiproxy(src[:k], x[:k], target[:k], ["s"], structure=plain[:k])
    two = fit_multiproxy(src[:k], x[:k], target[:k], ["s"], structure=both[:k], plain_width=plain.shape[1])
    assert one.plain_width is None and one.both_fit is None
    assert two.plain_width == plain.shape[1] and two.both_fit is not None
    assert sum(p.share for p in two.parts) + two.structure_share + two.both_share == pytest.approx(1.0)
    assert two.both_share > two.structure_share or any(p.correction == "both" for p in two.parts)
    srcc_one = spearmanr(one.predict(src[k:], x[k:], plain[k:]), target[k:]).statistic
    pred = two.predict(src[k:], x[k:], both[k:])
    assert spearmanr(pred, target[k:]).statistic > srcc_one + 0.03
    again = model_from_json(json.loads(json.dumps(two.to_json())))
    np.testing.assert_allclose(again.predict(src[k:], x[k:], both[k:]), pred)
    with pytest.raises(TransferError, match="structure columns"):
        two.predict(src[k:], x[k:], plain[k:, :5])


def _count_driven_target(n: int = 300):
    """NB201 archs on a device whose cost is per kernel: log-latency linear in how many operators the pruned
    graph runs, not in which edge holds which operation. A source that follows the one-hot instead."""
    from harness.analysis.features import GraphFeatures, graph_columns

    rng = np.random.default_rng(11)
    archs = SPACE.sample(n, 2)
    x = np.stack([SPACE.encode(a) for a in archs]).astype(float)
    gf = GraphFeatures(SPACE, None)
    g = gf.matrix(archs, gf.vocabulary(archs))
    kernels = np.expm1(g[:, gf.vocabulary(archs).index("nodes")])
    target = np.exp(0.05 * kernels + rng.normal(0, 0.01, n))
    src = np.exp(0.3 * x @ rng.uniform(0.2, 1.0, x.shape[1]))[:, None]
    structure = np.hstack([x, g])
    return x, src, target, structure, graph_columns(x.shape[1], g.shape[1])


def test_multiproxy_own_graph_feature_model_ranks_a_per_kernel_device():
    """A device whose cost is per kernel: 20 samples pin down the ~20 graph features better than one-hot +
    graph, so the own graph-feature model takes a share and the ensemble ranks the rest better than without it;
    shares sum to 1, a JSON round trip predicts the same, columns out of range are a TransferError."""
    x, src, target, structure, gcols = _count_driven_target()
    k = 20
    without = fit_multiproxy(src[:k], x[:k], target[:k], ["s"], structure=structure[:k])
    model = fit_multiproxy(src[:k], x[:k], target[:k], ["s"], structure=structure[:k], graph_cols=gcols)
    assert [(g.start, g.stop) for g in model.graph_parts] == gcols and model.graph_parts[0].share > 0.2
    shares = sum(p.share for p in model.parts) + model.structure_share + model.both_share
    assert shares + sum(g.share for g in model.graph_parts) == pytest.approx(1.0)
    assert model.blend == pytest.approx(sum(p.share for p in model.parts))
    pred = model.predict(src[k:], x[k:], structure[k:])
    srcc = spearmanr(pred, target[k:]).statistic
    assert srcc > spearmanr(without.predict(src[k:], x[k:], structure[k:]), target[k:]).statistic + 0.015
    again = model_from_json(json.loads(json.dumps(model.to_json())))
    np.testing.assert_allclose(again.predict(src[k:], x[k:], structure[k:]), pred)
    with pytest.raises(TransferError, match="structure columns"):
        model.graph_parts[0].predict_log(structure[k:, :5])
    with pytest.raises(TransferError, match="outside the structure features"):
        fit_multiproxy(src[:k], x[:k], target[:k], ["s"], structure=structure[:k], graph_cols=[(0, 999)])


def test_graph_columns_place_both_graph_blocks():
    from harness.analysis.features import graph_columns

    assert graph_columns(30, 21) == [(30, 51)]
    assert graph_columns(30, 21, 19, 100) == [(30, 51), (81, 100)]  # [one-hot, graph, live one-hot, kept graph]
    assert graph_columns(12, 0) == []
    with pytest.raises(ValueError, match="width"):
        graph_columns(30, 21, 19)


def test_multiproxy_saved_as_version_3_still_predicts():
    """A version-3 predictor (two views, no graph-feature models) loads and predicts as before."""
    x, src, target, structure, _ = _count_driven_target()
    model = fit_multiproxy(src[:20], x[:20], target[:20], ["s"], structure=structure[:20])
    v3 = {**{k: v for k, v in model.to_json().items() if k != "graph_parts"}, "version": 3}
    old = model_from_json(json.loads(json.dumps(v3)))
    assert old.graph_parts == []
    np.testing.assert_allclose(old.predict(src[20:], x[20:], structure[20:]), model.predict(src[20:], x[20:], structure[20:]))


def test_multiproxy_saved_as_version_2_still_predicts():
    """A version-2 predictor (one structure view, no both-view model) loads and predicts as before."""
    x, src, target, plain, _ = _dead_code_target()
    model = fit_multiproxy(src[:30], x[:30], target[:30], ["s"], structure=plain[:30])
    d = model.to_json()
    v2 = {**{k: v for k, v in d.items() if k not in ("plain_width", "both_fit", "both_share")}, "version": 2}
    old = model_from_json(json.loads(json.dumps(v2)))
    assert old.plain_width is None and old.both_fit is None and old.blend == pytest.approx(model.blend)
    np.testing.assert_allclose(old.predict(src[30:], x[30:], plain[30:]), model.predict(src[30:], x[30:], plain[30:]))


def test_multiproxy_saved_before_version_2_still_predicts():
    """A version-1 predictor: ridge on [log sources, g * one-hot] blended with the structure model."""
    archs, x, dev = synthetic_devices()
    slog = np.log(np.stack([dev["a"]], axis=1))
    y = np.log(3.0 * dev["b"] ** 0.8)
    g = 0.3
    fit = fit_ridge(np.hstack([slog[:20], g * x[:20]]), y[:20])
    own = fit_ridge(x[:20], y[:20])
    old = {"kind": "multiproxy", "sources": ["a"], "onehot_weight": g, "fit": fit.to_json(), "candidates": {},
           "blend": 0.7, "structure_fit": own.to_json()}
    expected = np.exp(0.7 * fit.predict(np.hstack([slog[20:], g * x[20:]])) + 0.3 * own.predict(x[20:]))
    model = model_from_json(json.loads(json.dumps(old)))
    np.testing.assert_allclose(model.predict(np.exp(slog[20:]), x[20:], x[20:]), expected, rtol=1e-9)


def test_adaproxy_recovers_a_rescaled_proxy():
    archs, x, dev = synthetic_devices()
    proxy = x @ np.linspace(0.5, 2.0, x.shape[1])
    target = 2.0 * proxy + 1.0
    model = fit_adaproxy(x, proxy, x[:20], target[:20])
    pred = model.predict(x[20:])
    np.testing.assert_allclose(pred, target[20:], rtol=0.02)


def test_linear_predictor_learns_a_device():
    archs, x, dev = synthetic_devices()
    model = fit_linear(x[:400], dev["b"][:400])
    assert spearmanr(model.predict(x[400:]), dev["b"][400:]).statistic > 0.9


def test_too_few_target_samples_is_an_error():
    archs, x, dev = synthetic_devices()
    with pytest.raises(TransferError, match="at least 3"):
        fit_multiproxy(dev["a"][:2, None], x[:2], dev["b"][:2], ["a"])
    with pytest.raises(TransferError):
        fit_adaproxy(x, dev["a"], x[:2], dev["b"][:2])


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_sampling_strategies_pick_k_distinct(strategy):
    archs, x, dev = synthetic_devices()
    lat = np.log(dev["a"])
    picks = sampling.select(25, lat, x, strategy, seed=1)
    assert len(set(picks.tolist())) == 25 and picks.max() < len(lat)
    assert (sampling.select(25, lat, x, strategy, seed=1) == picks).all()
    if strategy == "stratified":  # one per latency decile-ish bin: spans the range
        ranks = np.argsort(np.argsort(lat))[picks]
        assert ranks.min() < 0.05 * len(lat) and ranks.max() > 0.95 * len(lat)


def test_diverse_seeds_are_different_draws_and_seed_0_starts_at_the_median():
    archs, x, dev = synthetic_devices()
    lat = np.log(dev["a"])
    draws = [frozenset(sampling.select(10, lat, x, "diverse", seed=s).tolist()) for s in range(5)]
    assert len(set(draws)) >= 4
    assert sampling.select(10, lat, x, "diverse", seed=0)[0] == int(np.argmin(np.abs(lat - lat.mean())))


def test_uncertain_sampling_goes_where_the_ensemble_disagrees_and_spreads_out():
    """Candidates 0-99 are confidently predicted, 100-199 not: every pick lands among the unsure ones, none is
    already measured, and the picks are spread (no two identical architectures) rather than the top spreads."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(200, 12)).astype(float)
    lat = rng.normal(size=200)
    x[150:], lat[150:] = x[100:150], lat[100:150]  # the unsure ones' second half repeats the first: never both
    spread = np.r_[np.full(100, 0.01), np.linspace(1.0, 2.0, 100)]
    measured = np.array([100, 3, 7])
    picks = sampling.select_uncertain(8, spread, lat, x, measured)
    assert len(set(picks.tolist())) == 8 and not set(picks.tolist()) & set(measured.tolist())
    assert (picks >= 100).all()
    assert len({tuple(x[i]) + (lat[i],) for i in picks}) == 8  # a duplicate's distance is 0 once one is picked
    assert not (set(picks.tolist()) >= set(np.argsort(-spread)[:8].tolist()))  # not merely the top spreads
    with pytest.raises(HarnessError, match="first measurements"):
        sampling.select_uncertain(2, spread, lat, x, np.array([], dtype=int))
    with pytest.raises(HarnessError, match="cannot pick 198 more"):
        sampling.select_uncertain(198, spread, lat, x, measured)


def test_sampling_errors():
    with pytest.raises(HarnessError, match="unknown sampling strategy"):
        sampling.select(2, np.zeros(5), np.zeros((5, 2)), "psychic")
    with pytest.raises(HarnessError, match="cannot pick 9"):
        sampling.select(9, np.zeros(5), np.zeros((5, 2)))


def test_pareto_mask_hypervolume_and_check():
    lat = np.array([1.0, 2.0, 3.0, 2.5, 4.0])
    acc = np.array([50.0, 60.0, 70.0, 55.0, 65.0])
    assert pareto.pareto_mask(lat, acc).tolist() == [True, True, True, False, False]
    # staircase (0.25,50) (0.5,60) (0.75,70) to ref (1, 50): 0.25*10 + 0.25*20 = 7.5
    assert pareto.hypervolume(lat / 4, acc, (1.0, 50.0)) == pytest.approx(7.5)
    same = pareto.check(lat * 3, lat, acc)
    assert same.recall == 1.0 and same.hv_ratio == pytest.approx(1.0) and same.regret_ms_max == 0.0
    flipped = pareto.check(lat[::-1].copy(), lat, acc)
    assert flipped.recall < 1.0 and flipped.hv_ratio < 1.0 and flipped.regret_ms_max > 0


@pytest.fixture
def public_like_store(store_path, tmp_path):
    """Two 'public' devices on 400 NB201 architectures with accuracy, and a target with 12 measurements."""
    rng = np.random.default_rng(3)
    archs = SPACE.sample(400, 7)
    x = np.stack([SPACE.encode(a) for a in archs]).astype(float)
    cost = x @ rng.uniform(0.1, 2.0, x.shape[1])
    table = pd.DataFrame({"nb201_index": [a.columns["nb201_index"] for a in archs],
                          "arch_str": [a.key for a in archs],
                          "pub_a_ms": np.exp(0.1 * cost), "pub_b_ms": rng.lognormal(0, 1, 400),
                          "acc_top1": 50 + 3 * cost + rng.normal(0, 2, 400)})
    table.to_csv(tmp_path / "public.csv", index=False)
    target = table.iloc[:12][["nb201_index", "arch_str"]].assign(new_dev_ms=2 * table.pub_a_ms[:12] ** 1.1)
    target.to_csv(tmp_path / "target.csv", index=False)
    with Store(store_path) as st:
        import_table(st, tmp_path / "public.csv")
    return tmp_path, table


@pytest.mark.slow
def test_cli_loop_suggest_adapt_predict_pareto(public_like_store, cli_env):
    folder, table = public_like_store
    picks = folder / "picks.csv"
    harness("suggest", "--space", "nb201", "--proxy", "pub_a", "--samples", "10", "--out", str(picks), env=cli_env)
    chosen = pd.read_csv(picks)
    assert len(chosen) == 10 and set(chosen.columns) == {"nb201_index", "arch_str"}
    # the target has no data yet: adapt must refuse, never fall back to the proxy
    refused = harness("adapt", "--proxy", "pub_a", "--target", "new_dev", env=cli_env, check=False)
    assert refused.returncode == 2 and "no nb201 measurements" in refused.stderr
    harness("import", str(folder / "target.csv"), env=cli_env)
    for method in ("multiproxy", "adaproxy", "target-only"):
        r = json.loads(harness("adapt", "--proxy", "pub_a", "--target", "new_dev", "--method", method,
                               "--json", env=cli_env).stdout)
        assert r["method"] == method and r["n_target_samples"] == 12
    r = json.loads(harness("adapt", "--proxy", "all", "--target", "new_dev", "--json", env=cli_env).stdout)
    assert set(r["proxies"]) == {"pub_a", "pub_b"} and r["sources_used"][0] == "pub_a"
    out = folder / "pred.csv"
    said = harness("predict", "--space", "nb201", "--device", "new_dev", "--out", str(out), env=cli_env).stdout
    assert "with the latest predictor #" in said and "adapted from" in " ".join(said.split())  # which one it used
    pred = pd.read_csv(out)
    assert len(pred) == 15625 and (pred.predicted_ms > 0).all()
    truth = pred.merge(table, on="nb201_index").iloc[12:]
    assert spearmanr(truth.predicted_ms, truth.pub_a_ms).statistic > 0.95
    ran = harness("pareto", "--proxy", "pub_a", "--target", "pub_b", "--accuracy", "acc_top1", "--what-if-k", "20",
                  "--adapt-proxy", "all", "--json", "--plot", str(folder / "p.html"), env=cli_env)
    check = json.loads(ran.stdout)
    assert set(check) >= {"proxy_front", "predicted_front"}
    # as search and suggest: the 12 constant-output networks of the 400 (fastest everywhere) sat on every front
    assert check["archs"] == 388 and "left out 12 networks with a constant output" in " ".join(ran.stderr.split())
    assert 0 <= check["proxy_front"]["recall"] <= 1 and check["proxy_front"]["hv_ratio"] > 0
    assert (folder / "p.html").read_text().count("data:image/png") == 1
    # a target measured on 12 with a predictor fitted on those 12: it printed a perfect score, as if validated
    partial = " ".join(harness("pareto", "--proxy", "pub_a", "--target", "new_dev", "--accuracy", "acc_top1",
                               env=cli_env).stdout.split())
    assert "partial: judged on the 12 architectures new_dev has latencies for (pub_a has 388)" in partial, partial
    assert "in-sample: the saved predictor was fitted on 12 of these 12 architectures" in partial


@pytest.mark.slow
def test_cli_bad_inputs(public_like_store, cli_env):
    bad_proxy = harness("adapt", "--proxy", "nope", "--target", "pub_b", env=cli_env, check=False)
    assert bad_proxy.returncode == 2 and "nope" in bad_proxy.stderr and "pub_a" in bad_proxy.stderr
    assert "(see --proxy/-p)" in bad_proxy.stderr
    too_many = harness("suggest", "--proxy", "pub_a", "--samples", "20000", env=cli_env, check=False)
    assert too_many.returncode == 2 and "more than" in too_many.stderr and "(see --samples)" in too_many.stderr
    no_pred = harness("predict", "--device", "pub_b", env=cli_env, check=False)
    assert no_pred.returncode == 2 and "harness train" in no_pred.stderr
    # a series with no data at all: training it is no fix (it said "run harness train --device pub_b@bs9")
    no_data = harness("predict", "--device", "pub_b@bs9", env=cli_env, check=False)
    flat = " ".join(no_data.stderr.split())
    assert no_data.returncode == 2 and "no nb201 latencies" in flat and "harness train" not in flat, flat
    bad_acc = harness("pareto", "--proxy", "pub_a", "--target", "pub_b", "--accuracy", "acc_x", env=cli_env,
                      check=False)
    assert bad_acc.returncode == 2 and "acc_top1" in bad_acc.stderr
    # a metadata column (OneProxy's row number) was taken as the accuracy and scored; search refused it
    rows = pd.read_csv(public_like_store[0] / "public.csv")[["nb201_index", "arch_str", "acc_top1"]].assign(table_row=range(400))
    rows.to_csv(public_like_store[0] / "meta.csv", index=False)
    harness("import", str(public_like_store[0] / "meta.csv"), env=cli_env)
    meta = harness("pareto", "--proxy", "pub_a", "--target", "pub_b", "--accuracy", "table_row", env=cli_env,
                   check=False)
    assert meta.returncode == 2 and "no accuracy column 'table_row'" in meta.stderr, meta.stderr
    own = harness("adapt", "--proxy", "pub_a", "--proxy", "pub_b", "--target", "pub_b", env=cli_env, check=False)
    assert own.returncode == 2 and "own proxy" in own.stderr
    few = harness("pareto", "--proxy", "pub_a", "--target", "pub_b", "--accuracy", "acc_top1", "--what-if-k", "2",
                  env=cli_env, check=False)
    assert few.returncode == 2 and "(see --what-if-k)" in " ".join(few.stderr.split())
    same = harness("pareto", "--proxy", "pub_b", "--target", "pub_b", "--accuracy", "acc_top1", env=cli_env,
                   check=False)  # was a ValueError traceback from np.lexsort
    assert same.returncode == 2 and "both 'pub_b'" in same.stderr and "Traceback" not in same.stderr
    itself = harness("pareto", "--proxy", "pub_a", "--target", "pub_b", "--accuracy", "acc_top1", "--what-if-k", "5",
                     "--adapt-proxy", "pub_b", env=cli_env, check=False)
    assert itself.returncode == 2 and "(see --adapt-proxy)" in " ".join(itself.stderr.split())


def test_trains_quality_is_over_enough_architectures_to_mean_something():
    """A 20 % hold-out of 20 measurements was 4 architectures: SRCC 1.0000 for a predictor that ranked the space
    at 0.89. Below 100 every architecture is predicted out of fold."""
    from harness.analysis.workflow import _holdout_srcc

    from scipy.stats import spearmanr

    from harness.analysis.transfer import fit_linear

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 6))
    y = np.exp(x @ rng.normal(size=6) * 0.3 + rng.normal(scale=0.3, size=1200))
    few, n, how = _holdout_srcc(x[:20], y[:20])
    assert (n, how) == (20, "5-fold cross-validation")
    in_sample = spearmanr(fit_linear(x[:20], y[:20]).predict(x[:20]), y[:20]).statistic
    assert 0.3 < few < in_sample  # out of fold: below what the fit says of its own data
    srcc, n, how = _holdout_srcc(x, y)
    assert (n, how) == (240, "20% hold-out") and srcc > 0.8
    assert _holdout_srcc(x[:9], y[:9]) == (None, 0, "")


def test_mistakes_are_named_by_the_flag_that_made_them(public_like_store, cli_env, tmp_path):
    """From a user walk: each of these named the wrong thing (--proxy for --adapt-proxy; "a space this harness
    does not have yet" for a typo; "nb201 has only pub_a" when nb201 had two; no flag for a count of 0)."""
    def said(*args):
        r = harness(*args, env=cli_env, check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        return " ".join((r.stdout + r.stderr).split())

    assert "(see --adapt-proxy)" in said("pareto", "--proxy", "pub_a", "--target", "pub_b", "--accuracy", "acc_top1",
                                         "--what-if-k", "5", "--adapt-proxy", "pub_x")
    assert "(see --what-if-k)" in said("pareto", "--proxy", "pub_a", "--target", "pub_b", "--accuracy", "acc_top1",
                                       "--what-if-k", "20000")
    typo = said("adapt", "--target", "pub_bb", "--proxy", "pub_a")
    assert "did you mean 'pub_b'" in typo and "measure --device pub_bb" not in typo  # not: measure the typo
    assert "--device selected only pub_a" in said("srcc", "--device", "pub_a")
    assert "--samples" in said("suggest", "--proxy", "pub_a", "--samples", "0")
    (tmp_path / "t.csv").write_text("nb201_index,x_ms\n1,1\n2,2\n")
    assert "did you mean 'nb201'" in said("import", "--space", "nb210", str(tmp_path / "t.csv"))
    (tmp_path / "eu.csv").write_text("nb201_index;x_ms\n1;1,5\n2;2,5\n")
    assert "separates columns with ;" in said("import", str(tmp_path / "eu.csv"))


def test_suggest_says_when_its_picks_rest_on_a_proxys_predicted_latencies(public_like_store, cli_env):
    r = harness("suggest", "--proxy", "pub_a", "--samples", "5", env=cli_env)
    said = " ".join((r.stdout + r.stderr).split())
    assert re.search(r"pub_a \(3\d\d\) has latencies measured for only these many", said), said[-400:]


@pytest.mark.slow
def test_train_then_predict(public_like_store, cli_env):
    r = json.loads(harness("train", "--device", "pub_a", "--json", env=cli_env).stdout)
    assert r["n_archs"] == 400 and r["holdout_srcc"] > 0.9
    pred = json.loads(harness("predict", "--device", "pub_a", "--json", env=cli_env).stdout)
    assert len(pred) == 15625 and {"nb201_index", "arch_str", "predicted_ms"} <= set(pred[0])


def test_adapt_saves_both_views_and_a_version_2_predictor_still_predicts(public_like_store, store_path, cache_dir):
    """adapt's multiproxy reads both views of dead code (kept-graph names saved with it); a predictor saved in
    the version-2 format (one view, no kept-graph names) predicts through the same workflow as before."""
    from harness.analysis import workflow

    folder, table = public_like_store
    archs = [SPACE.parse(k) for k in table.arch_str[12:60]]
    with Store(store_path) as st:
        import_table(st, folder / "target.csv")
        ctx = workflow.Context(st, SPACE, str(cache_dir))
        assert workflow.adapt(ctx, ["pub_a"], "new_dev").method == "multiproxy"
        saved = st.latest_predictor("nb201", "new_dev")
        payload = saved["model"]
        assert payload["version"] == 4 and payload["graph_features_kept"] and payload["both_fit"] is not None
        # own models on the pruned and on the kept graph's features, and on the edge activity (its 13 last columns)
        assert len(payload["graph_parts"]) == 3 and payload["edge_activity"] == 13
        assert payload["graph_parts"][-1]["stop"] - payload["graph_parts"][-1]["start"] == 13
        assert any(p.startswith("own edge-activity model") for p in saved["metrics"]["parts"])
        assert payload["plain_width"] == SPACE.encode(archs[0]).size + len(payload["graph_features"])
        new = workflow.predict(ctx, "new_dev", archs)
        assert spearmanr(new.predicted_ms, table.pub_a_ms[12:60]).statistic > 0.9
        # the same predictor as version 2 wrote it: one view, so no "both" parts and no both-view model
        parts = [p for p in payload["parts"] if p["correction"] != "both"]
        total = sum(p["share"] for p in parts) + payload["structure_share"]
        old = {**{k: v for k, v in payload.items()
                  if k not in ("plain_width", "both_fit", "both_share", "graph_features_kept", "graph_parts",
                               "edge_activity")},
               "version": 2, "parts": [{**p, "share": p["share"] / total} for p in parts],
               "structure_share": payload["structure_share"] / total}
        st.save_predictor("nb201", "new_dev", "multiproxy", old, saved["provenance"], saved["metrics"])
        before = workflow.predict(workflow.Context(st, SPACE, str(cache_dir)), "new_dev", archs)
        assert spearmanr(before.predicted_ms, table.pub_a_ms[12:60]).statistic > 0.9


def test_a_predictor_saved_before_the_sibling_column_predicts_as_it_did(public_like_store, store_path, cache_dir,
                                                                          monkeypatch):
    """Structure 2 saved 12 edge-activity columns; predicting reads those 12, not today's 13."""
    from harness.analysis import features, workflow

    folder, table = public_like_store
    archs = [SPACE.parse(k) for k in table.arch_str[12:60]]
    with Store(store_path) as st:
        import_table(st, folder / "target.csv")
        with monkeypatch.context() as m:  # the layout before the sibling column
            m.setattr(workflow, "edge_activity", lambda space, a: features.edge_activity(space, a)[:, :12])
            ctx = workflow.Context(st, SPACE, str(cache_dir))
            workflow.adapt(ctx, ["pub_a"], "new_dev")
            then = workflow.predict(ctx, "new_dev", archs).predicted_ms
        assert st.latest_predictor("nb201", "new_dev")["model"]["edge_activity"] == 12
        now = workflow.predict(workflow.Context(st, SPACE, str(cache_dir)), "new_dev", archs).predicted_ms
        np.testing.assert_allclose(now, then)


def test_a_proxy_measured_here_is_a_source_like_an_imported_device(public_like_store, cli_env, tmp_path):
    """Measured proxies are ours to make: a campaign on this machine's CPU stores a device that `adapt --proxy
    all` uses beside the imported ones, and picks first when it is the one that ranks the target."""
    harness("measure", "--device", "fast-onnx", "--space", "nb201", "--sample", "12", "--seed", "4", env=cli_env)
    measured = tmp_path / "measured.csv"
    harness("export", "--space", "nb201", "--device", "fast-onnx", "--out", str(measured), env=cli_env)
    local = pd.read_csv(measured).dropna(subset=["fast-onnx_ms"])
    assert len(local) == 12
    local[["nb201_index", "arch_str"]].assign(new_dev_ms=3.0 * local["fast-onnx_ms"] ** 1.2).to_csv(
        tmp_path / "new.csv", index=False)
    harness("import", str(tmp_path / "new.csv"), env=cli_env)
    r = json.loads(harness("adapt", "--proxy", "all", "--target", "new_dev", "--json", env=cli_env).stdout)
    assert set(r["proxies"]) == {"pub_a", "pub_b", "fast-onnx"} and r["sources_used"][0] == "fast-onnx"


def test_suggest_uncertain_picks_the_next_ones_for_a_target_with_measurements(public_like_store, cli_env):
    """`suggest --strategy uncertain --target T`: K new architectures (none already measured on T) where T's
    predictor is least sure; without --target, or with too few measurements, a clear error naming the flag."""
    folder, table = public_like_store
    no_target = harness("suggest", "--proxy", "all", "--strategy", "uncertain", env=cli_env, check=False)
    assert no_target.returncode == 2 and "--target" in no_target.stderr
    few = harness("suggest", "--proxy", "all", "--strategy", "uncertain", "--target", "new_dev", env=cli_env,
                  check=False)
    assert few.returncode == 2 and "new_dev has 0 nb201 measurement(s)" in few.stderr and "--strategy" in few.stderr
    harness("import", str(folder / "target.csv"), env=cli_env)
    out = folder / "next.csv"
    r = harness("suggest", "--proxy", "all", "--strategy", "uncertain", "--target", "new_dev", "--samples", "6",
                "--out", str(out), env=cli_env)
    picks = pd.read_csv(out)
    assert len(picks) == 6 and picks.arch_str.nunique() == 6 and "(uncertain)" in " ".join(r.stdout.split())
    assert not set(picks.arch_str) & set(pd.read_csv(folder / "target.csv").arch_str)


def test_multiproxy_structure_candidates_also_on_the_few_best_sources():
    """With more sources than FEW_SOURCES, every structure-corrected candidate is also fitted on the best few
    sources by SRCC on the samples (top=100 keeps every candidate as a part)."""
    from harness.analysis.transfer import FEW_SOURCES, rank_sources

    archs, x, dev = synthetic_devices()
    rng = np.random.default_rng(1)
    names = ["a", "b", "c", "n1", "n2", "n3"]
    sources = np.stack([dev["a"], dev["b"], dev["c"]] + [rng.lognormal(0, 1, len(x)) for _ in range(3)], axis=1)
    target = 3.0 * dev["b"] ** 0.8
    structure = np.hstack([x, np.log1p(x.sum(axis=1, keepdims=True))])
    model = fit_multiproxy(sources[:20], x[:20], target[:20], names, structure=structure[:20], top=100)
    best = {n for n, _ in rank_sources(sources[:20], target[:20], names)[:FEW_SOURCES]}
    corrected = [p for p in model.parts if p.weight > 0]
    assert len(model.parts) == 7 and len(corrected) == 6  # no correction; 3 weights x (all sources, few)
    few = [p for p in corrected if set(p.sources) <= best]
    assert len(few) >= 3 and all(len(p.sources) <= FEW_SOURCES for p in few)
    # with FEW_SOURCES sources or fewer there is nothing to restrict: no duplicate candidates
    small = fit_multiproxy(sources[:20, :3], x[:20], target[:20], names[:3], structure=structure[:20], top=100)
    assert len(small.parts) == 1 + 3


def test_adapt_says_when_its_leave_one_out_quality_is_low(public_like_store, cli_env):
    """A target no source ranks alike gets a warning naming what to do next (measure more where it matters);
    a target a source ranks perfectly gets none."""
    folder, table = public_like_store
    harness("import", str(folder / "target.csv"), env=cli_env)
    good = " ".join(harness("adapt", "--proxy", "all", "--target", "new_dev", env=cli_env).stdout.split())
    assert "low:" not in good
    rng = np.random.default_rng(5)
    table.iloc[100:114][["nb201_index", "arch_str"]].assign(odd_dev_ms=rng.lognormal(0, 0.5, 14)).to_csv(
        folder / "odd.csv", index=False)
    harness("import", str(folder / "odd.csv"), env=cli_env)
    odd = " ".join(harness("adapt", "--proxy", "all", "--target", "odd_dev", env=cli_env).stdout.split())
    assert "low:" in odd and "--strategy uncertain --target odd_dev" in odd and "harness transfer --target odd_dev" in odd


def test_suggest_never_spends_a_pick_on_a_network_with_a_constant_output(store_path, tmp_path, cache_dir):
    """NB201's 341 cells with no path from input to output make networks whose output is a constant: the fastest
    of every device and extreme in the one-hot, so farthest-point picks favour them. They teach a predictor nothing."""
    from harness.analysis.features import live_onehot, onehot
    from harness.analysis.workflow import open_context, suggest
    from harness.models.passes import is_degenerate, prepare

    archs = list(SPACE.all())
    live = live_onehot(SPACE, archs).reshape(len(archs), 6, 5)  # what runs: the pruned graph
    cost = 0.4 * live[:, :, 2].sum(1) + 1.5 * live[:, :, 3].sum(1) + 0.1 * live[:, :, 1:].sum((1, 2))
    pd.DataFrame({"nb201_index": [a.columns["nb201_index"] for a in archs], "arch_str": [a.key for a in archs],
                  "pub_ms": 1 + cost}).to_csv(tmp_path / "whole.csv", index=False)
    with Store(store_path) as st:
        import_table(st, tmp_path / "whole.csv")
        ctx = open_context(st, "nb201", str(cache_dir))
        constant = ctx.graph.constant_output(archs)
        assert constant.sum() == 341
        for i in list(np.flatnonzero(constant)[:40]) + list(range(0, len(archs), 401)):  # the passes agree
            assert constant[i] == is_degenerate(prepare(SPACE.build(archs[i]), "prune")), archs[i].key
        # over the whole space, farthest-point picks would include them ...
        every = sampling.select(20, np.log(1 + cost)[:, None], onehot(SPACE, archs), "diverse", 0)
        assert constant[every].any()
        # ... suggest leaves them out and says how many
        for strategy in ("diverse", "stratified", "random"):
            picks = suggest(ctx, ["pub"], 20, strategy)
            assert len(picks) == 20 and picks.attrs["constant_output_left_out"] == 341
            assert not set(picks.arch_str) & {a.key for a, c in zip(archs, constant) if c}, strategy


def test_a_source_gap_filler_never_extrapolates_beyond_what_the_source_did(store_path, tmp_path, cache_dir):
    """OneProxy's 1999 architectures hold no network with a constant output; its devices' gap-fillers predicted
    up to 3e6 ms for those (the target's predictor after `harness transfer` followed: range 2.9-3,132,083 ms)."""
    from harness.analysis.workflow import fill_gaps, open_context, source_latencies

    assert list(fill_gaps(np.array([1e9, 1e-9, 5.0, 7.0]), np.array([2.0, 10.0, np.nan]),
                          np.array([False, False, False, True]))) == [20.0, 1.0, 5.0, 2.0]
    archs = list(SPACE.all())
    with Store(store_path) as st:
        ctx = open_context(st, "nb201", str(cache_dir))
        constant = ctx.graph.constant_output(archs)
        real = [a for a, c in zip(archs, constant) if not c]
        table = real[::40]  # a public table of ~380 real networks, none constant
        x = np.stack([SPACE.encode(a) for a in table]).astype(float)
        ms = np.exp(x @ np.random.default_rng(0).uniform(0, 0.8, x.shape[1]))
        pd.DataFrame({"nb201_index": [a.columns["nb201_index"] for a in table], "pub_ms": ms}).to_csv(
            tmp_path / "pub.csv", index=False)
        import_table(st, tmp_path / "pub.csv")
        ctx = open_context(st, "nb201", str(cache_dir))
        ask = [a for a, c in zip(archs, constant) if c][:50] + real[1::97]
        filled, _ = source_latencies(ctx, ["pub"], ask)
    assert np.allclose(filled[:50, 0], ms.min())  # computes nothing: the source's fastest
    assert (filled[:, 0] >= ms.min() / 2).all() and (filled[:, 0] <= ms.max() * 2).all()


class _ShiftedProxy:
    """Linear in ms like AdaProxy, and wrong enough to go below zero for the fastest architectures."""

    name, summary, max_sources = "shifted", "proxy minus its median", 1

    def fit(self, ctx, sources, archs, y_ms):
        from harness.analysis.methods.base import Fitted

        return Fitted({"proxy": sources[0]})

    def predict(self, ctx, payload, archs):
        from harness.analysis.workflow import source_latencies

        s, _ = source_latencies(ctx, [payload["proxy"]], archs)
        return s[:, 0] - np.median(s[:, 0])


def test_predictions_at_or_below_zero_are_named_and_search_leaves_them_out(public_like_store, store_path,
                                                                          cache_dir, monkeypatch):
    """AdaProxy is linear in ms: `predict` printed ranges like -10.6..93.6 ms and `search --max-ms 1` listed
    architectures at -3.9 ms as the best under the budget."""
    from harness.analysis import methods
    from harness.analysis.search import search

    monkeypatch.setitem(methods.METHODS, "shifted", _ShiftedProxy)
    folder, table = public_like_store
    with Store(store_path) as st:
        import_table(st, folder / "target.csv")
        ctx = workflow.Context(st, SPACE, str(cache_dir))
        workflow.adapt(ctx, ["pub_a"], "new_dev", method="shifted")
        pred = workflow.predict(ctx, "new_dev", SPACE.parse_many([str(i) for i in table.nb201_index]))
        bad = pred.attrs["not_positive"]
        assert 150 <= len(bad) <= 250 and (pred.predicted_ms > 0).all()
        assert pred.predicted_ms[pred.arch_str.isin(bad)].nunique() == 1  # tied, at the fastest
        r = search(ctx, "new_dev", max_ms=1e6, accuracy="acc_top1", top=5)
    assert r.not_positive > 100  # left out and counted (measured ones stay: their latency is measured)
    assert not set(r.top.arch_str) & (set(bad) - set(table.arch_str[:12]))


def test_a_thin_imported_device_is_left_out_of_proxy_all_and_refused_by_name(public_like_store, cli_env):
    """A 2-row CSV imported beside real tables made every `--proxy all` command fail with 'the device has 2
    measurement(s); at least 3 are needed', naming no device."""
    from tests.conftest import harness

    folder, table = public_like_store
    table.iloc[:2][["nb201_index"]].assign(tiny_ms=[1.0, 3.0]).to_csv(folder / "tiny.csv", index=False)
    harness("import", str(folder / "tiny.csv"), env=cli_env)
    harness("import", str(folder / "target.csv"), env=cli_env)
    out = harness("adapt", "--proxy", "all", "--target", "new_dev", env=cli_env)
    flat = " ".join(out.stderr.split())
    assert "left out of the proxies (under 10 nb201 architectures each): tiny (2)" in flat, out.stdout + out.stderr
    default = harness("adapt", "--target", "new_dev", env=cli_env)  # --proxy all is the default (README's commands)
    assert "tiny (2)" in default.stderr
    picks = harness("suggest", "--strategy", "uncertain", "--target", "new_dev", "--samples", "5", "--json", env=cli_env)
    assert len(json.loads(picks.stdout)) == 5
    named = harness("adapt", "--proxy", "tiny", "--target", "new_dev", env=cli_env, check=False)
    flat = " ".join(named.stderr.split())
    assert named.returncode == 2 and "proxy tiny (2 architectures) has too little nb201 data" in flat, flat


def test_a_copy_of_the_targets_own_latencies_is_no_source(public_like_store, store_path, cache_dir):
    """A replay target answers from a published column; that column imported beside it made `adapt --proxy all`
    report a leave-one-out SRCC of 1.000 (found by an audit: 0.747 without it)."""
    from harness.analysis import workflow
    from harness.errors import ParameterError

    folder, table = public_like_store
    # rounded to 3 decimals, as a spreadsheet exports it (an exact-equality check let it through)
    table.iloc[:12][["nb201_index", "arch_str"]].assign(twin_ms=table.pub_b_ms[:12].round(3)).to_csv(
        folder / "t.csv", index=False)
    with Store(store_path) as st:
        import_table(st, folder / "t.csv")
        ctx = workflow.Context(st, SPACE, None)
        r = workflow.adapt(ctx, ["all"], "twin")
        assert r.proxies == ["pub_a"] and r.metrics["loo_srcc"] < 0.99
        assert any("left out of the proxies: pub_b (equal to twin's own latencies" in n for n in ctx.notes)
        with pytest.raises(ParameterError, match="pub_b holds twin's own latencies"):
            workflow.adapt(workflow.Context(st, SPACE, None), ["pub_a", "pub_b"], "twin")
        with pytest.raises(ParameterError, match="pub_b hold") as info:
            workflow.pareto(workflow.Context(st, SPACE, None), "pub_a", "twin", "acc_top1", what_if_k=5,
                            what_if_proxies=["pub_b"])
        assert info.value.param == "what_if_proxies"
        with pytest.raises(ParameterError, match="pub_b hold") as info:  # the what-if fit reads --proxy itself
            workflow.pareto(workflow.Context(st, SPACE, None), "pub_b", "twin", "acc_top1", what_if_k=5)
        assert info.value.param == "proxy"
        # `suggest --strategy uncertain` fits the same ensemble on the target's data: the copy is left out there too
        ctx = workflow.Context(st, SPACE, str(cache_dir))  # the seeded graph features of the whole space
        workflow.suggest(ctx, ["all"], 3, "uncertain", exclude_device="twin")
        assert any("left out of the proxies: pub_b" in n for n in ctx.notes)
    # a target with 3 samples (what adapt needs) and a copy of them: caught too (the check wanted 5 in common)
    table.iloc[:3][["nb201_index", "arch_str"]].assign(few_ms=table.pub_b_ms[:3]).to_csv(folder / "f.csv", index=False)
    with Store(store_path) as st:
        import_table(st, folder / "f.csv")
        with pytest.raises(ParameterError, match="pub_b hold"):
            workflow.adapt(workflow.Context(st, SPACE, None), ["pub_b"], "few")


def test_edge_activity_reads_which_edges_hold_an_operation_and_a_convolution():
    from harness.analysis.features import edge_activity, graph_columns

    arch = SPACE.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|")
    e = edge_activity(SPACE, [arch])
    # holds an op; holds a convolution; sibling merges (none: node 0's readers are a 3x3 conv and a pool)
    assert e.tolist() == [[1, 0, 1, 1, 1, 0] + [1, 0, 0, 0, 1, 0] + [0]]
    fbnet = get_space("fbnet")
    assert edge_activity(fbnet, fbnet.sample(3, 0)).shape == (3, 0)  # a space without cells: no block
    # [one-hot 30, graph 21, live one-hot 30, kept graph 19, edges 13]
    assert graph_columns(30, 21, 19, 113, 13) == [(30, 51), (81, 100), (100, 113)]


def test_sibling_merges_count_live_operations_of_one_kind_on_one_input():
    """TensorRT runs sibling convolutions on one tensor as one wider convolution and identical pools once."""
    from harness.analysis.features import sibling_merges

    def merges(arch_str: str) -> float:
        return float(sibling_merges(SPACE, [SPACE.parse(arch_str)])[0, 0])

    # three 1x1 convolutions read node 0: two merge into the first; with node 2 dead (it feeds a none edge), one
    assert merges("|nor_conv_1x1~0|+|nor_conv_1x1~0|none~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|") == 2
    assert merges("|nor_conv_1x1~0|+|nor_conv_1x1~0|none~1|+|nor_conv_1x1~0|skip_connect~1|none~2|") == 1
    # one 1x1 and one 3x3 on node 0, two pools on node 1: kinds differ on node 0, the pools merge
    assert merges("|nor_conv_1x1~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|avg_pool_3x3~1|skip_connect~2|") == 1
    # skips are free to duplicate: not counted; dead siblings (node 2 feeds only a none edge) are not run at all
    assert merges("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|") == 0
    assert merges("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|") == 0
    assert sibling_merges(get_space("fbnet"), get_space("fbnet").sample(2, 0)).shape == (2, 0)


def test_a_device_that_pays_per_operation_is_ranked_by_the_edge_activity_model():
    """HW-NAS-Bench's edge GPU costs about the same for any operation on an edge: 20 samples cannot pin that
    down as four equal one-hot coefficients per edge, the edge-activity model can (ensemble member)."""
    from harness.analysis.features import edge_activity

    rng = np.random.default_rng(5)
    archs = SPACE.sample(600, 21)
    x = np.stack([SPACE.encode(a) for a in archs]).astype(float)
    edges = edge_activity(SPACE, archs)
    target = np.exp(edges @ np.r_[rng.uniform(0.1, 0.6, 6), rng.uniform(0.0, 0.1, 6), -0.05]
                    + rng.normal(0, 0.02, 600))
    src = rng.lognormal(0, 1, (600, 1))  # a source that says nothing about this device
    k = 20
    old = fit_multiproxy(src[:k], x[:k], target[:k], ["s"], structure=x[:k])
    new = fit_multiproxy(src[:k], x[:k], target[:k], ["s"], structure=np.hstack([x, edges])[:k],
                         graph_cols=[(30, 43)])
    before = spearmanr(old.predict(src[k:], x[k:], x[k:]), target[k:]).statistic
    after = spearmanr(new.predict(src[k:], x[k:], np.hstack([x, edges])[k:]), target[k:]).statistic
    assert new.graph_parts[0].share > 0.3 and after > before + 0.03, (before, after)


def test_all_leaves_out_a_small_source_that_would_only_guess_at_the_targets_samples(public_like_store, cli_env):
    # a 40-architecture local proxy entered a Pixel 3 fit as its second source: at the 20 samples its values were
    # its own predictor's guesses from those 40
    folder, table = public_like_store
    harness("import", str(folder / "target.csv"), env=cli_env)  # new_dev: the first 12 architectures
    tiny = table.iloc[100:130][["nb201_index", "arch_str"]].assign(tiny_ms=table.pub_a_ms[100:130] * 1.5)
    tiny.to_csv(folder / "tiny.csv", index=False)
    harness("import", str(folder / "tiny.csv"), env=cli_env)
    out = harness("adapt", "--proxy", "all", "--target", "new_dev", "--json", env=cli_env)
    r = json.loads(out.stdout)
    assert "tiny" not in r["proxies"] and {"pub_a", "pub_b"} <= set(r["proxies"])
    assert "tiny (0)" in " ".join(out.stderr.split() + out.stdout.split())  # the note names it
    named = json.loads(harness("adapt", "--proxy", "tiny", "--proxy", "pub_a", "--target", "new_dev", "--json",
                               env=cli_env).stdout)
    assert "tiny" in named["proxies"]  # named proxies stay, as named
