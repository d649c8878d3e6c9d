"""One architecture description, two formats: ONNX and TFLite must compute the same function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter

from harness.models.cache import ModelCache, sha256_file
from harness.models.export_onnx import to_onnx
from harness.models.export_tflite import to_tflite
from harness.models.graph import Graph
from harness.models.passes import prepare
from harness.models.spaces import get_space

ARCHS = ["0", "1", "3", "6", "9930", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
         "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|"]


def run_both(graph: Graph, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sess = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    y_onnx = sess.run(None, {"input": x.transpose(0, 3, 1, 2)})[0]
    interp = Interpreter(model_content=to_tflite(graph))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return y_onnx, interp.get_tensor(interp.get_output_details()[0]["index"])


@pytest.mark.parametrize("token", ARCHS)
def test_onnx_and_tflite_agree(token):
    space = get_space("nb201")
    g = space.build(space.parse(token))
    x = np.random.default_rng(1).standard_normal((1, 32, 32, 3)).astype(np.float32)
    y_onnx, y_tfl = run_both(g, x)
    assert y_onnx.shape == y_tfl.shape == (1, 10)
    scale = max(1.0, float(np.abs(y_onnx).max()))
    np.testing.assert_allclose(y_tfl, y_onnx, atol=1e-4 * scale, rtol=1e-3)


def test_graph_features_exported_correctly():
    """Ops the NB201 builder does not reach: stride-2 SAME on odd sizes, grouped/depthwise conv, bias."""
    g = Graph("features", (15, 15, 8))
    x = g.conv("input", 8, 3, stride=2, groups=8)              # depthwise, SAME with odd input
    x = g.conv(g.relu(x), 16, 5, stride=2, groups=2, bias=True, bn=False)  # grouped
    x = g.avgpool(x, 3, 2, "same")
    x = g.conv(x, 12, 2, padding="valid")                     # 2x2 -> 1x1, no BatchNorm
    g.dense(x, 7)                                              # dense on a 4-D 1x1 tensor
    x_in = np.random.default_rng(2).standard_normal((1, 15, 15, 8)).astype(np.float32)
    y_onnx, y_tfl = run_both(g, x_in)
    np.testing.assert_allclose(y_tfl.reshape(-1), y_onnx.reshape(-1), atol=1e-4, rtol=1e-3)


def test_onnx_model_is_valid_and_holds_the_graphs_weights():
    space = get_space("nb201")
    g = space.build(space.parse("9930"))
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    n_weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer if len(t.dims))
    # exported = trainable params with BatchNorm folded: each BN's 2*C becomes a C-sized bias
    bn_channels = sum(n.attrs["cout"] for n in g.nodes if n.op == "conv" and n.attrs["bn"])
    assert n_weights == g.param_count() - bn_channels


def test_cache_exports_once_and_keys_on_content(tmp_path):
    space = get_space("nb201")
    cache = ModelCache(tmp_path)
    g = space.build(space.parse("42"))
    first = cache.get(g, "tflite")
    second = cache.get(space.build(space.parse("42")), "tflite")
    assert first.exported and not second.exported and first.path == second.path
    assert first.path.read_bytes() == to_tflite(prepare(g, "prune"))  # the default graph mode
    assert cache.get(g, "tflite", "keep").path.read_bytes() == to_tflite(g)
    assert cache.path_for(g, "tflite", "keep") != first.path
    bigger = cache.get(space.build(space.parse("42"), input_shape=(64, 64, 3)), "tflite")
    assert bigger.path != first.path
    assert cache.get(g, "onnx").path.suffix == ".onnx"
    assert ModelCache(tmp_path, seed=1).path_for(g, "tflite") != first.path
    assert not list(tmp_path.rglob(".tmp-*")), "no temp files left behind"


@pytest.mark.parametrize("damage", ["another model copied over it", "truncated"])
def test_a_cached_file_changed_on_disk_is_exported_again_not_measured(tmp_path, damage):
    """The cache served whatever bytes sat at a key: 8348's slot holding 11953's model was measured as 8348."""
    space = get_space("nb201")
    cache = ModelCache(tmp_path)
    g = space.build(space.parse("8348"))
    good = cache.get(g, "tflite").path.read_bytes()
    other = cache.get(space.build(space.parse("11953")), "tflite").path
    slot = cache.path_for(g, "tflite")
    slot.write_bytes(other.read_bytes() if damage.startswith("another") else good[:1000])
    again = cache.get(g, "tflite")
    assert again.repaired and again.exported and again.path == slot and slot.read_bytes() == good
    assert not cache.get(g, "tflite").exported  # intact again: served


def test_a_cached_file_without_its_record_or_with_another_files_is_exported_again(tmp_path):
    """A missing record blessed whatever bytes were there (a truncated file failed at every rerun); a file swapped
    together with its record was measured as the other architecture's model."""
    space = get_space("nb201")
    cache = ModelCache(tmp_path)
    g1, g2 = space.build(space.parse("42")), space.build(space.parse("4242"))
    a, b = cache.get(g1, "onnx"), cache.get(g2, "onnx")
    good_a, good_b = a.path.read_bytes(), b.path.read_bytes()
    side = a.path.with_name(a.path.name + ".sha256")
    assert side.read_text() == f"{sha256_file(a.path)}  {a.path.name}\n"  # sha256sum -c reads it
    side.unlink()
    a.path.write_bytes(good_a[:1000])  # truncated, and no record to tell
    again = cache.get(g1, "onnx")
    assert again.repaired and again.path.read_bytes() == good_a and side.exists()
    for suffix in ("", ".sha256"):  # swap the two files together with their records
        pa, pb = Path(str(a.path) + suffix), Path(str(b.path) + suffix)
        tmp = pa.with_name("swap")
        pa.rename(tmp), pb.rename(pa), tmp.rename(pb)
    assert cache.get(g1, "onnx").repaired and a.path.read_bytes() == good_a
    assert cache.get(g2, "onnx").repaired and b.path.read_bytes() == good_b
    assert cache.verified(a.path) and not cache.verified(tmp_path / "nothing.onnx")


def test_export_is_fast_enough_to_not_dominate_a_campaign():
    """Direct construction: well under a second per model even for the largest NB201 network."""
    import time

    space = get_space("nb201")
    g = space.build(space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|"
                                "nor_conv_3x3~1|nor_conv_3x3~2|"))
    t = time.perf_counter()
    to_tflite(g)
    to_onnx(g)
    assert time.perf_counter() - t < 5.0  # generous bound; the figure itself is in benchmarks/export.py


def mobile_ops_graph(act: str) -> Graph:
    """Every op MobileNetV2/V3 need: fused and unfused activations, squeeze-and-excitation (keep-dims
    mean, 1x1 convs with bias, channel-wise multiply), a same-shape multiply, the MBv3 head."""
    g = Graph(f"mobile_ops_{act}", (19, 19, 8))
    x = g.conv("input", 16, 3, stride=2, act=act)                     # stem, odd input
    x = g.conv(x, 16, 5, groups=16, act=act)                          # depthwise + activation
    s = g.global_avgpool(x, keepdims=True)                            # SE: MEAN keep_dims
    s = g.conv(s, 8, 1, bn=False, bias=True, act="relu")
    s = g.conv(s, 16, 1, bn=False, bias=True, act="hsigmoid")
    x = g.mul(x, s)                                                   # channel-wise gating
    y = g.conv(x, 16, 1, act="hsigmoid")
    x = g.mul(x, y)                                                   # same-shape product
    x = g.conv(x, 24, 1, act="relu6")
    x = g.global_avgpool(x, keepdims=True)
    x = g.conv(x, 32, 1, bn=False, act="hswish")                      # head conv on the 1x1 map
    g.dense(x, 10)
    return g


@pytest.mark.parametrize("act", ["relu6", "hswish", "hsigmoid"])
def test_mobile_ops_export_identically(act):
    g = mobile_ops_graph(act)
    x = 3 * np.random.default_rng(4).standard_normal((1, 19, 19, 8)).astype(np.float32)  # reach every branch
    y_onnx, y_tfl = run_both(g, x)
    assert y_onnx.shape == y_tfl.shape == (1, 10) and np.isfinite(y_onnx).all() and y_onnx.std() > 1e-3
    np.testing.assert_allclose(y_tfl, y_onnx, atol=1e-5, rtol=1e-4)
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 13, "h-swish is x * HardSigmoid(x): no opset 14 needed"


def test_mobile_ops_use_the_converters_builtins():
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(to_tflite(mobile_ops_graph("hswish")), 0)
    codes = {c.builtinCode for c in model.operatorCodes}
    assert {fb.BuiltinOperator.HARD_SWISH, fb.BuiltinOperator.MEAN, fb.BuiltinOperator.MUL,
            fb.BuiltinOperator.ADD, fb.BuiltinOperator.DEPTHWISE_CONV_2D} <= codes
    ops = [n.op_type for n in to_onnx(mobile_ops_graph("relu6")).graph.node]
    assert "Clip" in ops and "HardSigmoid" in ops and "GlobalAveragePool" in ops


def test_new_ops_leave_existing_graphs_and_fingerprints_unchanged():
    """No default attributes were added: graphs keep their fingerprints (NB201's changed once, on purpose, in
    exporter version 2: every 'none' edge is x*0 and every edge its own ReLU, as PyTorch builds the cell)."""
    nb, fbn = get_space("nb201"), get_space("fbnet")
    assert nb.build(nb.parse("9930")).fingerprint() == \
        "1536afd4fcd4f01d7e68c73dd4dc24453e09eb2f271d874bd8210bac7bdb28ee"
    assert fbn.build(fbn.parse("7-8-1-8-4-8-8-8-7-4-1-4-7-3-2-7-3-2-4-2-4-5")).fingerprint() == \
        "7f1d837f1f1f0463fcb8e33eaea70049a0c9089d715d158fff049a9f032527db"
    with pytest.raises(ValueError, match="activation must be None or one of"):
        Graph("bad", (8, 8, 3)).conv("input", 4, 3, act="gelu")
    g = Graph("bad", (8, 8, 4))
    with pytest.raises(ValueError, match="mul: scale shape"):
        g.mul("input", g.conv("input", 2, 1))


def test_onnx_export_needs_no_litert(tmp_path):
    """A GPU box with onnxruntime-gpu and no LiteRT (as the H200 image was) exports ONNX: each format's module
    is imported only when that format is used."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['ai_edge_litert'] = None\n"  # import ai_edge_litert now fails
            "from harness.models.cache import ModelCache\nfrom harness.models.spaces import get_space\n"
            "sp = get_space('nb201'); art = ModelCache(sys.argv[1]).get(sp.build(sp.parse('0')), 'onnx')\n"
            "assert art.path.exists() and 'harness.models.export_tflite' not in sys.modules\n"
            "try:\n    ModelCache(sys.argv[1]).get(sp.build(sp.parse('0')), 'tflite')\n"
            "except ImportError:\n    print('tflite needs litert')\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "tflite needs litert" in out.stdout


def test_export_keeps_the_accuracies_so_a_round_trip_loses_nothing(tmp_path, cli_env):
    import pandas as pd

    from tests.conftest import harness

    (tmp_path / "t.csv").write_text("nb201_index,dev_ms,acc_test\n1,1.5,70.5\n2,2.5,71.25\n3,3.5,\n")
    (tmp_path / "acc.csv").write_text("nb201_index,acc_other\n1,10\n9,11\n")
    a = {**cli_env, "HARNESS_STORE": str(tmp_path / "a.db")}
    harness("import", str(tmp_path / "t.csv"), env=a)
    harness("import", str(tmp_path / "acc.csv"), env=a)
    harness("export", "-o", str(tmp_path / "out.csv"), env=a)
    out = pd.read_csv(tmp_path / "out.csv")
    assert out.acc_test.tolist()[:2] == [70.5, 71.25] and out.acc_other.tolist()[0] == 10
    b = {**cli_env, "HARNESS_STORE": str(tmp_path / "b.db")}
    harness("import", str(tmp_path / "out.csv"), env=b)
    harness("export", "-o", str(tmp_path / "again.csv"), env=b)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again.csv"), out)
