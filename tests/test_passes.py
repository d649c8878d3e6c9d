"""Graph passes (harness.models.passes): each pass on small graphs, the NB201 cases of issue 12, and a
property test that the optimised graph computes what the graph as built computes, through onnxruntime
and LiteRT."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError
from harness.models import passes
from harness.models.evaluate import forward
from harness.models.export_onnx import to_onnx
from harness.models.export_tflite import to_tflite
from harness.models.graph import Graph
from harness.models.spaces import get_space
from harness.models.spaces.nb201 import arch_str

NB201 = get_space("nb201")
SHAPE = (6, 6, 4)


def run_onnx(g: Graph, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    s = ort.InferenceSession(to_onnx(g).SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = s.run(None, {"input": x.transpose(2, 0, 1)[None]})[0]
    return out.reshape(-1) if out.ndim == 2 else out[0].transpose(1, 2, 0)


def run_tflite(g: Graph, x: np.ndarray) -> np.ndarray:
    it = Interpreter(model_content=to_tflite(g), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x[None])
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])
    return out.reshape(-1) if out.ndim == 2 else out[0]


def ops(g: Graph) -> dict[str, int]:
    return passes.describe(g)


def nb201(ops6: list[str], shape=(32, 32, 3)) -> Graph:
    return NB201.build(NB201.parse(arch_str(ops6)), input_shape=shape)


# --- constant propagation -------------------------------------------------------------------

def test_adding_zero_is_removed_and_zero_times_anything_is_zero():
    g = Graph("t", SHAPE)
    a = g.conv("input", 4, 3)
    z = g.zero(a)
    s = g.add([a, z])  # a + 0 -> a
    m = g.mul(s, g.zero(s))  # s * 0 -> 0, then s + 0 -> s
    g.add([s, m])
    out = passes.fold_constants(g)
    assert ops(passes.eliminate_dead(out)) == {"conv": 1}
    assert out.output == a


def test_conv_of_zero_becomes_its_bias_as_one_constant_tensor():
    g = Graph("t", SHAPE)
    x = g.conv("input", 4, 3)
    c = g.conv(g.relu(g.zero(x)), 4, 3)  # conv(relu(0)) + BN = the BN shift everywhere
    g.add([x, c])
    out = passes.optimise(g)
    assert ops(out) == {"conv": 1, "const": 1, "add": 1}
    x_in = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_allclose(forward(out, x_in), forward(g, x_in), rtol=1e-5, atol=1e-6)


def test_bias_free_conv_of_zero_stays_zero():
    g = Graph("t", SHAPE)
    x = g.conv("input", 4, 3)
    g.add([x, g.conv(g.zero(x), 4, 1, bn=False)])
    assert ops(passes.optimise(g)) == {"conv": 1}


def test_constant_network_is_degenerate_and_both_runtimes_load_it():
    g = nb201(["none"] * 6)
    assert passes.is_degenerate(g)
    out = passes.optimise(g)
    assert ops(out) == {"const": 1} and passes.is_degenerate(out) and out.param_count() == 0
    x = np.random.default_rng(1).standard_normal((32, 32, 3)).astype(np.float32)
    ref = run_onnx(g, x)  # the PyTorch-style graph, computed in full
    np.testing.assert_allclose(run_onnx(out, x), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_tflite(out, x), ref, rtol=1e-5, atol=1e-6)
    assert passes.is_degenerate(nb201(["none"] * 5 + ["nor_conv_3x3"]))  # conv(node 2 = 0): a constant
    assert not passes.is_degenerate(nb201(["none"] * 3 + ["nor_conv_3x3"] + ["none"] * 2))


def test_empty_network_exports_an_identity():
    g = Graph("t", SHAPE)
    g.add([g.zero("input"), "input"])  # x + 0*x = x: nothing left to compute
    out = passes.optimise(g)
    assert out.nodes == [] and out.output == "input" and passes.is_degenerate(out)
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_array_equal(run_onnx(out, x), x)
    np.testing.assert_array_equal(run_tflite(out, x), x)


# --- dead-node elimination ------------------------------------------------------------------

def test_dead_branch_is_removed_and_not_counted():
    g = Graph("t", SHAPE)
    x = g.conv("input", 4, 3)
    g.conv(g.relu(x), 4, 3)  # feeds nothing
    y = g.conv(x, 8, 1)
    g.output = y
    out = passes.eliminate_dead(g)
    assert ops(out) == {"conv": 2} and out.output == y
    assert out.param_count() < g.param_count() and out.macs() < g.macs()


def test_nb201_issue_architecture_keeps_7_convs_of_52():
    """Node 1 feeds only 'none' edges: its convs are dead (issue 12: 52 CONV_2D exported, converter keeps 7)."""
    g = nb201(["none", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "none"])
    out = passes.prepare(g, "prune")
    assert ops(g)["conv"] == 52 and ops(out)["conv"] == 7
    assert out.param_count() == 73_306 and g.param_count() > 500_000
    assert passes.prepare(g, "keep") is g


# --- merging identical ops ------------------------------------------------------------------

def test_identical_weightless_ops_on_the_same_input_are_merged():
    g = Graph("t", SHAPE)
    x = g.conv("input", 4, 3)
    p1, p2 = g.avgpool(x, 3, 1, "same"), g.avgpool(x, 3, 1, "same")
    p3 = g.avgpool(x, 3, 1, "valid")  # other attributes: not the same op
    r1, r2 = g.relu(x), g.relu(x)
    c1, c2 = g.conv(r1, 4, 1), g.conv(r2, 4, 1)  # own weights: never merged
    s = g.add([g.add([p1, c1]), g.add([c2, p2])])
    last = g.add([s, g.add([p2, c1])])  # p1 + c1 again (p2 is p1): merged too
    g.add([g.conv(p3, 4, 3, padding="valid"), g.conv(last, 4, 5, padding="valid")])
    out = passes.merge_identical(g)
    assert ops(out)["avgpool"] == 2 and ops(out)["relu"] == 1 and ops(out)["conv"] == ops(g)["conv"] == 5
    assert ops(out)["add"] == ops(g)["add"] - 1


def test_nb201_all_avgpool_and_all_skip_share_ops_as_the_converter():
    """Issue 12: 92 vs 47 AVERAGE_POOL_2D for all-avgpool, 48 vs 33 ADD for all-skip."""
    def tflite_ops(g: Graph) -> dict[str, int]:
        from ai_edge_litert import schema_py_generated as fb

        m = fb.ModelT.InitFromPackedBuf(to_tflite(g), 0)
        names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
        hist: dict[str, int] = {}
        for o in m.subgraphs[0].operators:
            name = names[m.operatorCodes[o.opcodeIndex].builtinCode]
            hist[name] = hist.get(name, 0) + 1
        return hist

    pools = nb201(["avg_pool_3x3"] * 6)
    assert tflite_ops(pools)["AVERAGE_POOL_2D"] == 92
    assert tflite_ops(passes.optimise(pools))["AVERAGE_POOL_2D"] == 47
    skips = nb201(["skip_connect"] * 6)
    assert tflite_ops(skips)["ADD"] == 48
    assert tflite_ops(passes.optimise(skips))["ADD"] == 33
    convs = passes.optimise(nb201(["nor_conv_3x3"] * 6))
    assert tflite_ops(convs)["RELU"] == 2  # issue 12: 50 RELU before, 2 for the converter


# --- activation fusion ----------------------------------------------------------------------

def test_relu_fuses_into_its_only_producer_and_not_otherwise():
    g = Graph("t", SHAPE)
    a = g.conv("input", 4, 3)
    ra = g.relu(a)  # a is used only here: fused into the conv
    b = g.conv(ra, 4, 3)
    rb = g.relu(b)  # b is also added below: the ReLU stays
    s = g.add([rb, b])
    p = g.avgpool(g.conv(g.relu(s), 4, 1), 3, 1, "same")  # s is used only by this ReLU: fused into the add
    g.relu(p)  # fused into the pool (TFLite AVERAGE_POOL_2D has a fused activation too)
    out = passes.fuse_activations(g)
    by_name = {n.name: n for n in out.nodes}
    assert by_name[a].attrs.get("act") == "relu" and "act" not in by_name[b].attrs
    assert by_name[s].attrs.get("act") == by_name[p].attrs.get("act") == "relu"
    assert ops(out)["relu"] == 1 and out.output == p
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_allclose(run_tflite(out, x), run_onnx(g, x), rtol=1e-4, atol=1e-5)
    onnx_ops = [n.op_type for n in to_onnx(out).graph.node]
    assert onnx_ops.count("Relu") == 4  # ONNX keeps separate nodes (onnxruntime fuses at load)


def test_fbnet_is_already_what_a_converter_exports():
    fb = get_space("fbnet")
    g = fb.build(fb.sample(1, 0)[0])
    out = passes.optimise(g)
    assert ops(out) == ops(g) and out.param_count() == g.param_count()


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(HarnessError, match="graph mode 'fold' is not one of prune, keep"):
        passes.prepare(nb201(["none"] * 6), "fold")


# --- property: the optimised graph computes the same function -------------------------------

OPS = ("conv", "conv_relu", "relu", "zero", "pool", "add", "mul", "affine", "conv_nobias")


@st.composite
def random_graphs(draw) -> Graph:
    g = Graph("random", SHAPE)
    tensors = ["input"]
    for _ in range(draw(st.integers(1, 10))):
        op = draw(st.sampled_from(OPS))
        x = draw(st.sampled_from(tensors))
        if op == "conv":
            y = g.conv(x, 4, draw(st.sampled_from([1, 3])))
        elif op == "conv_relu":
            y = g.conv(x, 4, 3, act="relu")
        elif op == "conv_nobias":
            y = g.conv(x, 4, 1, bn=False)
        elif op == "relu":
            y = g.relu(x)
        elif op == "zero":
            y = g.zero(x)
        elif op == "pool":
            y = g.avgpool(x, 3, 1, "same")
        elif op == "affine":
            y = g.affine(x)
        elif op == "add":
            y = g.add([x, draw(st.sampled_from(tensors))])
        else:
            y = g.mul(x, draw(st.sampled_from(tensors)))
        tensors.append(y)
    g.output = draw(st.sampled_from(tensors[1:]))
    if draw(st.booleans()):
        g.dense(g.global_avgpool(g.output), 3)
    return g


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=random_graphs(), seed=st.integers(0, 2**16))
def test_optimised_graph_computes_the_same_outputs(g, seed):
    x = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
    ref = run_onnx(g, x)
    out = passes.optimise(g)
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(run_onnx(out, x), ref, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(run_tflite(out, x), ref, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(forward(out, x), ref, rtol=1e-4, atol=1e-5 * scale)
    assert out.param_count() <= g.param_count() and len(out.nodes) <= len(g.nodes)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, 15624), seed=st.integers(0, 2**16))
def test_optimised_nb201_computes_the_same_outputs(index, seed):
    g = NB201.build(NB201.parse(str(index)), input_shape=(8, 8, 3))
    x = np.random.default_rng(seed).standard_normal((8, 8, 3)).astype(np.float32)
    ref = run_onnx(g, x)
    out = passes.prepare(g, "prune")
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(run_onnx(out, x), ref, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(run_tflite(out, x), ref, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("batch,precision", [(2, "fp32"), (2, "int8"), (1, "fp16")])
def test_folded_models_export_at_any_batch_and_precision(tmp_path, fmt, batch, precision):
    """Constant tensors and constant outputs (degenerate) keep working with device classes' batch/precision."""
    from harness.models.cache import ModelCache

    cache = ModelCache(tmp_path)
    for ops6 in (["none"] * 6, ["none", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "none"]):
        g = nb201(ops6, shape=(8, 8, 3))
        assert ops(passes.optimise(g)).get("const")
        path = str(cache.get(g, fmt, batch=batch, precision=precision).path)
        x = np.random.default_rng(4).standard_normal((batch, 8, 8, 3)).astype(np.float32)
        if fmt == "onnx":
            out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
                None, {"input": x.transpose(0, 3, 1, 2)})[0]
        else:
            it = Interpreter(model_path=path, num_threads=1)
            it.allocate_tensors()
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            out = it.get_tensor(it.get_output_details()[0]["index"])
        assert out.shape == (batch, 10) and np.isfinite(out).all()
