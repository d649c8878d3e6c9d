"""Deterministic weights for a graph, in one canonical layout that every exporter converts from.

Latency does not depend on trained values, but the two formats must hold the *same* numbers so a
test can check that ONNX and TFLite compute the same function. BatchNorm is folded into the
convolution (as TFLite's converter and onnxruntime's optimiser would do), so a ``bn`` conv gets a bias.
"""

from __future__ import annotations

import hashlib

import numpy as np

from harness.models.graph import Graph, Node


def _rng(seed: int, node: Node) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{node.name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def node_weights(node: Node, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays for one node. conv kernel is OIHW, dense weight is (out, in)."""
    a = node.attrs
    rng = _rng(seed, node)
    if node.op == "conv":
        cin_g = a["cin"] // a["groups"]
        fan_in = cin_g * a["kernel"] ** 2
        kernel = rng.standard_normal((a["cout"], cin_g, a["kernel"], a["kernel"]), dtype=np.float32)
        out = {"kernel": kernel * np.float32(np.sqrt(1.0 / fan_in))}
        if a["bn"] or a["bias"]:
            out["bias"] = rng.normal(0.0, 0.05, a["cout"]).astype(np.float32)
        return out
    if node.op == "affine":
        c = a["channels"]
        return {"scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
                "shift": rng.normal(0.0, 0.05, c).astype(np.float32)}
    if node.op == "dense":
        w = rng.normal(0.0, np.sqrt(1.0 / a["cin"]), (a["cout"], a["cin"]))
        return {"weight": w.astype(np.float32), "bias": rng.normal(0.0, 0.05, a["cout"]).astype(np.float32)}
    return {}


def graph_weights(graph: Graph, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    return {n.name: node_weights(n, seed) for n in graph.nodes}
