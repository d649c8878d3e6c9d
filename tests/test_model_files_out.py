"""`harness models`: the files written are the bytes a campaign measures, and they run in the real runtimes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.models.cache import sha256_file
from harness.results.store import Store
from tests.conftest import harness


def test_written_models_are_what_a_campaign_measured_and_they_run(cli_env, tmp_path):
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    harness("measure", "-d", "fast-onnx", "--arch", "77", env=cli_env)
    out = tmp_path / "files"
    res = harness("models", "-d", "fast-onnx,fast-tflite", "--arch", "77,0", "--out", str(out), env=cli_env)
    assert "wrote 4 file(s)" in " ".join(res.stdout.split())
    listing = pd.read_csv(out / "models.csv")
    assert sorted(listing.file) == sorted(["nb201-77-prune.onnx", "nb201-0-prune.onnx", "nb201-77-prune.tflite",
                                           "nb201-0-prune.tflite"])
    for r in listing.itertuples():
        assert sha256_file(out / r.file) == r.sha256
    with Store(cli_env["HARNESS_STORE"]) as st:
        measured = st.measurements("fast-onnx").model_digest.iloc[0]
    row = listing[(listing.nb201_index == 77) & (listing.format == "onnx")].iloc[0]
    assert row.model_digest == measured and row.device == "fast-onnx"  # the very model the campaign timed
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    sess = ort.InferenceSession(str(out / "nb201-77-prune.onnx"), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    onnx_out = sess.run(None, {inp.name: x if inp.shape[-1] == 3 else x.transpose(0, 3, 1, 2)})[0]
    interp = Interpreter(model_path=str(out / "nb201-77-prune.tflite"))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    tfl_out = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(onnx_out.reshape(-1), tfl_out.reshape(-1), rtol=1e-3, atol=1e-4)


def test_models_refuses_what_it_cannot_write(cli_env, tmp_path):
    (tmp_path / "afile").write_text("x")
    bad = harness("models", "--arch", "1", "--out", str(tmp_path / "afile"), env=cli_env, check=False)
    assert bad.returncode == 2 and "is a file; name a folder" in bad.stderr
    none = harness("models", "--out", str(tmp_path / "o"), env=cli_env, check=False)
    assert none.returncode == 2 and "exactly one of --sample N, --all, --arch, --arch-file" in " ".join(none.stderr.split())
    unknown = harness("models", "-d", "no-such-dev", "--arch", "1", env=cli_env, check=False)
    assert unknown.returncode == 2 and "no-such-dev" in unknown.stderr and "Traceback" not in unknown.stderr
    # a resolution the key already fixes: it wrote 128x128 files of a 208-px architecture, which measure refuses
    other = harness("models", "--space", "mbv2", "--sample", "1", "--input-shape", "128x128", "--out",
                    str(tmp_path / "m"), env=cli_env, check=False)
    assert other.returncode == 2 and "resolution in its architecture keys" in " ".join(other.stderr.split())
    assert not (tmp_path / "m").exists()


def test_a_name_clash_is_found_before_any_file_is_written(cli_env, devices_dir, tmp_path):
    """Two int8 profiles that differ only in calibration export different files under one name: refused, and the
    folder holds nothing half-written (two files were already there before)."""
    from tests.conftest import write_profile

    for name, seed in (("int8-a", 1), ("int8-b", 2)):
        write_profile(devices_dir, name, {"name": "tflite", "threads": 1},
                      workload={"precision": "int8", "calibration": {"samples": 2, "seed": seed}})
    out = tmp_path / "files"
    res = harness("models", "-d", "int8-a,int8-b", "--arch", "77", "--out", str(out), env=cli_env, check=False)
    assert res.returncode == 2 and "under one name" in " ".join(res.stderr.split())
    assert not out.exists() or not list(out.iterdir())


def test_models_csv_lists_the_folder_not_only_the_last_run(cli_env, tmp_path):
    out = tmp_path / "files"
    harness("models", "-d", "fast-onnx", "--arch", "77", "--out", str(out), env=cli_env)
    harness("models", "-d", "fast-onnx", "--arch", "0,77", "--out", str(out), env=cli_env)
    listing = pd.read_csv(out / "models.csv")
    assert sorted(listing.file) == ["nb201-0-prune.onnx", "nb201-77-prune.onnx"]  # 77 once, 0 added
