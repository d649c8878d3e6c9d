"""Graph -> ONNX, built directly with ``onnx.helper`` (milliseconds per model, no framework import).

Layout NCHW, batch 1 unless asked (a fixed batch dimension), input ``input``, output ``output``. Opset 13 and IR version 7 keep the files
loadable by the older onnxruntime builds that ship on Jetsons and Raspberry Pis.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.models.evaluate import const_value
from harness.models.graph import Graph, same_pads
from harness.models.weights import graph_weights

OPSET = 13
IR_VERSION = 7
FORMAT_VERSION = f"onnx-direct-1/onnx{onnx.__version__}/opset{OPSET}"


def _pads(graph: Graph, x: str, kernel: int, stride: int, padding: str) -> list[int]:
    if padding == "valid":
        return [0, 0, 0, 0]
    h, w, _ = graph.shapes[x]
    top, bottom = same_pads(h, kernel, stride)
    left, right = same_pads(w, kernel, stride)
    return [top, left, bottom, right]


def to_onnx(graph: Graph, seed: int = 0, batch: int = 1) -> onnx.ModelProto:
    weights = graph_weights(graph, seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    flat: set[str] = set()  # tensors already flattened to (1, C)

    def name(t: str) -> str:
        return "output" if t == graph.output else t

    def const(label: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), label))
        return label

    def activation(act: str, src: str, dst: str, label: str) -> None:
        """Opset-13 nodes for a conv activation (no HardSwish before opset 14: x * HardSigmoid(x))."""
        if act == "relu":
            nodes.append(helper.make_node("Relu", [src], [dst], name=f"{label}_relu"))
        elif act == "relu6":
            lo = const(f"{label}.clip_min", np.zeros((), np.float32))
            hi = const(f"{label}.clip_max", np.full((), 6.0, np.float32))
            nodes.append(helper.make_node("Clip", [src, lo, hi], [dst], name=f"{label}_relu6"))
        elif act == "hsigmoid":
            nodes.append(helper.make_node("HardSigmoid", [src], [dst], name=f"{label}_hsigmoid",
                                          alpha=1.0 / 6.0, beta=0.5))
        elif act == "hswish":
            gate = f"{label}.hsigmoid"
            nodes.append(helper.make_node("HardSigmoid", [src], [gate], name=f"{label}_hsigmoid",
                                          alpha=1.0 / 6.0, beta=0.5))
            nodes.append(helper.make_node("Mul", [src, gate], [dst], name=f"{label}_hswish"))
        else:  # pragma: no cover - guarded by Graph.conv
            raise ValueError(f"ONNX exporter: unsupported activation {act!r}")

    for n in graph.nodes:
        a, x, y = n.attrs, [name(i) for i in n.inputs], name(n.output)
        w = weights[n.name]
        if n.op == "conv":
            ins = [x[0], const(f"{n.name}.kernel", w["kernel"])]
            if "bias" in w:
                ins.append(const(f"{n.name}.bias", w["bias"]))
            conv_out = f"{n.name}.pre_act" if a.get("act") else y
            nodes.append(helper.make_node(
                "Conv", ins, [conv_out], name=n.name, kernel_shape=[a["kernel"]] * 2, strides=[a["stride"]] * 2,
                pads=_pads(graph, n.inputs[0], a["kernel"], a["stride"], a["padding"]), group=a["groups"]))
            if a.get("act"):
                activation(a["act"], conv_out, y, n.name)
        elif n.op == "relu":
            nodes.append(helper.make_node("Relu", x, [y], name=n.name))
        elif n.op == "add":
            pre = f"{n.name}.pre_act" if a.get("act") else y
            nodes.append(helper.make_node("Add", x, [pre], name=n.name))
            if a.get("act"):  # ONNX has no fused activations: a separate node, fused by onnxruntime at load
                activation(a["act"], pre, y, n.name)
        elif n.op == "const":  # a folded input-independent tensor (harness.models.passes)
            value = const_value(n, seed)
            value = value.reshape(1, -1) if a["flat"] else value.transpose(2, 0, 1)[None]
            if n.output == graph.output:  # a constant network: its output is that tensor, for the whole batch
                value = np.ascontiguousarray(np.broadcast_to(value, (batch, *value.shape[1:])))
                nodes.append(helper.make_node("Identity", [const(n.name, value)], [y], name=f"{n.name}_out"))
            else:
                const(y, value)
            if a["flat"]:
                flat.add(n.output)
        elif n.op == "shuffle":
            h, w_, c = graph.shapes[n.output]
            g_ = a["groups"]
            split = const(f"{n.name}.split", np.array([batch, g_, c // g_, h, w_], np.int64))
            merged = const(f"{n.name}.merged", np.array([batch, c, h, w_], np.int64))
            nodes.append(helper.make_node("Reshape", [x[0], split], [f"{n.name}.5d"], name=f"{n.name}_split"))
            nodes.append(helper.make_node("Transpose", [f"{n.name}.5d"], [f"{n.name}.t"], name=f"{n.name}_t",
                                          perm=[0, 2, 1, 3, 4]))
            nodes.append(helper.make_node("Reshape", [f"{n.name}.t", merged], [y], name=n.name))
        elif n.op == "zero":
            zero = const(f"{n.name}.zero", np.zeros((), np.float32))
            nodes.append(helper.make_node("Mul", [x[0], zero], [y], name=n.name))
        elif n.op == "avgpool":
            pre = f"{n.name}.pre_act" if a.get("act") else y
            nodes.append(helper.make_node(
                "AveragePool", x, [pre], name=n.name, kernel_shape=[a["kernel"]] * 2, strides=[a["stride"]] * 2,
                pads=_pads(graph, n.inputs[0], a["kernel"], a["stride"], a["padding"]), count_include_pad=0))
            if a.get("act"):
                activation(a["act"], pre, y, n.name)
        elif n.op == "affine":
            c = a["channels"]
            scale = const(f"{n.name}.scale", w["scale"].reshape(c, 1, 1))
            shift = const(f"{n.name}.shift", w["shift"].reshape(c, 1, 1))
            pre = f"{n.name}.pre_act" if a.get("act") else y
            nodes.append(helper.make_node("Mul", [x[0], scale], [f"{n.name}.scaled"], name=f"{n.name}_mul"))
            nodes.append(helper.make_node("Add", [f"{n.name}.scaled", shift], [pre], name=n.name))
            if a.get("act"):
                activation(a["act"], pre, y, n.name)
        elif n.op == "global_avgpool" and a.get("keepdims"):
            nodes.append(helper.make_node("GlobalAveragePool", x, [y], name=n.name))
        elif n.op == "mul":  # NCHW broadcasting: (1, C, 1, 1) scales each channel
            nodes.append(helper.make_node("Mul", x, [y], name=n.name))
        elif n.op == "global_avgpool":
            nodes.append(helper.make_node("GlobalAveragePool", x, [f"{n.name}.4d"], name=f"{n.name}_pool"))
            nodes.append(helper.make_node("Flatten", [f"{n.name}.4d"], [y], name=n.name, axis=1))
            flat.add(n.output)
        elif n.op == "dense":
            src = x[0]
            if n.inputs[0] not in flat:
                src = f"{n.name}.flat"
                nodes.append(helper.make_node("Flatten", x, [src], name=f"{n.name}_flatten", axis=1))
            ins = [src, const(f"{n.name}.weight", w["weight"]), const(f"{n.name}.bias", w["bias"])]
            nodes.append(helper.make_node("Gemm", ins, [y], name=n.name, transB=1))
            flat.add(n.output)
        else:  # pragma: no cover - guarded by Graph's vocabulary
            raise ValueError(f"ONNX exporter: unsupported op {n.op!r}")

    if graph.output == "input":  # nothing left to compute: the output is the input
        nodes.append(helper.make_node("Identity", ["input"], ["output"], name="identity"))
    h, w_, c = graph.input_shape
    oh, ow, oc = graph.output_shape
    out_shape = [batch, oc] if graph.output in flat else [batch, oc, oh, ow]
    g = helper.make_graph(
        nodes, graph.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, c, h, w_])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="harness")
    model.ir_version = IR_VERSION
    return model


def export_onnx(graph: Graph, path: str, seed: int = 0, batch: int = 1) -> None:
    onnx.save_model(to_onnx(graph, seed, batch), path)
