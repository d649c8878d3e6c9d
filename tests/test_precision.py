"""fp16 and int8 variants in both formats: they load, keep their precision, and compute what fp32 does.

Tolerances (stated, measured on random-weight networks with standard-normal inputs; error is the largest
absolute difference divided by the largest fp32 output magnitude):
  fp16: relative error <= 0.005 (observed <= 0.001 on NB201, FBNet, OFA-MBv3)
  int8: relative error <= 0.08 and cosine similarity >= 0.999 (observed <= 0.03 / >= 0.9998)
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter

from harness.devices.profile import Calibration
from harness.models import precision
from harness.models.cache import ModelCache
from harness.models.export_onnx import export_onnx
from harness.models.export_tflite import export_tflite
from harness.models.spaces import get_space

TOL = {"fp16": (0.005, 0.9999), "int8": (0.08, 0.999)}
CASES = [("nb201", "9930"), ("nb201", "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"),
         ("fbnet", None)]


def _graph(space_name: str, token: str | None):
    space = get_space(space_name)
    return space.build(space.parse(token) if token else space.sample(1, 3)[0])


def run_onnx(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.transpose(0, 3, 1, 2)})[0]


def run_tflite(path, x):
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


FORMATS = {"onnx": (export_onnx, run_onnx), "tflite": (export_tflite, run_tflite)}


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("prec", ["fp16", "int8"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{(c[1] or 'sample')[:6]}")
def test_precision_matches_fp32_within_tolerance(tmp_path, fmt, prec, case):
    g = _graph(*case)
    export, run = FORMATS[fmt]
    base, variant = tmp_path / f"m.{fmt}", tmp_path / f"m.{prec}.{fmt}"
    export(g, str(base), 0, 2)
    shutil.copy(base, variant)
    precision.convert(fmt, variant, prec, Calibration(samples=8, seed=1))
    x = np.random.default_rng(7).standard_normal((2, *g.input_shape)).astype(np.float32)
    y32, yq = run(base, x), run(variant, x)
    assert yq.shape == y32.shape and yq.dtype == np.float32  # float I/O in every variant
    rel = float(np.abs(yq - y32).max() / np.abs(y32).max())
    cos = float((yq * y32).sum() / np.linalg.norm(yq) / np.linalg.norm(y32))
    max_rel, min_cos = TOL[prec]
    assert rel <= max_rel and cos >= min_cos, (rel, cos)
    assert not np.array_equal(yq, y32)  # it really computed at another precision
    assert variant.stat().st_size < 0.6 * base.stat().st_size  # weights are 16 or 8 bits


def _tflite_model(path):
    return fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)


def test_tflite_fp16_has_half_weights_and_dequantize(tmp_path):
    path = tmp_path / "m.tflite"
    export_tflite(_graph("nb201", "9930"), str(path))
    precision.tflite_fp16(str(path))
    m = _tflite_model(path)
    sub = m.subgraphs[0]
    types = {t.type for t in sub.tensors}
    codes = [m.operatorCodes[o.opcodeIndex].builtinCode for o in sub.operators]
    n_half = sum(t.type == fb.TensorType.FLOAT16 for t in sub.tensors)
    assert fb.TensorType.FLOAT16 in types and codes.count(fb.BuiltinOperator.DEQUANTIZE) == n_half
    assert all(sub.tensors[o.inputs[0]].type == fb.TensorType.FLOAT16 for o, c in zip(sub.operators, codes)
               if c == fb.BuiltinOperator.DEQUANTIZE)


def test_tflite_int8_is_full_integer_with_per_channel_conv_weights(tmp_path):
    path = tmp_path / "m.tflite"
    export_tflite(_graph("fbnet", None), str(path))
    precision.tflite_int8(str(path), Calibration(samples=4))
    m = _tflite_model(path)
    sub = m.subgraphs[0]
    codes = [m.operatorCodes[o.opcodeIndex].builtinCode for o in sub.operators]
    assert codes[0] == fb.BuiltinOperator.QUANTIZE and codes[-1] == fb.BuiltinOperator.DEQUANTIZE
    floats = [t for t in sub.tensors if t.type == fb.TensorType.FLOAT32]
    assert len(floats) == 2  # only the float input and output of the model
    for op, code in zip(sub.operators, codes):
        if code in (fb.BuiltinOperator.CONV_2D, fb.BuiltinOperator.DEPTHWISE_CONV_2D):
            x, w, b = (sub.tensors[i] for i in op.inputs)
            assert x.type == w.type == fb.TensorType.INT8 and b.type == fb.TensorType.INT32
            channels = w.shape[3 if code == fb.BuiltinOperator.DEPTHWISE_CONV_2D else 0]
            assert len(w.quantization.scale) == channels and not np.any(w.quantization.zeroPoint)
            np.testing.assert_allclose(b.quantization.scale, x.quantization.scale[0] * w.quantization.scale,
                                       rtol=1e-6)


def test_onnx_variants_use_the_ecosystems_forms(tmp_path):
    g = _graph("nb201", "9930")
    for prec in ("fp16", "int8"):
        path = tmp_path / f"{prec}.onnx"
        export_onnx(g, str(path))
        precision.convert("onnx", path, prec, Calibration(samples=2))
        m = onnx.load(str(path))
        onnx.checker.check_model(m)
        assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        ops = {n.op_type for n in m.graph.node}
        if prec == "fp16":
            assert {i.data_type for i in m.graph.initializer if len(i.dims) == 4} == {onnx.TensorProto.FLOAT16}
        else:
            assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_calibration_is_seeded_and_changes_the_int8_file(tmp_path, cache_dir):
    g = _graph("nb201", "9930")
    cache = ModelCache(tmp_path / "cache")
    a = cache.get(g, "tflite", precision="int8", calibration=Calibration(samples=4, seed=0))
    again = ModelCache(tmp_path / "cache2").get(g, "tflite", precision="int8",
                                                calibration=Calibration(samples=4, seed=0))
    other = cache.get(g, "tflite", precision="int8", calibration=Calibration(samples=4, seed=1))
    assert a.path.read_bytes() == again.path.read_bytes()  # reproducible from the recorded calibration
    assert a.digest != other.digest and a.path.read_bytes() != other.path.read_bytes()
    fp32 = cache.get(g, "tflite")
    assert fp32.digest == ModelCache(cache_dir).get(g, "tflite").digest  # bs1 fp32 keys are unchanged


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_batch_computes_each_sample_like_batch_one(tmp_path, fmt):
    g = _graph("fbnet", None)
    export, run = FORMATS[fmt]
    export(g, str(tmp_path / "b1"), 0, 1)
    export(g, str(tmp_path / "b3"), 0, 3)
    x = np.random.default_rng(3).standard_normal((3, *g.input_shape)).astype(np.float32)
    y3 = run(tmp_path / "b3", x)
    assert y3.shape[0] == 3
    for i in range(3):
        np.testing.assert_allclose(y3[i:i + 1], run(tmp_path / "b1", x[i:i + 1]), rtol=1e-4, atol=1e-5)


def _optimised_ops(path, tmp_path) -> dict[str, int]:
    """The operators onnxruntime's CPU provider runs after its optimizer (what the local driver times)."""
    import collections

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def test_onnx_int8_is_the_recipe_its_runtime_fuses(tmp_path):
    """int8 activations (asymmetric) were exported for every runtime: onnxruntime's x86 CPU provider fuses no
    int8-activation QDQ group (QDQIsInt8Allowed is ARM-only), so 31 of 52 convolutions ran in float between
    Quantize/Dequantize nodes, slower than fp32; TensorRT refuses non-zero zero points."""
    from harness.devices.profile import parse_profile

    def profile(**runtime):
        return parse_profile({"name": "p", "connection": {"kind": "local"}, "runtime": runtime,
                              "workload": {"precision": "int8"}}, "p")

    assert profile(name="onnxruntime").int8_calibration().activations == "uint8"
    assert profile(name="trtexec").int8_calibration().activations == "int8-symmetric"
    assert profile(name="onnxruntime", execution_provider="TensorrtExecutionProvider").int8_calibration(
    ).activations == "int8-symmetric"
    assert profile(name="tflite").int8_calibration().label() == "random-n16-s0"  # LiteRT's scheme, label unchanged
    g = _graph("nb201", "9930")
    cache = ModelCache(tmp_path / "cache")
    cpu = cache.get(g, "onnx", precision="int8", calibration=profile(name="onnxruntime").int8_calibration())
    ops = _optimised_ops(cpu.path, tmp_path)
    assert ops["QLinearConv"] > 0 and ops["Conv"] == 0, ops  # every convolution in integer kernels
    trt = cache.get(g, "onnx", precision="int8", calibration=profile(name="trtexec").int8_calibration())
    zero_points = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(trt.path)).graph.initializer
                   if "zero_point" in i.name]
    assert zero_points and all(not z.any() for z in zero_points)  # symmetric: every zero point 0 (int32 biases too)
    assert {z.dtype for z in zero_points} <= {np.dtype(np.int8), np.dtype(np.int32)}
    assert len({cpu.digest, trt.digest}) == 2
    with pytest.raises(Exception, match="activations: uint8 applies to ONNX models"):
        parse_profile({"name": "p", "connection": {"kind": "local"}, "runtime": {"name": "tflite"},
                       "workload": {"precision": "int8", "calibration": {"activations": "uint8"}}}, "p")


def test_tflite_int8_ops_carry_the_versions_tensorflows_converter_writes(tmp_path):
    """Every op of the int8 file declared version 1 (float/uint8 semantics to a delegate that checks versions);
    TensorFlow's converter writes CONV_2D 3, DEPTHWISE_CONV_2D 3, FULLY_CONNECTED 4, ADD 2, MEAN 2, QUANTIZE 1."""
    for space in ("nb201", "mbv2"):
        g = _graph(space, "9930" if space == "nb201" else None)
        path = tmp_path / f"{space}.tflite"
        export_tflite(g, str(path))
        precision.convert("tflite", path, "int8", Calibration(samples=2))
        model = precision._load_tflite(str(path))
        names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
        versions = {names[oc.builtinCode or oc.deprecatedBuiltinCode]: oc.version for oc in model.operatorCodes}
        assert len(versions) == len(model.operatorCodes)  # one code per op kind, none left unused
        for op, v in versions.items():
            assert v == precision.INT8_OP_VERSIONS.get(op, 1), (space, op, v)
        assert versions["CONV_2D"] == 3 and versions["QUANTIZE"] == 1 and versions["DEQUANTIZE"] == 2
        x = np.random.default_rng(0).standard_normal((1, *g.input_shape)).astype(np.float32)
        assert np.isfinite(run_tflite(path, x)).all()  # LiteRT still runs it
