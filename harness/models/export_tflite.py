"""Graph -> TFLite flatbuffer, written directly with the TFLite schema's object API.

The schema bindings ship in ``ai-edge-litert``, so exporting needs neither TensorFlow nor a
converter run (a Keras -> TFLite conversion costs 3-9 s per model; this costs milliseconds).
The operators are the builtins TensorFlow's converter emits for the same network: CONV_2D (BatchNorm
folded, RELU/RELU6 fused), DEPTHWISE_CONV_2D, RELU, ADD, MUL, AVERAGE_POOL_2D, MEAN (keep_dims for
squeeze-and-excitation), FULLY_CONNECTED, HARD_SWISH; hard-sigmoid is ADD(+3, fused RELU6) then MUL(1/6),
as the converter lowers Keras' hard_sigmoid. Layout NHWC.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

from harness.models.graph import Graph

SCHEMA_VERSION = 3
FORMAT_VERSION = f"tflite-direct-1/schema{SCHEMA_VERSION}/flatbuffers{flatbuffers.__version__}"
_PADDING = {"same": fb.Padding.SAME, "valid": fb.Padding.VALID}
_FUSED = {"relu": fb.ActivationFunctionType.RELU, "relu6": fb.ActivationFunctionType.RELU6}


class _Builder:
    """Accumulates tensors, buffers and operators of one subgraph."""

    def __init__(self) -> None:
        empty = fb.BufferT()
        self.buffers: list[fb.BufferT] = [empty]  # buffer 0 is the conventional empty buffer
        self.tensors: list[fb.TensorT] = []
        self.index: dict[str, int] = {}
        self.operators: list[fb.OperatorT] = []
        self.opcodes: list[int] = []

    def tensor(self, label: str, shape: list[int], data: np.ndarray | None = None,
               dtype: int = fb.TensorType.FLOAT32) -> int:
        t = fb.TensorT()
        t.shape = np.asarray(shape, dtype=np.int32)
        t.type = dtype
        t.name = label.encode()
        t.buffer = 0
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        self.index[label] = len(self.tensors) - 1
        return self.index[label]

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0, options=None) -> None:
        if code not in self.opcodes:
            self.opcodes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex = self.opcodes.index(code)
        o.inputs = np.asarray(inputs, dtype=np.int32)
        o.outputs = np.asarray(outputs, dtype=np.int32)
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        self.operators.append(o)

    def hard_sigmoid(self, src: int, dst: int, shape: list[int], label: str) -> None:
        """relu6(x + 3) / 6 as TF's converter lowers it: ADD with a fused RELU6, then MUL by 1/6."""
        three = self.tensor(f"{label}.three", [1], np.full(1, 3.0, np.float32))
        sixth = self.tensor(f"{label}.sixth", [1], np.full(1, 1.0 / 6.0, np.float32))
        shifted = self.tensor(f"{label}.shifted", shape)
        self.op(fb.BuiltinOperator.ADD, [src, three], [shifted], fb.BuiltinOptions.AddOptions,
                _options(fb.AddOptionsT, fusedActivationFunction=fb.ActivationFunctionType.RELU6))
        self.op(fb.BuiltinOperator.MUL, [shifted, sixth], [dst], fb.BuiltinOptions.MulOptions, fb.MulOptionsT())

    def reshape(self, src: int, dst: int, shape: list[int], label: str) -> None:
        shape_t = self.tensor(label, [len(shape)], np.array(shape, np.int32), fb.TensorType.INT32)
        self.op(fb.BuiltinOperator.RESHAPE, [src, shape_t], [dst], fb.BuiltinOptions.ReshapeOptions,
                _options(fb.ReshapeOptionsT, newShape=np.array(shape, np.int32)))


def _options(cls, **fields):
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def _fused(attrs: dict) -> int:
    """An add's/affine's/pool's activation as TFLite's fused_activation_function (passes set relu only)."""
    if attrs.get("act") not in (None, *_FUSED):
        raise ValueError(f"TFLite exporter: activation {attrs['act']!r} cannot be fused into ADD or a pool")
    return _FUSED.get(attrs.get("act"), fb.ActivationFunctionType.NONE)


def to_tflite(graph: Graph, seed: int = 0, batch: int = 1) -> bytes:
    from harness.models.evaluate import const_value
    from harness.models.weights import graph_weights

    weights = graph_weights(graph, seed)
    b = _Builder()
    b.tensor("input", [batch, *graph.input_shape])
    flat: set[str] = set()

    def out_shape(t: str) -> list[int]:
        return [batch, graph.shapes[t][2]] if t in flat else [batch, *graph.shapes[t]]

    for n in graph.nodes:
        a, w = n.attrs, weights[n.name]
        x = [b.index[i] for i in n.inputs]
        if n.op == "dense" or (n.op == "global_avgpool" and not a.get("keepdims")) or a.get("flat"):
            flat.add(n.output)
        if n.op == "const":  # a folded input-independent tensor (harness.models.passes): a constant buffer
            shape = out_shape(n.output)
            value = const_value(n, seed).reshape([1, *shape[1:]])
            if n.output == graph.output:  # a constant network answers for the whole batch
                value = np.ascontiguousarray(np.broadcast_to(value, shape))
            else:  # operands broadcast over the batch, as the converter's constants do
                shape = [1, *shape[1:]]
            b.tensor(n.output, shape, value)
            continue
        y = b.tensor(n.output, out_shape(n.output))
        if n.op == "conv":
            k = w["kernel"]  # OIHW
            bias = w.get("bias", np.zeros(a["cout"], np.float32))
            bias_t = b.tensor(f"{n.name}.bias", [a["cout"]], bias)
            pad, s = _PADDING[a["padding"]], a["stride"]
            act = _FUSED.get(a.get("act"), fb.ActivationFunctionType.NONE)
            conv_y = y
            if a.get("act") in ("hswish", "hsigmoid"):  # not fusable: conv into a temporary, then the op
                conv_y = b.tensor(f"{n.name}.pre_act", out_shape(n.output))
            if a["groups"] > 1 and a["groups"] == a["cin"] == a["cout"]:
                filt = b.tensor(f"{n.name}.kernel", [1, a["kernel"], a["kernel"], a["cout"]],
                                k.transpose(1, 2, 3, 0))
                opts = _options(fb.DepthwiseConv2DOptionsT, padding=pad, strideW=s, strideH=s,
                                depthMultiplier=1, dilationWFactor=1, dilationHFactor=1,
                                fusedActivationFunction=act)
                b.op(fb.BuiltinOperator.DEPTHWISE_CONV_2D, [x[0], filt, bias_t], [conv_y],
                     fb.BuiltinOptions.DepthwiseConv2DOptions, opts)
            else:
                filt = b.tensor(f"{n.name}.kernel", [a["cout"], a["kernel"], a["kernel"], a["cin"] // a["groups"]],
                                k.transpose(0, 2, 3, 1))
                opts = _options(fb.Conv2DOptionsT, padding=pad, strideW=s, strideH=s,
                                dilationWFactor=1, dilationHFactor=1, fusedActivationFunction=act)
                b.op(fb.BuiltinOperator.CONV_2D, [x[0], filt, bias_t], [conv_y], fb.BuiltinOptions.Conv2DOptions,
                     opts)
            if a.get("act") == "hswish":
                b.op(fb.BuiltinOperator.HARD_SWISH, [conv_y], [y])
            elif a.get("act") == "hsigmoid":
                b.hard_sigmoid(conv_y, y, out_shape(n.output), n.name)
        elif n.op == "relu":
            b.op(fb.BuiltinOperator.RELU, x, [y])
        elif n.op == "add":
            b.op(fb.BuiltinOperator.ADD, x, [y], fb.BuiltinOptions.AddOptions,
                 _options(fb.AddOptionsT, fusedActivationFunction=_fused(a)))
        elif n.op == "shuffle":  # reshape to (.., groups, C/groups), swap the last two axes, reshape back
            h, w_, c = graph.shapes[n.output]
            g_ = a["groups"]
            split = b.tensor(f"{n.name}.5d", [batch, h, w_, g_, c // g_])
            swapped = b.tensor(f"{n.name}.t", [batch, h, w_, c // g_, g_])
            b.reshape(x[0], split, [batch, h, w_, g_, c // g_], f"{n.name}.split_shape")
            perm = b.tensor(f"{n.name}.perm", [5], np.array([0, 1, 2, 4, 3], np.int32), fb.TensorType.INT32)
            b.op(fb.BuiltinOperator.TRANSPOSE, [split, perm], [swapped], fb.BuiltinOptions.TransposeOptions,
                 fb.TransposeOptionsT())
            b.reshape(swapped, y, [batch, h, w_, c], f"{n.name}.merged_shape")
        elif n.op == "zero":
            zero = b.tensor(f"{n.name}.zero", [1], np.zeros(1, np.float32))
            b.op(fb.BuiltinOperator.MUL, [x[0], zero], [y], fb.BuiltinOptions.MulOptions, fb.MulOptionsT())
        elif n.op == "avgpool":
            opts = _options(fb.Pool2DOptionsT, padding=_PADDING[a["padding"]], strideW=a["stride"],
                            strideH=a["stride"], filterWidth=a["kernel"], filterHeight=a["kernel"],
                            fusedActivationFunction=_fused(a))
            b.op(fb.BuiltinOperator.AVERAGE_POOL_2D, x, [y], fb.BuiltinOptions.Pool2DOptions, opts)
        elif n.op == "affine":
            c = a["channels"]
            scaled = b.tensor(f"{n.name}.scaled", out_shape(n.output))
            scale = b.tensor(f"{n.name}.scale", [c], w["scale"])
            shift = b.tensor(f"{n.name}.shift", [c], w["shift"])
            b.op(fb.BuiltinOperator.MUL, [x[0], scale], [scaled], fb.BuiltinOptions.MulOptions, fb.MulOptionsT())
            b.op(fb.BuiltinOperator.ADD, [scaled, shift], [y], fb.BuiltinOptions.AddOptions,
                 _options(fb.AddOptionsT, fusedActivationFunction=_fused(a)))
        elif n.op == "global_avgpool":
            axes = b.tensor(f"{n.name}.axes", [2], np.array([1, 2], np.int32), fb.TensorType.INT32)
            b.op(fb.BuiltinOperator.MEAN, [x[0], axes], [y], fb.BuiltinOptions.ReducerOptions,
                 _options(fb.ReducerOptionsT, keepDims=bool(a.get("keepdims"))))
        elif n.op == "mul":  # broadcasting (1, 1, 1, C) over (1, H, W, C): channel-wise gating
            b.op(fb.BuiltinOperator.MUL, x, [y], fb.BuiltinOptions.MulOptions, fb.MulOptionsT())
        elif n.op == "dense":
            wt = b.tensor(f"{n.name}.weight", [a["cout"], a["cin"]], w["weight"])
            bias_t = b.tensor(f"{n.name}.bias", [a["cout"]], w["bias"])
            b.op(fb.BuiltinOperator.FULLY_CONNECTED, [x[0], wt, bias_t], [y],
                 fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT())
        else:  # pragma: no cover - guarded by Graph's vocabulary
            raise ValueError(f"TFLite exporter: unsupported op {n.op!r}")

    sub = fb.SubGraphT()
    sub.tensors, sub.operators = b.tensors, b.operators
    sub.inputs = np.array([b.index["input"]], np.int32)
    sub.outputs = np.array([b.index[graph.output]], np.int32)
    sub.name = b"main"
    model = fb.ModelT()
    model.version = SCHEMA_VERSION
    model.description = f"harness {graph.name}".encode()
    model.subgraphs = [sub]
    model.buffers = b.buffers
    codes = []
    for code in b.opcodes:
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        codes.append(oc)
    model.operatorCodes = codes
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def export_tflite(graph: Graph, path: str, seed: int = 0, batch: int = 1) -> None:
    with open(path, "wb") as f:
        f.write(to_tflite(graph, seed, batch))
