"""Importing public tables: spaces recognised, merges, conflicts, bad input, nothing half-imported."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.campaign import run_campaign
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.importer import ImportFileError, import_table
from harness.results.store import Store
from tests.conftest import SHARED_DATA

ONEPROXY = SHARED_DATA / "oneproxy" / "nb201_oneproxy_18dev_1999.csv.gz"
HWNB = SHARED_DATA / "hwnasbench" / "nb201_hwnasbench_cifar10_4dev_15625.csv.gz"
needs_data = pytest.mark.skipif(not ONEPROXY.exists(), reason="../shared/data not present")
SPACE = get_space("nb201")


def table_counts(st: Store) -> dict[str, int]:
    return {t: st.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("devices", "architectures", "imports", "imported_latencies", "arch_metrics")}


def small_table(path: Path, rows: int = 6, **columns) -> Path:
    archs = [SPACE.parse(str(i)) for i in range(rows)]
    df = pd.DataFrame({"nb201_index": [a.columns["nb201_index"] for a in archs],
                       "arch_str": [a.key for a in archs],
                       "dev_x_ms": np.linspace(1.0, 2.0, rows), "acc_test": np.linspace(50, 60, rows)})
    for k, v in columns.items():
        df[k] = v
    df.to_csv(path, index=False)
    return path


@needs_data
def test_oneproxy_import_reproduces_the_papers_srcc(store_path):
    from harness.analysis import srcc

    with Store(store_path) as st:
        r = import_table(st, ONEPROXY)
        assert r.space == "nb201" and r.rows == 1999 and len(r.devices) == 18
        assert r.devices["hwnb_edgetpu"] == 1999 - 259, "empty cells are missing values, not zeros"
        pairs = srcc(st, devices=["nnmeter_myriad_vpu", "eagle_gtx1080ti"])
    assert round(pairs.srcc.iloc[0], 4) == 0.6905 and pairs.n_common_archs.iloc[0] == 1999


@needs_data
def test_same_file_twice_changes_nothing_and_same_device_from_two_files_merges(store_path):
    with Store(store_path) as st:
        import_table(st, ONEPROXY)
        before = table_counts(st)
        again = import_table(st, ONEPROXY)
        assert again.skipped_file and table_counts(st) == before
        r = import_table(st, HWNB)
        assert r.already_present == 4 * 1999 and r.new_values == 4 * 15625 - 4 * 1999
        counts = st.devices().set_index("name").architectures
        assert counts["hwnb_pixel3"] == 15625 and counts["nnmeter_myriad_vpu"] == 1999
        assert (st.devices().origin == "imported").all()
        imports = st.imports()
        assert imports.source.tolist() == [ONEPROXY.name, HWNB.name] and imports.sha256.str.len().eq(64).all()


def test_conflicting_values_name_both_sources_and_import_nothing(store_path, tmp_path):
    a = small_table(tmp_path / "a.csv")
    b = small_table(tmp_path / "b.csv", dev_y_ms=[1.0] * 6)
    df = pd.read_csv(b)
    df.loc[3, "dev_x_ms"] = 99.0
    df.to_csv(b, index=False)
    with Store(store_path) as st:
        import_table(st, a, source="lab-a")
        before = table_counts(st)
        with pytest.raises(ImportFileError) as info:
            import_table(st, b, source="lab-b")
        msg = str(info.value)
        assert "lab-a" in msg and "lab-b" in msg and "dev_x" in msg and "99" in msg
        assert table_counts(st) == before, "nothing of the conflicting file may be imported (dev_y included)"


def test_more_values_1000x_off_a_devices_own_are_a_unit_mistake_not_merged(store_path, tmp_path):
    """Seconds beside milliseconds merged into one device without a word; srcc then read it at 0.12-0.26."""
    ms = small_table(tmp_path / "ms.csv")
    df = pd.read_csv(small_table(tmp_path / "more.csv", rows=12)).iloc[6:]
    df["dev_x_ms"] = df["dev_x_ms"] / 1000  # other architectures, in seconds
    df.to_csv(tmp_path / "more.csv", index=False)
    with Store(store_path) as st:
        import_table(st, ms)
        before = table_counts(st)
        with pytest.raises(ImportFileError, match=r"dev_x: the new values' median .* is \d+x below .* unit mistake"):
            import_table(st, tmp_path / "more.csv")
        after = table_counts(st)
        assert after.pop("architectures") == 12 and before.pop("architectures") == 6  # keys only: no values
        assert after == before
        df["dev_x_ms"] = df["dev_x_ms"] * 1000  # in ms, a different range of the same device: welcome
        df.to_csv(tmp_path / "more.csv", index=False)
        assert import_table(st, tmp_path / "more.csv").new_values == 6


def test_accuracy_and_metadata_columns(store_path, tmp_path):
    path = small_table(tmp_path / "t.csv", flops=[1, 2, 3, 4, 5, 6], note=["x"] * 6)
    with Store(store_path) as st:
        r = import_table(st, path)
        assert set(r.metrics) == {"acc_test", "flops"} and any("note" in w for w in r.warnings)
        acc = st.arch_metrics("nb201", "accuracy")
        assert list(acc.columns) == ["acc_test"] and len(acc) == 6
        assert list(st.arch_metrics("nb201", "metadata").columns) == ["flops"]


def test_parquet_and_gzip_and_space_override(store_path, tmp_path):
    src = pd.read_csv(small_table(tmp_path / "t.csv"))
    src.to_parquet(tmp_path / "t.parquet")
    with gzip.open(tmp_path / "u.csv.gz", "wt") as f:
        src.assign(dev_z_ms=src.dev_x_ms * 2).drop(columns=["dev_x_ms"]).to_csv(f, index=False)
    with Store(store_path) as st:
        assert import_table(st, tmp_path / "t.parquet").devices == {"dev_x": 6}
        assert import_table(st, tmp_path / "u.csv.gz", space="nb201").devices == {"dev_z": 6}


def test_measured_and_imported_devices_sit_side_by_side(store_path, tmp_path, registry, cache_dir):
    from harness.analysis import latencies

    with Store(store_path) as st:
        run_campaign(st, registry.get("fast-onnx"), SPACE, SPACE.parse_many(["0", "1", "2", "3"]),
                     cache=ModelCache(cache_dir))
        import_table(st, small_table(tmp_path / "t.csv"))
        wide = latencies(st, "nb201")
        assert set(wide.columns) == {"fast-onnx", "dev_x"}
        assert wide.dropna().shape[0] == 4
        origins = dict(zip(st.latencies("nb201").device, st.latencies("nb201").origin))
        assert origins == {"fast-onnx": "measured", "dev_x": "imported"}


BAD_TABLES = {
    "no-key": (lambda df: df.drop(columns=["nb201_index", "arch_str"]), ["no recognisable architecture key",
                                                                          "dev_x_ms"]),
    "duplicate-keys": (lambda df: pd.concat([df, df.iloc[[2]]]), ["duplicate architectures", "lines 4, 8"]),
    "non-numeric": (lambda df: df.assign(dev_x_ms=df.dev_x_ms.astype(str).where(df.index != 1, "fast")),
                    ["column dev_x_ms", "non-numeric", "'fast'", "lines 3"]),
    "negative": (lambda df: df.assign(dev_x_ms=df.dev_x_ms.where(df.index != 4, -1.0)),
                 ["column dev_x_ms", "negative", "lines 6"]),
    "literal-nan": (lambda df: df.assign(dev_x_ms=df.dev_x_ms.astype(str).where(df.index != 1, "NaN")),
                    ["column dev_x_ms", "'NaN'", "lines 3", "leave a missing value empty"]),
    "huge": (lambda df: df.assign(dev_x_ms=df.dev_x_ms.where(df.index != 2, 1e30)),
             ["column dev_x_ms", "over 8.64e+07 ms", "1e+30", "lines 4", "milliseconds"]),
    "index-vs-arch_str": (lambda df: df.assign(nb201_index=df.nb201_index.where(df.index != 0, 9)),
                          ["line 2", "not the same architecture"]),
    "bad-arch": (lambda df: df.assign(arch_str=df.arch_str.where(df.index != 5, "|conv9x9~0|"),
                                      nb201_index=""), ["line 7", "arch_str"]),
    "only-empty-latency": (lambda df: df.drop(columns=["acc_test"]).assign(dev_x_ms=""),
                           ["every _ms column is empty"]),
}


def test_a_folder_a_semicolon_file_and_a_wrong_space_each_get_one_clear_error(store_path, tmp_path):
    (tmp_path / "semi.csv").write_text("nb201_index;arch_str;semi_ms\n1;x;2\n")
    (tmp_path / "good.csv").write_text("nb201_index,foo_ms\n1,2\n2,3\n")
    with Store(store_path) as st:
        with pytest.raises(ImportFileError, match="is a folder; name the table files in it"):
            import_table(st, tmp_path)
        with pytest.raises(ImportFileError, match="separates columns with ;, not commas"):
            import_table(st, tmp_path / "semi.csv")
        with pytest.raises(ImportFileError, match=r"--space fbnet needs its key column\(s\) op_idx_list") as e:
            import_table(st, tmp_path / "good.csv", space="fbnet")
        assert "line 2" not in str(e.value)  # was 'line 2: all key columns () are empty', once per line


@pytest.mark.parametrize("name", list(BAD_TABLES))
def test_bad_tables_give_clear_errors_and_import_nothing(store_path, tmp_path, name):
    change, fragments = BAD_TABLES[name]
    path = tmp_path / f"{name}.csv"
    change(pd.read_csv(small_table(tmp_path / "base.csv"))).to_csv(path, index=False)
    with Store(store_path) as st:
        before = table_counts(st)
        with pytest.raises(ImportFileError) as info:
            import_table(st, path)
        assert table_counts(st) == before
    msg = str(info.value)
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"


def test_all_empty_latency_column_is_a_warning_not_an_error(store_path, tmp_path):
    path = small_table(tmp_path / "t.csv", dev_empty_ms="")
    with Store(store_path) as st:
        r = import_table(st, path)
    assert r.devices == {"dev_x": 6}
    assert any("dev_empty_ms" in w and "empty" in w for w in r.warnings)


def test_fbnet_keys_are_recognised(store_path, tmp_path):
    path = tmp_path / "fb.csv"
    pd.DataFrame({"op_idx_list": ["0-" * 21 + "0", "8-" * 21 + "8"], "x_ms": [1.0, 2.0]}).to_csv(path, index=False)
    with Store(store_path) as st:
        r = import_table(st, path)
        assert r.space == "fbnet" and r.devices == {"x": 2}
        assert st.spaces() == ["fbnet"]


@pytest.mark.skipif(not (SHARED_DATA / "hwnasbench").is_dir(), reason="../shared/data not present")
def test_public_fbnet_table_imports_and_analyses_like_nb201(store_path):
    from harness.analysis import srcc

    with Store(store_path) as st:
        r = import_table(st, SHARED_DATA / "hwnasbench" / "fbnet_hwnasbench_cifar100_4dev_5000.csv.gz")
        assert r.space == "fbnet" and r.rows == 5000 and set(r.devices) == {
            "hwnb_pixel3", "hwnb_raspi4", "hwnb_eyeriss", "hwnb_fpga"}
        pairs = srcc(st, space="fbnet")
    assert len(pairs) == 6 and (pairs.n_common_archs == 5000).all() and (pairs.srcc > 0.8).all()


def test_a_zero_that_harness_exported_for_a_degenerate_model_imports_again(store_path, tmp_path):
    """benchmark_model prints whole microseconds: a constant-output network on a fast phone reads 0 us. harness
    export wrote that 0 with <device>_degenerate = 1, and importing the export back refused it."""
    body = "nb201_index,phone_ms,phone_degenerate\n1,0.0,1\n2,1.5,0\n3,2.5,0\n"
    (tmp_path / "exported.csv").write_text(body)
    (tmp_path / "plain.csv").write_text(body.replace("1\n2,1.5", "0\n2,1.5"))  # the same 0 without the flag
    with Store(store_path) as st:
        assert import_table(st, tmp_path / "exported.csv").devices == {"phone": 3}
        with pytest.raises(ImportFileError, match="zero latencies on lines 2"):
            import_table(st, tmp_path / "plain.csv", prefix="p-")


def test_the_interval_drift_and_energy_columns_of_an_export_are_not_devices(store_path, tmp_path):
    """`export --ci --drift-correct` beside energy: importing it back made phone_ci_low, phone_ci_high and
    phone_drift_corrected devices, which srcc then ranked, and phone_mj an architecture's metric."""
    (tmp_path / "exported.csv").write_text(
        "nb201_index,phone_ms,phone_ci_low_ms,phone_ci_high_ms,phone_drift_corrected_ms,phone_mj,other_ci_low_ms\n"
        "1,1.0,0.9,1.1,1.02,3.0,5\n2,2.0,1.9,2.1,2.03,6.0,5\n")
    with Store(store_path) as st:
        r = import_table(st, tmp_path / "exported.csv")
        # other_ci_low_ms has no other_ms beside it: a device of that name
        assert r.devices == {"phone": 2, "other_ci_low": 2} and r.metrics == []
        assert any("phone_ci_low_ms" in w and "phone_mj" in w for w in r.warnings)


@pytest.mark.parametrize("body", ["0,1,5,7\n1,2,6,8\n", "0,1,5\n1,2\n", "0,1\n1,2,3\n"])
def test_rows_with_more_fields_than_the_header_are_refused_not_shifted(store_path, tmp_path, body):
    """pandas made surplus leading fields the index: `0,1,5,7` under `nb201_index,dev_ms` was stored as arch 5 =
    7 ms, silently, and exported so."""
    path = tmp_path / "ragged.csv"
    path.write_text("nb201_index,dev_ms\n" + body)
    with Store(store_path) as st:
        with pytest.raises(ImportFileError, match="more fields than the header's 2, on lines"):
            import_table(st, path)
        assert st.info()["measurements"] == 0 and not len(st.latencies("nb201"))
    gz = tmp_path / "ragged.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with Store(store_path) as st, pytest.raises(ImportFileError, match="more fields than the header"):
        import_table(st, gz)


def test_a_damaged_store_during_import_is_a_store_error_saying_how_to_salvage(store_path, tmp_path, monkeypatch):
    """A store damaged past its first pages opened fine, then import died in a sqlite3.DatabaseError traceback
    (srcc, export and train said how to salvage it)."""
    import sqlite3

    import harness.results.importer as importer
    from harness.errors import StoreError

    def malformed(store):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(importer, "_forget_abandoned", malformed)
    path = tmp_path / "t.csv"
    path.write_text("nb201_index,dev_ms\n0,1.0\n")
    with Store(store_path) as st, pytest.raises(StoreError, match="recover"):
        import_table(st, path)


def test_a_latency_column_misspelt_by_case_or_a_space_is_named(store_path, tmp_path):
    (tmp_path / "a.csv").write_text("nb201_index,dev_MS,\"trail_ms \"\n1,1.5,2\n2,2.5,3\n")
    with Store(store_path) as st:
        with pytest.raises(ImportFileError, match=r"no latency .*'dev_MS', 'trail_ms ' look like latencies"):
            import_table(st, tmp_path / "a.csv")
        (tmp_path / "b.csv").write_text("nb201_index,good_ms,dev_MS\n1,1.5,2\n2,2.5,3\n")
        r = import_table(st, tmp_path / "b.csv")  # beside a real one it was metadata without a word
        assert list(r.devices) == ["good"] and any("'dev_MS' look like latencies" in w for w in r.warnings)


def test_import_of_several_files_goes_on_past_a_bad_one_and_says_which_failed(cli_env, tmp_path):
    from tests.conftest import harness

    small_table(tmp_path / "a.csv")
    (tmp_path / "bad.csv").write_text("nb201_index,x_ms\n1,-3\n")
    (tmp_path / "c.csv").write_text("nb201_index,other_ms\n1,2.5\n2,3.5\n")
    r = harness("import", str(tmp_path / "a.csv"), str(tmp_path / "bad.csv"), str(tmp_path / "c.csv"), env=cli_env,
                check=False)
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "1 of 3 files not imported" in said and "bad.csv" in said
    assert "a.csv: nb201" in r.stdout and "c.csv: nb201" in r.stdout  # c.csv was never tried before


def test_an_accuracy_outside_0_to_100_or_a_fraction_is_named(store_path, tmp_path):
    (tmp_path / "a.csv").write_text("nb201_index,acc_weird,acc_frac,acc_ok\n1,150,0.7,70\n2,50,0.6,71\n")
    with Store(store_path) as st:
        r = import_table(st, tmp_path / "a.csv")
    said = " ".join(r.warnings)
    assert "acc_weird has values outside 0-100 (min 50, max 150)" in said and "acc_frac is at most 0.7" in said
    assert "acc_ok" not in said


def test_a_table_in_seconds_is_imported_with_a_warning(store_path, tmp_path):
    """A whole table in seconds went in silently (a first import has nothing to compare with): SRCC does not notice,
    `search --max-ms` and the Pareto regrets are 1000x off."""
    secs = small_table(tmp_path / "s.csv", dev_x_ms=np.linspace(0.001, 0.002, 6))
    with Store(store_path) as st:
        report = import_table(st, secs)
        assert any("median of 0.0015 ms" in w and "seconds" in w for w in report.warnings)
    with Store(tmp_path / "other.db") as st:
        ms = import_table(st, small_table(tmp_path / "ms.csv"))
        assert not any("seconds" in w for w in ms.warnings)
