"""fp16 and int8 variants of exported fp32 models, in the form each runtime's users deploy.

ONNX uses the ecosystem's own tools: onnxconverter-common's ``float16`` pass (fp16 weights and
activations, float32 inputs/outputs so the same feeds work) and onnxruntime's static quantizer in
QDQ form (per-channel int8 weights, int8 activations with scales from calibration), which is what
TensorRT's and onnxruntime's int8 paths consume. TFLite has no converter without TensorFlow, so the
two TFLite variants are rewritten here on the flatbuffer, as TensorFlow's converter emits them:

- fp16: every float constant stored as FLOAT16 plus a DEQUANTIZE to float32 in front (the GPU
  delegate and XNNPACK fold these and run fp16 where the hardware can).
- int8 (full integer): every activation INT8 with per-tensor scale/zero point from the calibration
  ranges, conv/depthwise weights per-channel symmetric INT8, biases INT32 at input x weight scale,
  ops that cannot rescale (pooling, reshape, transpose) keep their input's parameters, and a QUANTIZE
  after the float input and a DEQUANTIZE before the float output (the converter's default I/O).

Calibration inputs are seeded standard-normal tensors of the model's input shape
(:class:`~harness.devices.profile.Calibration`); its label is stored with every int8 measurement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

import numpy as np

from harness.devices.profile import Calibration
from harness.errors import ExportError

PRECISION_VERSION = "precision-2"  # part of the cache key: a change here re-exports


def calibration_inputs(shape: tuple[int, ...], calibration: Calibration) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(calibration.seed)
    for _ in range(calibration.samples):
        yield rng.standard_normal(shape).astype(np.float32)


def for_format(fmt: str, calibration: Calibration | None) -> Calibration:
    """The calibration as ``fmt`` applies it (its cache key and export): LiteRT's int8 is its full-integer scheme
    whatever ``activations`` says; ONNX's ``auto`` without a profile to resolve it is onnxruntime's CPU recipe
    (uint8 activations): the same label must never name two recipes' files."""
    c = calibration or Calibration()
    if fmt == "tflite":
        return c.model_copy(update={"activations": "int8"})
    return c.model_copy(update={"activations": "uint8"}) if c.activations == "auto" else c


def convert(fmt: str, path: str | os.PathLike, precision: str, calibration: Calibration) -> None:
    """Rewrite the fp32 model at ``path`` in place at ``precision``."""
    if precision == "fp32":
        return
    fn = {("onnx", "fp16"): onnx_fp16, ("onnx", "int8"): onnx_int8,
          ("tflite", "fp16"): tflite_fp16, ("tflite", "int8"): tflite_int8}.get((fmt, precision))
    if fn is None:
        raise ExportError(f"no {precision} variant for format {fmt}")
    fn(str(path), calibration)


# --- ONNX -----------------------------------------------------------------------------------

def onnx_fp16(path: str, calibration: Calibration | None = None) -> None:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(path)
    with warnings.catch_warnings():  # "number truncated to 1e-07": expected of fp16, not the user's problem
        warnings.simplefilter("ignore")
        fp16 = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save_model(fp16, path)


def onnx_int8(path: str, calibration: Calibration) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = onnx.load(path)
    inp = model.graph.input[0]
    shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = ({inp.name: x} for x in calibration_inputs(shape, calibration))

        def get_next(self):
            return next(self._it, None)

    import onnxruntime

    # the quantizer's sessions warn in colour about initializers they drop ("Removing initializer ..."); this
    # process only exports models (timing runs in runner workers), so errors only
    onnxruntime.set_default_logger_severity(3)
    tmp = f"{path}.int8"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice about pre-processing on every call
    try:
        # activations as the runtime fuses them (Calibration.activations; auto without a profile: onnxruntime's
        # CPU recipe): uint8 (U8S8), or int8 asymmetric (the first recipe), or int8 symmetric (TensorRT)
        act = for_format("onnx", calibration).activations
        quantize_static(path, tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8 if act == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": act == "int8-symmetric", "WeightSymmetric": True})
        os.replace(tmp, path)
    finally:
        root.setLevel(level)
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- TFLite ---------------------------------------------------------------------------------

def _load_tflite(path: str):
    from ai_edge_litert import schema_py_generated as fb

    with open(path, "rb") as f:
        return fb.ModelT.InitFromPackedBuf(f.read(), 0)


def _save_tflite(model, path: str) -> None:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with open(path, "wb") as f:
        f.write(bytes(builder.Output()))


def _opcode(model, code: int, version: int = 1) -> int:
    from ai_edge_litert import schema_py_generated as fb

    for i, oc in enumerate(model.operatorCodes):
        if oc.builtinCode == code and oc.version == version:
            return i
    oc = fb.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _new_tensor(sub, model, name: str, shape, dtype: int, data: np.ndarray | None = None, quant=None) -> int:
    from ai_edge_litert import schema_py_generated as fb

    t = fb.TensorT()
    t.name, t.shape, t.type, t.buffer = name.encode(), np.asarray(shape, np.int32), dtype, 0
    if data is not None:
        buf = fb.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
    t.quantization = quant
    sub.tensors.append(t)
    return len(sub.tensors) - 1


def _op(model, code: int, inputs: list[int], outputs: list[int], version: int = 1):
    from ai_edge_litert import schema_py_generated as fb

    o = fb.OperatorT()
    o.opcodeIndex = _opcode(model, code, version)
    o.inputs, o.outputs = np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
    o.builtinOptionsType, o.builtinOptions = 0, None
    return o


def _is_const(model, t) -> bool:
    data = model.buffers[t.buffer].data if t.buffer else None
    return data is not None and len(data) > 0


def _const(model, t) -> np.ndarray | None:
    """The float32 data of a constant tensor, or None for activations."""
    from ai_edge_litert import schema_py_generated as fb

    if t.type != fb.TensorType.FLOAT32 or not t.buffer:
        return None
    data = model.buffers[t.buffer].data
    if data is None or len(data) == 0:
        return None
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32).reshape(t.shape)


def tflite_fp16(path: str, calibration: Calibration | None = None) -> None:
    """Float constants stored as FLOAT16, each with a DEQUANTIZE (version 3: fp16 input) in front."""
    from ai_edge_litert import schema_py_generated as fb

    model = _load_tflite(path)
    sub = model.subgraphs[0]
    if not sub.operators:  # a degenerate (constant) model: nothing is computed, so nothing to convert
        return
    deq = []
    for i in range(len(sub.tensors)):
        t = sub.tensors[i]
        data = _const(model, t)
        if data is None:
            continue
        half = _new_tensor(sub, model, f"{t.name.decode()}.fp16", t.shape, fb.TensorType.FLOAT16,
                           data.astype(np.float16))
        model.buffers[t.buffer].data = None  # the float32 tensor is now computed by DEQUANTIZE
        t.buffer = 0
        deq.append(_op(model, fb.BuiltinOperator.DEQUANTIZE, [half], [i], version=3))
    sub.operators = deq + list(sub.operators)
    _save_tflite(model, path)


def _quant(scale, zero_point, dim: int = 0):
    from ai_edge_litert import schema_py_generated as fb

    q = fb.QuantizationParametersT()
    q.scale = np.atleast_1d(np.asarray(scale, np.float32))
    q.zeroPoint = np.atleast_1d(np.asarray(zero_point, np.int64))
    q.quantizedDimension = dim
    return q


def _activation_params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 scale and zero point for a range that includes 0 (as TFLite requires)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-6:  # a constant-zero tensor (NB201's "none" edge): any scale works, keep it ordinary
        hi = 1.0
    scale = (hi - lo) / 255.0
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zp


@contextlib.contextmanager
def native_stderr_quiet():
    """Silence what native code writes to file descriptor 2 (C++ INFO lines no Python logger controls) while
    the block runs; Python's own sys.stderr is left alone."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _ranges(path: str, calibration: Calibration) -> dict[int, tuple[float, float]]:
    """min/max of every tensor over the calibration inputs, from the fp32 model itself."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # preserving all tensors is what calibration is for
        warnings.simplefilter("ignore")
        interp = Interpreter(model_path=path, experimental_preserve_all_tensors=True, num_threads=1)
    with native_stderr_quiet():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" from C++
        interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    tensors = [d["index"] for d in interp.get_tensor_details()]
    ranges: dict[int, tuple[float, float]] = {}
    for x in calibration_inputs(tuple(inp["shape"]), calibration):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        for i in tensors:
            try:
                v = interp.get_tensor(i)
            except ValueError:
                continue
            if v.dtype != np.float32 or v.size == 0:
                continue
            lo, hi = float(v.min()), float(v.max())
            old = ranges.get(i)
            ranges[i] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
    return ranges


def tflite_int8(path: str, calibration: Calibration) -> None:
    """Full-integer int8 with float I/O (QUANTIZE in, DEQUANTIZE out), scales from calibration."""
    from ai_edge_litert import schema_py_generated as fb

    B = fb.BuiltinOperator
    if not _load_tflite(path).subgraphs[0].operators:  # a degenerate (constant) model: nothing to quantize
        return
    ranges = _ranges(path, calibration)
    model = _load_tflite(path)
    sub = model.subgraphs[0]
    code_of = [oc.builtinCode if oc.builtinCode else oc.deprecatedBuiltinCode for oc in model.operatorCodes]
    weighted = {B.CONV_2D: 0, B.DEPTHWISE_CONV_2D: 3, B.FULLY_CONNECTED: 0}  # op -> per-channel axis
    same_params = {B.AVERAGE_POOL_2D, B.RESHAPE, B.TRANSPOSE, B.MAX_POOL_2D}
    params: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # tensor -> (scales, zero points)

    def quantize_activation(i: int) -> None:
        if i in params:
            return
        lo, hi = ranges.get(i, (0.0, 0.0))
        s, z = _activation_params(lo, hi)
        params[i] = (np.array([s], np.float32), np.array([z], np.int64))
        t = sub.tensors[i]
        t.type, t.quantization = fb.TensorType.INT8, _quant(s, z)

    def set_data(t, arr: np.ndarray) -> None:
        model.buffers[t.buffer].data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8)

    # float input -> QUANTIZE -> int8 copy; the float input keeps its place as the model's input
    in_f = int(sub.inputs[0])
    in_q = _new_tensor(sub, model, "input_int8", sub.tensors[in_f].shape, fb.TensorType.INT8)
    ranges[in_q] = ranges.get(in_f, (-4.0, 4.0))
    quantize_activation(in_q)
    for op in sub.operators:
        op.inputs = np.where(op.inputs == in_f, in_q, op.inputs).astype(np.int32)
    out_q = int(sub.outputs[0])

    for op in sub.operators:
        code = code_of[op.opcodeIndex]
        ins = [int(i) for i in op.inputs]
        for i in ins:
            if i >= 0 and not _is_const(model, sub.tensors[i]):
                quantize_activation(i)
        if code in weighted:
            x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else -1
            wt = sub.tensors[w]
            data = _const(model, wt)
            axis = weighted[code] if code != B.FULLY_CONNECTED else 0
            moved = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
            ws = np.maximum(np.abs(moved).max(axis=1), 1e-12) / 127.0
            shape = [1] * data.ndim
            shape[axis] = -1
            q = np.clip(np.round(data / ws.reshape(shape)), -127, 127).astype(np.int8)
            set_data(wt, q)
            wt.type, wt.quantization = fb.TensorType.INT8, _quant(ws, np.zeros_like(ws, np.int64), axis)
            if b >= 0:
                bt = sub.tensors[b]
                bias = _const(model, bt)
                bs = (params[x][0][0] * ws).astype(np.float32)
                set_data(bt, np.round(bias / bs).astype(np.int32))
                bt.type, bt.quantization = fb.TensorType.INT32, _quant(bs, np.zeros_like(bs, np.int64), 0)
        else:
            for i in ins:
                t = sub.tensors[i] if i >= 0 else None
                data = _const(model, t) if t is not None else None
                if data is None:
                    continue
                s, z = _activation_params(data.min(), data.max())
                set_data(t, np.clip(np.round(data / s) + z, -128, 127).astype(np.int8))
                t.type, t.quantization = fb.TensorType.INT8, _quant(s, z)
                params[i] = (np.array([s], np.float32), np.array([z], np.int64))
        for o in (int(i) for i in op.outputs):
            if code in same_params:
                s, z = params[ins[0]]
                params[o] = (s, z)
                sub.tensors[o].type, sub.tensors[o].quantization = fb.TensorType.INT8, _quant(s, z)
            else:
                quantize_activation(o)

    out_f = _new_tensor(sub, model, "output", sub.tensors[out_q].shape, fb.TensorType.FLOAT32)
    sub.tensors[out_q].name = b"output_int8"
    sub.operators = ([_op(model, B.QUANTIZE, [in_f], [in_q], version=1)] + list(sub.operators)
                     + [_op(model, B.DEQUANTIZE, [out_q], [out_f], version=2)])
    sub.outputs = np.array([out_f], np.int32)
    leftover = [sub.tensors[i].name.decode() for i in range(len(sub.tensors))
                if sub.tensors[i].type == fb.TensorType.FLOAT32 and i not in (in_f, out_f)]
    if leftover:
        raise ExportError(f"int8: tensors left in float32: {', '.join(leftover[:5])}")
    _int8_op_versions(model, sub, params)
    _save_tflite(model, path)


# what TensorFlow's converter writes for an op with int8 inputs (tensorflow/lite/tools/versioning/op_version.cc):
# version 1 means float or uint8 to a runtime or delegate that checks versions (LiteRT's own kernels do not)
INT8_OP_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "ADD": 2, "SUB": 2, "MUL": 2,
                    "AVERAGE_POOL_2D": 2, "MAX_POOL_2D": 2, "MEAN": 2, "PAD": 2, "PADV2": 2, "CONCATENATION": 2,
                    "LOGISTIC": 2, "TANH": 2, "RELU": 2, "RELU6": 2, "SOFTMAX": 2, "TRANSPOSE": 2, "MAXIMUM": 2,
                    "MINIMUM": 2, "QUANTIZE": 1, "DEQUANTIZE": 2}


def _int8_op_versions(model, sub, params: dict) -> None:
    """Give every operator of the int8 graph the version TensorFlow's converter gives it: each (code, version)
    pair its own operator code, as the converter writes them."""
    from ai_edge_litert import schema_py_generated as fb

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    for op in sub.operators:
        oc = model.operatorCodes[op.opcodeIndex]
        code = oc.builtinCode if oc.builtinCode else oc.deprecatedBuiltinCode
        name = names.get(code, "")
        version = INT8_OP_VERSIONS.get(name, oc.version)
        if name == "FULLY_CONNECTED" and (len(op.inputs) < 3 or op.inputs[2] < 0):
            version = 6  # no bias
        if name == "MUL":  # a rescale >= 1 needs the kernel of version 3
            a, b, out = (params.get(int(i)) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
            if a is not None and b is not None and out is not None and a[0][0] * b[0][0] / out[0][0] >= 1.0:
                version = 3
        op.opcodeIndex = _opcode(model, code, version)
    used = sorted({int(op.opcodeIndex) for op in sub.operators})  # the codes left behind at version 1 go
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for op in sub.operators:
        op.opcodeIndex = remap[int(op.opcodeIndex)]
