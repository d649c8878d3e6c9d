"""The one architecture description every exporter reads.

A search space builds a :class:`Graph`; the ONNX and TFLite exporters translate it node by node,
so both formats come from the same structure and the same weights. Shapes are logical
``(height, width, channels)``; each exporter picks its own memory layout.

Padding follows TensorFlow's ``SAME``/``VALID`` rules so that both formats compute identical
numbers (ONNX gets the equivalent explicit pads).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Literal

Padding = Literal["same", "valid"]
Shape = tuple[int, int, int]


@dataclass(frozen=True)
class Node:
    """One operation. ``op`` is one of :data:`OPS`; ``attrs`` hold its static parameters."""

    op: str
    name: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict = field(default_factory=dict)


# op -> short description of attrs (kept here so exporters and counters agree on the vocabulary)
OPS = {
    "conv": "kernel, stride, padding, cin, cout, groups, bn (BatchNorm folded at export), bias, "
            "act (absent, or one of ACTIVATIONS: applied after the conv as converters do)",
    "relu": "",
    "add": "act (absent, or relu/relu6 fused by harness.models.passes: TFLite's fused activation)",
    "zero": "multiply by 0: PyTorch's Zero op (NB201's 'none'); graph: keep exports it, prune folds it",
    "avgpool": "kernel, stride, padding (average excludes padding), act (as add)",
    "affine": "channels, act (as add): a standalone BatchNorm (per-channel scale and shift)",
    "const": "nodes (the folded input-independent subgraph, evaluated with the weights at export), flat "
             "(True when the value is a (1, C) vector): made by constant propagation only",
    "global_avgpool": "keepdims (only when True: the 1x1 map stays 4-D, as squeeze-and-excitation needs)",
    "dense": "cin, cout",
    "shuffle": "groups: ShuffleNet/FBNet channel shuffle",
    "mul": "element-wise product; the second input may be a 1x1xC map (channel-wise, as in squeeze-and-excitation)",
}

# conv activations. relu/relu6 are fused into the conv (TFLite fused activation); hswish is
# x * relu6(x + 3) / 6 (TFLite HARD_SWISH; ONNX opset 13 has no HardSwish, so x * HardSigmoid(x));
# hsigmoid is relu6(x + 3) / 6 (TFLite ADD+RELU6, MUL as TF's converter emits; ONNX HardSigmoid).
ACTIVATIONS = ("relu", "relu6", "hswish", "hsigmoid")


_SCALARS = (int, float, str, bool, type(None))


def _plain(v):
    """JSON-ready copy of nested nodes, dataclasses, dicts and sequences (as ``asdict`` + json would see them)."""
    t = type(v)
    if t in _SCALARS:
        return v
    if t is Node:
        return {"op": v.op, "name": v.name, "inputs": list(v.inputs), "output": v.output, "attrs": _plain(v.attrs)}
    if t is dict:
        return {k: x if type(x) in _SCALARS else _plain(x) for k, x in v.items()}
    if t in (list, tuple):
        return [_plain(x) for x in v]
    if is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v)}
    return v


def _same_out(size: int, stride: int) -> int:
    return -(-size // stride)


def _valid_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial dimension."""
    out = _same_out(size, stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Graph:
    """A single-input, single-output feed-forward network under construction or finished."""

    def __init__(self, name: str, input_shape: Shape):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.nodes: list[Node] = []
        self.shapes: dict[str, Shape] = {"input": self.input_shape}
        self.output = "input"

    # --- construction -----------------------------------------------------------------
    def _add(self, op: str, inputs: tuple[str, ...], shape: Shape, **attrs) -> str:
        for t in inputs:
            if t not in self.shapes:
                raise ValueError(f"graph {self.name}: unknown input tensor {t!r}")
        name = f"n{len(self.nodes)}_{op}"
        self.nodes.append(Node(op, name, inputs, name, dict(attrs)))
        self.shapes[name] = shape
        self.output = name
        return name

    def conv(self, x: str, cout: int, kernel: int, stride: int = 1, padding: Padding = "same",
             groups: int = 1, bn: bool = True, bias: bool = False, act: str | None = None) -> str:
        h, w, cin = self.shapes[x]
        if cin % groups or cout % groups:
            raise ValueError(f"conv groups={groups} must divide cin={cin} and cout={cout}")
        if padding == "same":
            oh, ow = _same_out(h, stride), _same_out(w, stride)
        else:
            oh, ow = _valid_out(h, kernel, stride), _valid_out(w, kernel, stride)
        if act is not None and act not in ACTIVATIONS:
            raise ValueError(f"conv activation must be None or one of {', '.join(ACTIVATIONS)}, got {act!r}")
        attrs = dict(kernel=kernel, stride=stride, padding=padding, cin=cin, cout=cout, groups=groups, bn=bn, bias=bias)
        if act:
            attrs["act"] = act  # only when set: graphs without fused activations keep their fingerprints
        return self._add("conv", (x,), (oh, ow, cout), **attrs)

    def relu(self, x: str) -> str:
        """A new ReLU of ``x`` per call, as PyTorch modules do (graph: prune merges identical ones)."""
        return self._add("relu", (x,), self.shapes[x])

    def add(self, xs: list[str]) -> str:
        if not xs:
            raise ValueError("add needs at least one input")
        out = xs[0]
        for x in xs[1:]:
            if self.shapes[x] != self.shapes[out]:
                raise ValueError(f"add: shape {self.shapes[x]} != {self.shapes[out]}")
            out = self._add("add", (out, x), self.shapes[out])
        return out

    def shuffle(self, x: str, groups: int) -> str:
        if self.shapes[x][2] % groups:
            raise ValueError(f"shuffle groups={groups} must divide channels={self.shapes[x][2]}")
        return self._add("shuffle", (x,), self.shapes[x], groups=groups)

    def zero(self, x: str) -> str:
        return self._add("zero", (x,), self.shapes[x])

    def avgpool(self, x: str, kernel: int, stride: int, padding: Padding) -> str:
        h, w, c = self.shapes[x]
        if padding == "same":
            shape = (_same_out(h, stride), _same_out(w, stride), c)
        else:
            shape = (_valid_out(h, kernel, stride), _valid_out(w, kernel, stride), c)
        return self._add("avgpool", (x,), shape, kernel=kernel, stride=stride, padding=padding)

    def affine(self, x: str) -> str:
        return self._add("affine", (x,), self.shapes[x], channels=self.shapes[x][2])

    def global_avgpool(self, x: str, keepdims: bool = False) -> str:
        """Mean over height and width. ``keepdims`` keeps a 4-D 1x1 map that convs can consume."""
        if keepdims:  # the attribute only when set: existing graphs keep their fingerprints
            return self._add("global_avgpool", (x,), (1, 1, self.shapes[x][2]), keepdims=True)
        return self._add("global_avgpool", (x,), (1, 1, self.shapes[x][2]))

    def mul(self, x: str, scale: str) -> str:
        """``x * scale``; ``scale`` has x's shape or is a 1x1xC map (channel-wise gating)."""
        xs, ss = self.shapes[x], self.shapes[scale]
        if ss != xs and ss != (1, 1, xs[2]):
            raise ValueError(f"mul: scale shape {ss} must equal {xs} or be (1, 1, {xs[2]})")
        return self._add("mul", (x, scale), xs)

    def dense(self, x: str, cout: int) -> str:
        h, w, cin = self.shapes[x]
        if (h, w) != (1, 1):
            raise ValueError(f"dense needs a 1x1 spatial input, got {h}x{w}; pool first")
        return self._add("dense", (x,), (1, 1, cout), cin=cin, cout=cout)

    @classmethod
    def from_nodes(cls, name: str, input_shape: Shape, nodes: list[Node], shapes: dict[str, Shape],
                   output: str) -> Graph:
        """A finished graph from nodes in topological order (what graph passes return)."""
        g = cls(name, input_shape)
        g.nodes = list(nodes)
        g.shapes = {"input": g.input_shape, **{n.output: shapes[n.output] for n in nodes}}
        g.output = output
        return g

    # --- facts ------------------------------------------------------------------------
    @property
    def output_shape(self) -> Shape:
        return self.shapes[self.output]

    def param_count(self) -> int:
        """Trainable parameters as PyTorch counts them (BatchNorm affine included, buffers not)."""
        total = 0
        for n in self.nodes:
            a = n.attrs
            if n.op == "conv":
                total += a["cout"] * (a["cin"] // a["groups"]) * a["kernel"] ** 2
                total += 2 * a["cout"] if a["bn"] else 0
                total += a["cout"] if a["bias"] else 0
            elif n.op == "affine":
                total += 2 * a["channels"]
            elif n.op == "dense":
                total += a["cin"] * a["cout"] + a["cout"]
        return total

    def macs(self) -> int:
        """Multiply-accumulates of convolutions and dense layers (the usual 'FLOPs' of NAS papers)."""
        total = 0
        for n in self.nodes:
            a = n.attrs
            if n.op == "conv":
                oh, ow, _ = self.shapes[n.output]
                total += oh * ow * a["cout"] * (a["cin"] // a["groups"]) * a["kernel"] ** 2
            elif n.op == "dense":
                total += a["cin"] * a["cout"]
        return total

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "output": self.output,
            "nodes": [asdict(n) for n in self.nodes],
        }

    def fingerprint(self) -> str:
        """Content hash of the structure (not the name): equal graphs share cached exports. The same JSON as
        ``to_dict`` without ``asdict``'s deep copies (5x faster: it runs once per model of every campaign)."""
        body = {"input_shape": list(self.input_shape), "output": self.output,
                "nodes": [_plain(n) for n in self.nodes]}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
