"""A plain numpy forward pass of a :class:`Graph` with its export weights.

Constant propagation folds input-independent subgraphs into one tensor, as TensorFlow's converter
does; that tensor's value is computed here, from the same deterministic weights the exporters write.
Tensors are ``(H, W, C)`` float32 (batch 1); flat tensors (dense, global pooling) are ``(C,)``.
Speed is not a goal: it only ever runs on the small folded parts of a network.
"""

from __future__ import annotations

import numpy as np

from harness.models.graph import Graph, Node, same_pads
from harness.models.weights import node_weights


def activation(x: np.ndarray, act: str | None) -> np.ndarray:
    if act is None:
        return x
    if act == "relu":
        return np.maximum(x, 0)
    if act == "relu6":
        return np.clip(x, 0, 6)
    if act == "hsigmoid":
        return np.clip(x + 3, 0, 6) / 6
    if act == "hswish":
        return x * np.clip(x + 3, 0, 6) / 6
    raise ValueError(f"unknown activation {act!r}")


def _pad(x: np.ndarray, kernel: int, stride: int, padding: str) -> np.ndarray:
    if padding == "valid":
        return x
    h, w, _ = x.shape
    return np.pad(x, (same_pads(h, kernel, stride), same_pads(w, kernel, stride), (0, 0)))


def _windows(x: np.ndarray, kernel: int, stride: int, oh: int, ow: int):
    for ky in range(kernel):
        for kx in range(kernel):
            yield ky, kx, x[ky:ky + stride * (oh - 1) + 1:stride, kx:kx + stride * (ow - 1) + 1:stride, :]


def _conv(x: np.ndarray, node: Node, out_shape: tuple, w: dict[str, np.ndarray]) -> np.ndarray:
    a = node.attrs
    k, s, g = a["kernel"], a["stride"], a["groups"]
    oh, ow, cout = out_shape
    xp = _pad(x.astype(np.float64), k, s, a["padding"])
    kernel = w["kernel"].astype(np.float64)  # OIHW
    cin_g, cout_g = a["cin"] // g, cout // g
    out = np.zeros((oh, ow, cout))
    for ky, kx, win in _windows(xp, k, s, oh, ow):
        for gi in range(g):
            xs = win[:, :, gi * cin_g:(gi + 1) * cin_g]
            ws = kernel[gi * cout_g:(gi + 1) * cout_g, :, ky, kx]  # (cout_g, cin_g)
            out[:, :, gi * cout_g:(gi + 1) * cout_g] += xs @ ws.T
    if "bias" in w:
        out += w["bias"]
    return activation(out, a.get("act")).astype(np.float32)


def _avgpool(x: np.ndarray, node: Node, out_shape: tuple) -> np.ndarray:
    a = node.attrs
    k, s = a["kernel"], a["stride"]
    oh, ow, _ = out_shape
    xp = _pad(x.astype(np.float64), k, s, a["padding"])
    ones = _pad(np.ones(x.shape[:2] + (1,)), k, s, a["padding"])  # padding is excluded from the average
    total, count = np.zeros((oh, ow, x.shape[2])), np.zeros((oh, ow, 1))
    for (_, _, win), (_, _, cnt) in zip(_windows(xp, k, s, oh, ow), _windows(ones, k, s, oh, ow)):
        total += win
        count += cnt
    return activation(total / count, a.get("act")).astype(np.float32)


def run_node(node: Node, inputs: list[np.ndarray], out_shape: tuple, seed: int = 0) -> np.ndarray:
    """One node's output from its input values."""
    a, op = node.attrs, node.op
    w = node_weights(node, seed)
    if op == "conv":
        return _conv(inputs[0], node, out_shape, w)
    if op == "relu":
        return np.maximum(inputs[0], 0)
    if op == "add":
        return activation(inputs[0] + inputs[1], a.get("act")).astype(np.float32)
    if op == "zero":
        return np.zeros(out_shape, np.float32)
    if op == "avgpool":
        return _avgpool(inputs[0], node, out_shape)
    if op == "affine":
        return activation(inputs[0] * w["scale"] + w["shift"], a.get("act")).astype(np.float32)
    if op == "global_avgpool":
        m = inputs[0].astype(np.float64).mean(axis=(0, 1))
        return (m.reshape(1, 1, -1) if a.get("keepdims") else m).astype(np.float32)
    if op == "dense":
        return (w["weight"].astype(np.float64) @ inputs[0].reshape(-1) + w["bias"]).astype(np.float32)
    if op == "shuffle":
        h, wd, c = inputs[0].shape
        g = a["groups"]
        return inputs[0].reshape(h, wd, g, c // g).transpose(0, 1, 3, 2).reshape(h, wd, c)
    if op == "mul":
        return (inputs[0] * inputs[1]).astype(np.float32)
    if op == "const":
        return const_value(node, seed)
    raise ValueError(f"evaluator: unsupported op {op!r}")


def const_value(node: Node, seed: int = 0) -> np.ndarray:
    """The value of a ``const`` node: its folded subgraph, evaluated with the original nodes' weights."""
    values: dict[str, np.ndarray] = {}
    for rec in node.attrs["nodes"]:
        n = Node(rec["op"], rec["name"], tuple(rec["inputs"]), rec["name"], rec["attrs"])
        values[n.output] = run_node(n, [values[i] for i in n.inputs], tuple(rec["shape"]), seed)
    return values[node.attrs["nodes"][-1]["name"]]


def forward(graph: Graph, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The graph's output for one ``(H, W, C)`` input."""
    values = {"input": np.asarray(x, np.float32)}
    for n in graph.nodes:
        values[n.output] = run_node(n, [values[i] for i in n.inputs], graph.shapes[n.output], seed)
    return values[graph.output]
