"""Batch size, input shape and precision: profile fields, checks before the campaign, measurement identity
(store columns, resume, export columns) and the CLI overrides."""

from __future__ import annotations

import sqlite3

import onnxruntime as ort
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.campaign import run_campaign
from harness.devices.preflight import check_workload
from harness.devices.profile import parse_profile
from harness.errors import ProfileError
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.export import latency_table
from harness.results.store import MIGRATIONS, SCHEMA, Store
from tests.conftest import write_profile

NB201 = get_space("nb201")
BASE = {"name": "p", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"}}


def profile_with(**workload):
    return parse_profile({**BASE, "workload": workload}, "p.yaml")


def test_workload_defaults_and_labels():
    p = parse_profile(BASE, "p.yaml")
    assert (p.workload.batch_size, p.workload.input_shape, p.workload.precision) == (1, None, "fp32")
    assert p.measured_name == "p" and p.workload.calibration_label() is None
    q = profile_with(batch_size=32, input_shape=[64, 48], precision="int8", calibration={"samples": 4, "seed": 2})
    assert q.measured_name == "p@bs32.64x48.int8"
    assert q.workload.calibration_label() == "random-n4-s2"
    assert q.digest() != p.digest() and profile_with().digest() == p.digest()


@pytest.mark.parametrize("workload, field", [
    ({"precision": "fp8"}, "workload.precision"),
    ({"batch_size": 0}, "workload.batch_size"),
    ({"input_shape": [4, 4]}, "workload.input_shape"),
    ({"input_shape": [32]}, "workload.input_shape"),
    ({"batchsize": 2}, "workload.batchsize: unknown field (did you mean 'batch_size'?)"),
    ({"calibration": {"sample": 2}}, "workload.calibration.sample: unknown field (did you mean 'samples'?)"),
])
def test_bad_workload_names_the_field(workload, field):
    with pytest.raises(ProfileError) as e:
        profile_with(**workload)
    assert field in str(e.value)


def test_command_line_override_is_validated_and_names_the_flags():
    p = parse_profile(BASE, "p.yaml")
    assert p.with_workload(batch_size=8).workload.batch_size == 8
    assert p.with_workload(batch_size=None) is p
    with pytest.raises(ProfileError, match=r"with the workload of the command line:\n  - --precision \(workload.precision\)") as e:
        p.with_workload("the command line", precision="bf16", batch_size=2)
    assert "--batch-size" not in str(e.value)  # only the flag that is wrong


@pytest.mark.parametrize("space, runtime, workload, field", [
    ("ofa_mbv3", {"name": "onnxruntime"}, {"input_shape": [160, 160]}, "workload.input_shape: space ofa_mbv3"),
    ("nb201", {"name": "tflite", "delegate": "gpu"}, {"precision": "int8"}, "runtime.delegate gpu"),
    ("nb201", {"name": "tflite", "delegate": "hexagon"}, {}, "workload.precision: fp32"),
    ("nb201", {"name": "onnxruntime", "execution_provider": "CUDAExecutionProvider"}, {"precision": "int8"},
     "runtime.execution_provider CUDAExecutionProvider"),
    ("nb201", {"name": "onnxruntime"}, {"batch_size": 4096, "input_shape": [4096, 4096]}, "workload.batch_size"),
])
def test_preflight_refuses_what_cannot_run(space, runtime, workload, field):
    p = parse_profile({**BASE, "runtime": runtime, "workload": workload}, "p.yaml")
    sp = get_space(space)
    with pytest.raises(ProfileError) as e:
        check_workload(p, sp, sp.sample(1, 0))
    assert field in str(e.value)


def test_preflight_accepts_a_new_resolution_where_the_space_allows_it():
    check_workload(profile_with(input_shape=[64, 64], batch_size=8), NB201, NB201.sample(1, 0))


def test_workloads_are_separate_measurements(devices_dir, registry, store_path, cache_dir):
    write_profile(devices_dir, "wl", {"name": "onnxruntime", "threads": 1},
                  workload={"batch_size": 2, "input_shape": [40, 40], "precision": "fp16"})
    write_profile(devices_dir, "wl8", {"name": "tflite", "threads": 1},
                  workload={"precision": "int8", "calibration": {"samples": 2, "seed": 5}})
    big, plain, q8 = registry.get("wl"), registry.get("fast-onnx"), registry.get("wl8")
    archs = NB201.parse_many(["1", "2"])
    with Store(store_path) as st:
        cache = ModelCache(cache_dir)
        assert run_campaign(st, big, NB201, archs, cache=cache).ok == 2
        assert run_campaign(st, big, NB201, archs, cache=cache).status == "nothing to do"  # resume by workload
        # same device name, default workload: not measured yet
        as_default = big.model_copy(update={"workload": plain.workload})
        assert run_campaign(st, as_default, NB201, archs[:1], cache=cache).ok == 1
        assert run_campaign(st, q8, NB201, archs[:1], cache=cache).ok == 1
        changed = q8.with_workload(calibration={"samples": 2, "seed": 6})
        assert run_campaign(st, changed, NB201, archs[:1], cache=cache).ok == 1  # other calibration, new data
        m = st.measurements()
        rows = m[m.device == "wl"]
        assert sorted(zip(rows.batch_size, rows.input_shape, rows.precision)) == \
            [(1, "", "fp32"), (2, "40x40", "fp16"), (2, "40x40", "fp16")]
        assert sorted(m[m.device == "wl8"].calibration) == ["random-n2-s5", "random-n2-s6"]
        assert m[m.device == "wl"].calibration.isna().all()
        digest = rows[rows.batch_size == 2].model_digest.iloc[0]
        df = latency_table(st, "nb201")
        # each series alone: the plain name took every workload's visits, so `compare` and `srcc --ci` resampled
        # the batch-2 runs as the default workload's noise (a CI of 0.54..4.03 ms around 0.08 ms)
        from harness.measure.confidence import noise_draws

        assert sorted(st.visits("nb201", "wl").key) == [archs[0].key]
        assert sorted(st.visits("nb201", "wl@bs2.40x40.fp16").key) == sorted(a.key for a in archs)
        draws = noise_draws(st, "nb201", "wl", 50)
        assert list(draws.index) == [archs[0].key]
        default_ms = rows[rows.batch_size == 1].median_ms.iloc[0]
        # its own runs' spread, not batch 2's (~3x slower, and the bug read 50x): the median draw, as the max of
        # 50 draws moved past 3x on a loaded machine
        own = draws.iloc[0].dropna()  # none when the visit's runs were mostly preempted: no noise estimate then
        assert own.empty or own.median() < 2 * default_ms
        # the report's provenance: a workload series is measured, with its own campaigns (it said "imported")
        from harness.analysis.data import device_facts

        facts = device_facts(st, "nb201", ["wl", "wl@bs2.40x40.fp16"]).set_index("device")
        assert list(facts.origin) == ["measured", "measured"] and list(facts.campaigns) == ["1 (finished)"] * 2
    sess = ort.InferenceSession(str(next(cache_dir.rglob(f"{digest}.onnx"))), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [2, 3, 40, 40]
    assert {"wl_ms", "wl@bs2.40x40.fp16_ms", "wl8@int8_ms"} <= set(df.columns)
    assert df["wl@bs2.40x40.fp16_ms"].notna().sum() == 2 and df["wl_ms"].notna().sum() == 1


def test_stores_of_the_previous_version_get_workload_columns(store_path):
    store_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(store_path)
    db.executescript(SCHEMA + MIGRATIONS[1] + MIGRATIONS[2] + """
        INSERT INTO meta VALUES ('schema_version', '3');
        INSERT INTO devices (id, name, origin, created_at) VALUES (1, 'old', 'measured', 'x');
        INSERT INTO architectures (id, space, key, columns_json) VALUES (1, 'nb201', 'k', '{}');
        INSERT INTO campaigns (id, device_id, space, profile_json, profile_digest, harness_version, host, pid,
            planned, status, started_at) VALUES (1, 1, 'nb201', '{}', 'd', '0', 'h', 1, 1, 'finished', 'x');
        INSERT INTO measurements (campaign_id, device_id, arch_id, status, n_runs, median_ms, started_at)
            VALUES (1, 1, 1, 'ok', 1, 2.5, 'x');""")
    db.close()
    with Store(store_path) as st:
        assert st.measured_keys("old", "nb201") == {"k"}  # old rows are the default workload
        assert st.measured_keys("old", "nb201", {"batch_size": 32}) == set()
        row = st.measurements().iloc[0]
        assert (row.batch_size, row.input_shape, row.precision) == (1, "", "fp32")


def test_cli_measure_flags(cli_env, tmp_path):
    from tests.conftest import harness

    cmd = ["measure", "-d", "fast-tflite", "--arch", "5", "--batch-size", "3", "--precision", "fp16"]
    r = harness(*cmd, env=cli_env, check=False)
    assert r.returncode == 0, r.stderr
    assert "1 measured" in r.stdout
    bad = harness(*cmd[:-2], "--input-shape", "64by64", env=cli_env, check=False)
    assert bad.returncode != 0 and "--input-shape" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    with Store(cli_env["HARNESS_STORE"]) as st:
        row = st.measurements().iloc[0]
    assert (row.batch_size, row.precision) == (3, "fp16")
    # NB201's own resolution is the default workload: it measured the same models again as fast-tflite@32x32
    harness("measure", "-d", "fast-tflite", "--arch", "5", env=cli_env)
    again = harness("measure", "-d", "fast-tflite", "--arch", "5", "--input-shape", "32x32", env=cli_env)
    assert "own resolution" in again.stdout and "already in" in again.stdout, again.stdout
    with Store(cli_env["HARNESS_STORE"]) as st:
        assert "fast-tflite@32x32" not in set(st.latencies("nb201").device)


@pytest.mark.parametrize("provider, expect", [
    ("TensorRTExecutionProvider", "did you mean 'TensorrtExecutionProvider'?"),
    ("cuda", "did you mean 'CUDAExecutionProvider'? onnxruntime names providers in full"),
    ("CPUExecutionprovider", "did you mean 'CPUExecutionProvider'?"),  # a case slip: no hint before
    ("CUDAExecutonProvider", "did you mean 'CUDAExecutionProvider'?"),  # a slip in the suffix: no hint before
    ("cpu exec", "known: CPUExecutionProvider, CUDAExecutionProvider"),
])
def test_execution_provider_names_are_checked(provider, expect):
    with pytest.raises(ProfileError) as e:
        parse_profile({**BASE, "runtime": {"name": "onnxruntime", "execution_provider": provider}}, "p.yaml")
    assert "runtime.execution_provider" in str(e.value) and expect in str(e.value)
    ok = parse_profile({**BASE, "runtime": {"name": "onnxruntime", "execution_provider": "FancyNpuExecutionProvider",
                                            "provider_options": {"device_id": 1}}}, "p.yaml")
    assert ok.runtime.provider_options == {"device_id": 1}  # others by name


def test_model_files_refuse_a_non_default_workload(tmp_path):
    from harness.models.export_onnx import export_onnx
    from harness.models.files import FileSpace, open_model

    path = tmp_path / "m.onnx"
    export_onnx(NB201.build(NB201.parse("3")), str(path))
    sp = FileSpace([open_model(path)])
    check_workload(parse_profile(BASE, "p.yaml"), sp, sp.archs())  # as it is: fine
    with pytest.raises(ProfileError, match="model files are measured as they are"):
        check_workload(profile_with(batch_size=8), sp, sp.archs())


def test_an_exported_workload_imports_again_and_never_shadows_a_measured_one(cli_env, tmp_path):
    """`harness export` names a non-default workload ``device@bs2.fp16``; `harness import` takes that file back
    (a measured proxy shipped to another store). Where the same name would also come from a measured device's
    workload, the second of the two is refused with both names, never a table with one name twice."""
    from tests.conftest import harness

    harness("measure", "-d", "fast-onnx", "--arch", "5", "--arch", "7", "--batch-size", "2", "--precision", "fp16",
            env=cli_env)
    out = tmp_path / "exported.csv"
    harness("export", "--space", "nb201", "--out", str(out), env=cli_env)
    assert "fast-onnx@bs2.fp16_ms" in pd.read_csv(out).columns

    other = {**cli_env, "HARNESS_STORE": str(tmp_path / "other.db")}
    harness("import", str(out), env=other)
    with Store(other["HARNESS_STORE"]) as st:
        assert set(st.latencies("nb201").device) == {"fast-onnx@bs2.fp16"}
    # with --ci its companions (fast-onnx@bs2.fp16_ci_low_ms) refused the whole file as a bad device name
    with_ci = tmp_path / "with_ci.csv"
    harness("export", "--space", "nb201", "--out", str(with_ci), "--ci", "20", env=cli_env)
    assert "fast-onnx@bs2.fp16_ci_low_ms" in pd.read_csv(with_ci).columns
    third = {**cli_env, "HARNESS_STORE": str(tmp_path / "third.db")}
    said = harness("import", str(with_ci), env=third)
    assert "not imported as devices" in " ".join(said.stdout.split() + said.stderr.split())
    with Store(third["HARNESS_STORE"]) as st:
        assert set(st.latencies("nb201").device) == {"fast-onnx@bs2.fp16"}
    again = tmp_path / "again.csv"
    harness("export", "--space", "nb201", "--out", str(again), env=other)
    cols = ["nb201_index", "fast-onnx@bs2.fp16_ms"]
    pd.testing.assert_frame_equal(pd.read_csv(again)[cols], pd.read_csv(out)[cols])

    into_same = harness("import", str(out), env=cli_env, check=False)  # the store that measured it
    assert into_same.returncode == 2 and "fast-onnx@bs2.fp16" in into_same.stderr and "--store" in into_same.stderr
    measure_there = harness("measure", "-d", "fast-onnx", "--arch", "5", env=other, check=False)
    assert measure_there.returncode == 2 and "fast-onnx@bs2.fp16" in measure_there.stderr

    # --prefix keeps a copy beside the measured device; the same file under the same names imports once
    harness("import", str(out), "--prefix", "vm-", env=cli_env)
    again_same = harness("import", str(out), "--prefix", "vm-", env=cli_env)
    assert "already imported" in again_same.stdout
    with Store(cli_env["HARNESS_STORE"]) as st:
        assert {"fast-onnx@bs2.fp16", "vm-fast-onnx@bs2.fp16"} <= set(st.latencies("nb201").device)
    bad = harness("import", str(out), "--prefix", "vm/", env=cli_env, check=False)
    assert bad.returncode == 2 and "--prefix 'vm/'" in bad.stderr and "letters, digits" in bad.stderr


@pytest.mark.parametrize("name, ok", [("gpu@bs8", True), ("gpu@bs32.224x224.fp16", True), ("gpu@int8", True),
                                      ("gpu@fp32", False), ("gpu@", False), ("@bs8", False), ("gpu@bs8@bs8", False),
                                      ("gpu@bs8;rm", False), ("gpu", True)])
def test_table_device_names_take_export_workload_labels_only(name, ok):
    from harness.results.importer import is_table_device_name

    assert is_table_device_name(name) is ok


@given(base=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True), bs=st.integers(1, 4096),
       shape=st.one_of(st.just(""), st.tuples(st.integers(1, 999), st.integers(1, 999)).map(lambda s: f"{s[0]}x{s[1]}")),
       precision=st.sampled_from(["fp32", "fp16", "int8"]), junk=st.text(max_size=12))
@settings(max_examples=200, derandomize=True, deadline=None)
def test_every_name_export_writes_imports_and_nothing_else_with_an_at(base, bs, shape, precision, junk):
    """Property: every device name `harness export` can write (``measured_name``) is accepted by import; a
    name with anything else after the ``@`` is refused, never raising."""
    from harness.results.importer import is_table_device_name
    from harness.results.store import measured_name, workload_label

    assert is_table_device_name(measured_name(base, bs, shape, precision))
    if junk != workload_label(bs, shape, precision) and not is_workload_label_like(junk):
        assert not is_table_device_name(f"{base}@{junk}")


def is_workload_label_like(text: str) -> bool:
    import re

    return re.fullmatch(r"(bs[0-9]+)?(\.?[0-9]+x[0-9]+)?(\.?(fp16|int8))?", text) is not None and text != ""


def test_measuring_a_workload_series_name_says_how(cli_env):
    from tests.conftest import harness

    out = harness("measure", "-d", "fast-onnx@bs8.fp16", "--arch", "0", env=cli_env, check=False)
    flat = " ".join(out.stderr.split())
    assert out.returncode == 2 and "is a workload of fast-onnx: measure it with -d fast-onnx and --batch-size" in flat
    assert "to define it" not in flat  # '@' is no profile name: never suggest creating one


def test_campaigns_name_the_workload_series_each_measured(cli_env):
    from tests.conftest import harness

    harness("measure", "-d", "fast-onnx", "--arch", "0", env=cli_env)
    harness("measure", "-d", "fast-onnx", "--arch", "0", "--precision", "fp16", "--batch-size", "2", env=cli_env)
    out = harness("campaigns", env={**cli_env, "COLUMNS": "160"})
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [r[1] for r in rows] == ["fast-onnx", "fast-onnx@bs2.fp16"], out.stdout


def test_another_workload_keeps_the_policy_as_written():
    # a full copy made every default look set: each campaign of another workload said "policy.timed_runs 50 is not
    # used here", which the same profile at its own workload never said
    p = parse_profile({**BASE, "runtime": {"name": "onnxruntime"}}, "p.yaml")
    q = p.with_workload(batch_size=4)
    assert q.policy == p.policy and "timed_runs" not in q.policy.model_fields_set
    fixed = parse_profile({**BASE, "runtime": {"name": "onnxruntime"}, "policy": {"timed_runs": 7}}, "p.yaml")
    assert fixed.with_workload(precision="fp16").policy == fixed.policy  # still the fixed-count policy it was


def test_fp16_on_onnxruntimes_x86_cpu_provider_is_said_to_run_in_fp32(cli_env):
    """On x86 onnxruntime's CPU provider folds an fp16 model to fp32: the campaign stored fp32 latencies under
    `@fp16` without a word (fp16 and fp32 measured alike, 0.461 vs 0.467 ms)."""
    import platform

    from harness.devices.preflight import precision_caveat
    from tests.conftest import harness

    onnx = parse_profile({"name": "o", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                          "workload": {"precision": "fp16"}}, "o")
    assert "computes in fp32" in precision_caveat(onnx, {"machine": "x86_64"})
    assert precision_caveat(onnx, {"machine": "aarch64"}) is None  # ARM64 builds have fp16 kernels
    fp32 = onnx.with_workload(precision="fp32")
    cuda = parse_profile({"name": "g", "connection": {"kind": "local"},
                          "runtime": {"name": "onnxruntime", "execution_provider": "CUDAExecutionProvider"},
                          "workload": {"precision": "fp16"}}, "g")
    assert precision_caveat(fp32, {"machine": "x86_64"}) is None and precision_caveat(cuda, {"machine": "x86_64"}) is None
    if platform.machine().lower() in ("x86_64", "amd64"):
        out = harness("measure", "-d", "fast-onnx", "--arch", "5", "--precision", "fp16", env=cli_env).stdout
        assert "no fp16 kernels" in " ".join(out.split())
