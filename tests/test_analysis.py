"""SRCC across devices (checked against scipy), proxy ranking, the report, and their CLI."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from harness.analysis import correlate, rank_proxies
from harness.results.importer import import_table
from harness.results.store import Store
from tests.conftest import harness
from tests.test_import import ONEPROXY, needs_data


def synthetic(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Devices with ties (rounded), different coverage (NaNs) and a constant column."""
    rng = np.random.default_rng(seed)
    base = rng.lognormal(size=n)
    df = pd.DataFrame({
        "a": base,
        "b": np.maximum(np.round(base * rng.lognormal(0, 0.3, n), 1), 0.1),  # ties (never 0 ms)
        "c": rng.lognormal(size=n),                               # unrelated
        "d": base ** 2,                                           # monotone in a
        "e": np.where(rng.random(n) < 0.3, np.nan, base * rng.lognormal(0, 0.5, n)),  # partial coverage
        "f": np.where(np.arange(n) < 200, base, np.nan),          # another coverage
        "g": np.where(np.arange(n) < 200, base * 3, np.nan),      # same coverage as f
    })
    return df


@pytest.mark.parametrize("method,ref", [("spearman", spearmanr), ("kendall", kendalltau)])
def test_every_pair_matches_scipy_on_common_architectures(method, ref):
    df = synthetic()
    corr = correlate(df, method=method)
    assert len(corr.pairs) == len(list(combinations(df.columns, 2)))
    for a, b in combinations(df.columns, 2):
        both = df[[a, b]].dropna()
        expected = ref(both[a], both[b]).statistic
        row = corr.pairs[(corr.pairs.device_a == a) & (corr.pairs.device_b == b)].iloc[0]
        assert row.n_common_archs == len(both)
        assert row.srcc == pytest.approx(expected, abs=1e-12)
    assert corr.get("a", "d") == pytest.approx(1.0)
    assert corr.matrix().loc["f", "g"] == pytest.approx(1.0)


def test_constant_column_and_too_few_common_give_nan():
    df = pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [5.0, 5, 5, 5], "c": [1.0, np.nan, np.nan, 2]})
    corr = correlate(df)
    assert np.isnan(corr.get("a", "b"))
    assert np.isnan(corr.get("a", "c")) and corr.pairs.n_common_archs.tolist()[1] == 2


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    df = synthetic()
    one = correlate(df, n_boot=100, seed=1).pairs
    two = correlate(df, n_boot=100, seed=1).pairs
    pd.testing.assert_frame_equal(one, two)
    ok = one.dropna()
    assert ((ok.ci_low <= ok.srcc + 1e-9) & (ok.srcc <= ok.ci_high + 1e-9)).all()
    assert (ok.ci_high - ok.ci_low).max() < 0.5


def test_a_pairs_interval_does_not_depend_on_the_other_devices_listed():
    # one bootstrap stream across coverage groups: listing another device (with other gaps) moved a pair's CI
    df = synthetic()
    a, b = df.columns[:2]
    other = df[df.columns[2]].copy()
    other.iloc[::3] = np.nan  # another coverage: its own group
    alone = correlate(df[[a, b]], n_boot=80, seed=1).pairs.iloc[0]
    beside = correlate(pd.concat([other.rename("z"), df[[a, b]]], axis=1), n_boot=80, seed=1).pairs
    pair = beside[(beside.device_a == a) & (beside.device_b == b)].iloc[0]
    assert (alone.ci_low, alone.ci_high) == (pair.ci_low, pair.ci_high)


def test_rank_proxies_puts_the_monotone_device_first():
    df = synthetic()
    ranked = rank_proxies(df, targets=["a", "e"], candidates=["b", "c", "d"], n_boot=50)
    assert ranked.proxy.tolist()[0] == "d" and ranked.proxy.tolist()[-1] == "c"
    top = ranked.iloc[0]
    assert top.srcc_a == pytest.approx(1.0) and top.worst_target == "e"
    assert top.mean_ci_low <= top.mean_srcc <= top.mean_ci_high
    with pytest.raises(Exception, match="unknown device"):
        rank_proxies(df, targets=["zzz"])


@pytest.fixture
def imported_store(store_path, tmp_path):
    df = synthetic().drop(columns=["f", "g"])
    from harness.models.spaces import get_space

    space = get_space("nb201")
    df.insert(0, "nb201_index", range(len(df)))
    df.insert(1, "arch_str", [space.parse(str(i)).key for i in range(len(df))])
    path = tmp_path / "syn.csv"
    df.rename(columns={c: f"dev_{c}_ms" for c in "abcde"}).to_csv(path, index=False)
    with Store(store_path) as st:
        import_table(st, path)
    return store_path


@pytest.mark.slow
def test_cli_srcc_json_and_heatmap(imported_store, cli_env):
    out = harness("srcc", "--json", "--ci", "20", env=cli_env).stdout
    pairs = json.loads(out)
    assert len(pairs) == 10
    assert set(pairs[0]) == {"device_a", "device_b", "srcc", "n_common_archs", "ci_low", "ci_high", "ci_undefined", "low_overlap", "method"}
    table = harness("srcc", "--method", "kendall", env=cli_env).stdout
    assert "Kendall tau" in table and "dev_a" in table and "10 pairs" in table
    bad = harness("srcc", "--device", "nope", env=cli_env, check=False)
    assert bad.returncode == 2 and "nope" in bad.stderr and "dev_a" in bad.stderr


def test_device_lists_take_comma_separated_names(imported_store, cli_env):
    """`--target a,b` was read as one device named "a,b" (unknown); names never hold a comma, so it means both."""
    pairs = json.loads(harness("srcc", "--json", "--device", "dev_a,dev_b", "--device", " dev_c", env=cli_env).stdout)
    assert {p["device_a"] for p in pairs} | {p["device_b"] for p in pairs} == {"dev_a", "dev_b", "dev_c"}
    both = json.loads(harness("proxy", "-t", "dev_a,dev_e", "--json", env=cli_env).stdout)
    assert {"srcc_dev_a", "srcc_dev_e"} <= set(both[0]) and "dev_e" not in {r["proxy"] for r in both}
    one = harness("pareto", "--proxy", "dev_a,dev_b", "--target", "dev_c", env=cli_env, check=False)
    assert one.returncode == 2 and "one device here, not a list" in " ".join(one.stderr.split())
    for cmd in (["srcc", "--device", ","], ["proxy", "-t", " "], ["export", "--device", ",", "--out", "x.csv"]):
        empty = harness(*cmd, env=cli_env, check=False)  # was None: every device, or a TypeError traceback
        assert empty.returncode == 2 and "no name in" in empty.stderr and "Traceback" not in empty.stderr


@pytest.mark.slow
def test_cli_proxy(imported_store, cli_env):
    ranked = json.loads(harness("proxy", "--targets", "dev_a", "--json", env=cli_env).stdout)
    assert ranked[0]["proxy"] == "dev_d" and ranked[0]["mean_srcc"] == pytest.approx(1.0)
    table = harness("proxy", "-t", "dev_a", "-t", "dev_e", "--ci", "30", env=cli_env).stdout
    assert "dev_d" in table and "95% CI" in table


@pytest.mark.slow
def test_cli_report_html_and_png(imported_store, cli_env, tmp_path):
    out, png = tmp_path / "r" / "report.html", tmp_path / "png"
    harness("report", "--out", str(out), "--png", str(png), "--pair", "dev_a:dev_b", env=cli_env)
    text = out.read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 3
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert sorted(p.name for p in png.iterdir()) == ["latency_distributions.png", "latency_scatter.png",
                                                     "srcc_heatmap.png"]
    assert "dev_e" in text and "All pairs" in text
    bad = harness("report", "--out", str(out), "--pair", "dev_a-dev_b", env=cli_env, check=False)
    assert bad.returncode == 2 and "DEVICE_A:DEVICE_B" in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed")
def test_report_renders_in_headless_chromium(imported_store, cli_env, tmp_path):
    out = tmp_path / "report.html"
    harness("report", "--out", str(out), env=cli_env)
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,1600", out.as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000  # a blank page is a few kB


@needs_data
@pytest.mark.slow
def test_cli_import_then_srcc_on_public_data(cli_env):
    harness("import", str(ONEPROXY), env=cli_env)
    again = harness("import", str(ONEPROXY), env=cli_env).stdout
    assert "already imported" in again
    pairs = json.loads(harness("srcc", "--device", "nnmeter_myriad_vpu", "--device", "eagle_gtx1080ti",
                               "--json", env=cli_env).stdout)
    assert pairs == [{"device_a": "nnmeter_myriad_vpu", "device_b": "eagle_gtx1080ti",
                      "srcc": pytest.approx(0.6905, abs=5e-5), "n_common_archs": 1999, "low_overlap": False, "method": "spearman"}]


def test_proxy_ranking_leaves_out_pairs_below_the_minimum_overlap():
    """A candidate sharing only 10 architectures with the target is unknown under a 30-architecture rule."""
    import numpy as np
    import pandas as pd

    from harness.analysis.proxy import rank_proxies

    rng = np.random.default_rng(0)
    t = rng.uniform(1, 10, 100)
    wide = pd.DataFrame({"target": t, "full": t * 1.1, "thin": np.r_[t[:10] * 0.9, [np.nan] * 90]})
    strict = rank_proxies(wide, ["target"], min_common=30).set_index("proxy")
    assert strict.loc["full", "mean_srcc"] > 0.99 and np.isnan(strict.loc["thin", "mean_srcc"])
    assert strict.index[0] == "full"
    loose = rank_proxies(wide, ["target"], min_common=3).set_index("proxy")
    assert loose.loc["thin", "mean_srcc"] > 0.99 and loose.loc["thin", "min_common_archs"] == 10


def test_proxy_says_when_a_mean_mixes_architecture_sets(store_path, tmp_path, cli_env):
    """pixel3's mean over raspi4 (15,625 shared) and a Cortex-A76 (1,999) showed "archs 1999" as if both rested on
    one set; and only the top 10 were shown without a word."""
    import numpy as np
    import pandas as pd

    from harness.analysis.proxy import rank_proxies

    rng = np.random.default_rng(0)
    t = rng.uniform(1, 10, 200)
    wide = pd.DataFrame({"wide_t": t, "narrow_t": np.r_[t[:50], [np.nan] * 150], "p": t * 1.1})
    row = rank_proxies(wide, ["wide_t", "narrow_t"]).set_index("proxy").loc["p"]
    assert (row.min_common_archs, row.max_common_archs) == (50, 200)
    df = pd.DataFrame({"nb201_index": range(200), "wide_t_ms": t, "narrow_t_ms": wide.narrow_t,
                       **{f"p{i}_ms": t * (1 + 0.01 * i) + rng.uniform(0, 0.5, 200) for i in range(12)}})
    path = tmp_path / "mixed.csv"
    df.to_csv(path, index=False)
    harness("import", str(path), env=cli_env)
    out = " ".join(harness("proxy", "-t", "wide_t", "-t", "narrow_t", env=cli_env).stdout.split())
    assert "50–200" in out and "mixes them" in out and "best 10 of 12" in out


def test_a_proxy_known_for_fewer_targets_never_ranks_above_a_complete_one(store_path, tmp_path, cli_env):
    """A 50-architecture campaign beside a 1999-architecture table: its SRCC with the table's target is unknown
    (5 common architectures), so its mean covers one target of two and once ranked it first."""
    from harness.analysis.proxy import rank_proxies
    from harness.models.spaces import get_space

    rng = np.random.default_rng(1)
    t1 = rng.uniform(1, 10, 200)
    t2 = t1 * rng.lognormal(0, 0.2, 200)
    wide = pd.DataFrame({"t1": t1, "t2": t2, "full": t1 * rng.lognormal(0, 0.1, 200),
                         "thin": np.r_[t1[:50], [np.nan] * 150],                       # perfect on t1 ...
                         "t2_only_few": np.r_[[np.nan] * 195, t2[195:]]})
    wide.loc[:44, "t2"] = np.nan                                                          # ... 5 shared with t2
    ranked = rank_proxies(wide, ["t1", "t2"], min_common=30)
    assert ranked.proxy.tolist()[:2] == ["full", "thin"] and ranked.targets_known.tolist()[:2] == [2, 1]
    assert ranked.set_index("proxy").loc["thin", "mean_srcc"] > ranked.set_index("proxy").loc["full", "mean_srcc"]
    space = get_space("nb201")
    table = wide.rename(columns=lambda c: f"{c}_ms")
    table.insert(0, "nb201_index", range(len(table)))
    table.insert(1, "arch_str", [space.parse(str(i)).key for i in range(len(table))])
    table.to_csv(tmp_path / "w.csv", index=False)
    with Store(store_path) as st:
        import_table(st, tmp_path / "w.csv")
    out = " ".join(harness("proxy", "-t", "t1", "-t", "t2", env=cli_env).stdout.split())
    assert out.index("full") < out.index("thin") and "1/2" in out and "ranks after every proxy known for more" in out


def test_where_the_numbers_come_from_describes_the_adaptive_policy_it_ran():
    """The report said '2 warm-up + 50 timed runs' for the adaptive default (6-10 runs a visit, 3 rounds)."""
    from harness.analysis.data import policy_text
    from harness.devices.profile import parse_profile

    default = parse_profile({"name": "x", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                             "policy": {"warmup_runs": 2}}, "x").as_dict()["policy"]
    assert policy_text(default) == "2 warm-up + 6-10 timed runs per visit (adaptive, to a ±3 % CI), 3 rounds"
    assert policy_text({"warmup_runs": 1, "timed_runs": 3, "adaptive": None, "rounds": 1}) == "1 warm-up + 3 timed runs"


def test_the_notebook_api_reads_slips_as_a_notebook_user_makes_them(imported_store, tmp_path):
    """One device as a plain string was split into letters; a bad method was a ValueError and a misspelt space
    "run harness measure"; a scatter pair with an unknown device a KeyError, one without common architectures a
    matplotlib traceback; targets=[] a min() of an empty sequence."""
    import harness.analysis as ha
    from harness.errors import ParameterError, UnknownNameError

    assert list(ha.latencies(imported_store, devices="dev_a").columns) == ["dev_a"]
    assert ha.proxies(imported_store, targets="dev_a").proxy.iloc[0] == "dev_d"
    with pytest.raises(ParameterError, match="method must be one of spearman, kendall"):
        ha.srcc(imported_store, method="pearson")
    with pytest.raises(UnknownNameError, match="did you mean 'nb201'"):
        ha.srcc(imported_store, space="nb2O1")
    with pytest.raises(ParameterError, match="without nb201 data: nope"):
        ha.report(imported_store, tmp_path / "r.html", pairs=[("dev_a", "nope")])
    with pytest.raises(ParameterError, match="at least one target"):
        ha.proxies(imported_store, targets=[])
    assert set(ha.srcc(imported_store).method) == {"spearman"}
    for bad in ({"ci": -1}, {"ci": 1.5}, {"confidence": 95}, {"seed": -1}, {"min_overlap": 0}):
        with pytest.raises(ParameterError, match=next(iter(bad))):  # numpy errors before
            ha.srcc(imported_store, **bad)
    assert {"srcc", "latencies", "report"} <= set(dir(ha))  # tab completion sees the lazy functions
    masked = ha.srcc_matrix(imported_store, min_overlap=10**6)  # it ignored min_overlap, unlike `harness srcc`
    assert (np.diag(masked) == 1).all() and masked.where(~np.eye(len(masked), dtype=bool)).isna().all().all()


def test_api_srcc_intervals_are_the_clis_with_a_measured_device(tmp_path, store_path, cache_dir, cli_env):
    """ha.srcc(ci=N) did not resample a measured device's runs, so its intervals differed from `srcc --ci N`."""
    import harness.analysis as ha
    from tests.conftest import harness

    harness("measure", "-d", "fast-onnx", "--sample", "12", env=cli_env)
    harness("measure", "-d", "fast-tflite", "--sample", "12", env=cli_env)
    cli = pd.DataFrame(json.loads(harness("srcc", "--ci", "30", "--json", env=cli_env).stdout))
    api = ha.srcc(store_path, ci=30)
    assert cli.noise_resampled.iloc[0] == api.noise_resampled.iloc[0] == "fast-onnx, fast-tflite"
    cols = ["srcc", "ci_low", "ci_high"]
    assert np.allclose(cli[cols].to_numpy(float), api[cols].to_numpy(float))


def test_a_constant_device_with_bootstrap_gives_nan_intervals_without_numpy_warnings():
    import warnings

    wide = pd.DataFrame({"a": [1.0] * 10, "b": np.arange(10.0), "c": np.arange(10.0)[::-1]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "All-NaN slice encountered" reached notebooks ten times per call
        pairs = correlate(wide, n_boot=20).pairs.set_index(["device_a", "device_b"])
    assert np.isnan(pairs.loc[("a", "b"), "ci_low"]) and pairs.loc[("b", "c"), "ci_low"] == -1.0


def test_report_of_one_device_counts_it_and_the_heat_map_follows_the_tables_order(monkeypatch):
    """One device read "0 devices" with empty tables; the heat map clustered on every pair (n = 3 too) while
    the tables it heads followed the reliable pairs; a constant device's pairs were 'too few architectures'."""
    import importlib

    from harness.analysis.correlation import correlate

    rep = importlib.import_module("harness.analysis.report")  # harness.analysis.report is also the API function

    rng = np.random.default_rng(0)
    base = rng.lognormal(1, 0.3, 120)
    wide = pd.DataFrame({"a": base, "b": base * rng.lognormal(0, 0.05, 120), "c": rng.lognormal(1, 0.3, 120),
                         "d": base[::-1].copy(), "flat": np.full(120, 2.0)})
    wide.loc[3:, "d"] = np.nan  # d shares 3 architectures: an SRCC, but below min_overlap
    one = rep.build_report(wide[["a"]], correlate(wide[["a"]]), "nb201", {"a": "imported"})
    assert "1 devices (0 measured with harness, 1 imported)" in one.facts[0]
    assert one.tables[0].frame.device.tolist() == ["a"]
    seen = {}
    monkeypatch.setattr(rep, "heatmap", lambda matrix, *a, **k: seen.setdefault("order", a[3]) and None)
    r = rep.build_report(wide, correlate(wide), "nb201", {n: "imported" for n in wide})
    assert list(seen["order"]) == r.tables[0].frame.device.tolist()
    assert "4 pair(s) with a device whose latencies are all equal have no value" in " ".join(r.facts)
