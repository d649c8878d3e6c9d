"""Graph-level passes: the model a deployment toolchain would ship, for every exporter and space.

A space builds its network the way PyTorch runs it (NB201's ``none`` is ``x * 0``, every edge has its
own ReLU, a node feeding only ``none`` edges is still computed). That is ``graph: keep`` and it is what
the PyTorch-exported tables measured (HW-NAS-Bench's Pixel 3 / Raspberry Pi 4, HELP). ``graph: prune``
(the default) is what TFLiteConverter, XNNPACK, TensorRT or a Keras functional model give; it applies:

1. constant propagation: ``x * 0`` is zero, ``a + 0`` is ``a``, ``0 * a`` is zero, and any node whose
   inputs are all constant is folded into one ``const`` tensor (its value is computed at export from the
   same weights: e.g. conv(0) + BN is the BN shift); a network whose output is constant becomes a model
   with a constant output and no operators, as the converters make it (see :func:`is_degenerate`);
2. dead-node elimination: nodes that do not reach the output are dropped;
3. merging identical weightless ops on the same inputs (ReLUs, pools, adds; ``a + b`` = ``b + a``);
4. activation fusion: a ReLU whose input is used by nothing else is folded into the conv, add, affine or
   average pool that produces it (TFLite writes it as ``fused_activation_function``; ONNX keeps a Relu node, which
   onnxruntime fuses at load).

Surviving nodes keep their names, so they keep their weights (harness.models.weights): the optimised
graph computes the same function as the original.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

from harness.errors import HarnessError
from harness.models.graph import Graph, Node

GRAPH_MODES = ("prune", "keep")
DEFAULT_GRAPH_MODE = "prune"

# ops that map an all-zero input to an all-zero output (a conv only when it adds no bias and act(0) = 0)
_ZERO_PRESERVING = {"relu", "avgpool", "shuffle", "global_avgpool"}
_ACT_ZERO_AT_ZERO = {None, "relu", "relu6", "hswish"}
_FUSABLE = {"conv", "add", "affine", "avgpool"}  # TFLite: CONV_2D, ADD, AVERAGE_POOL_2D fuse
_WEIGHTLESS = {"relu", "add", "avgpool", "shuffle", "global_avgpool", "mul", "zero"}


def check_mode(mode: str) -> str:
    if mode not in GRAPH_MODES:
        raise HarnessError(f"graph mode {mode!r} is not one of {', '.join(GRAPH_MODES)} (prune: what a deployment "
                           "converter exports; keep: PyTorch-eager export with x*0 and dead convs)")
    return mode


def prepare(graph: Graph, mode: str = DEFAULT_GRAPH_MODE) -> Graph:
    """The graph the exporters write for ``mode``: as built (keep) or optimised (prune)."""
    return graph if check_mode(mode) == "keep" else optimise(graph)


def optimise(graph: Graph) -> Graph:
    g = fold_constants(graph)
    g = eliminate_dead(g)
    g = merge_identical(g)
    g = fuse_activations(g)
    return eliminate_dead(g)


# --- helpers ------------------------------------------------------------------------------

def _resolver(alias: dict[str, str]) -> Callable[[str], str]:
    def resolve(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t
    return resolve


def _with_inputs(n: Node, inputs: tuple[str, ...]) -> Node:
    return n if inputs == n.inputs else Node(n.op, n.name, inputs, n.output, n.attrs)


def _rebuild(graph: Graph, nodes: list[Node], alias: dict[str, str], inputs_resolved: bool = False) -> Graph:
    """``inputs_resolved``: the pass already resolved each node's inputs as it walked them in topological order
    (an alias made later names a later tensor, which no earlier node reads), so only the output is."""
    resolve = _resolver(alias)
    if alias and not inputs_resolved:
        nodes = [_with_inputs(n, tuple(resolve(i) for i in n.inputs)) for n in nodes]
    return Graph.from_nodes(graph.name, graph.input_shape, nodes, graph.shapes, resolve(graph.output))


def _attrs_key(attrs: dict) -> object:
    """A hashable, order-free form of a node's attributes (json only for nested values, which are rare)."""
    key = tuple(sorted(attrs.items()))
    try:
        hash(key)
    except TypeError:  # a list or dict among the values
        return json.dumps(attrs, sort_keys=True)
    return key


def _consumers(graph: Graph) -> dict[str, int]:
    count: dict[str, int] = {}
    for n in graph.nodes:
        for i in n.inputs:
            count[i] = count.get(i, 0) + 1
    return count


# --- 1. constant propagation ----------------------------------------------------------------

def constant_kinds(graph: Graph) -> dict[str, str]:
    """Tensor -> 'zero' or 'const' for every tensor that does not depend on the input."""
    kind: dict[str, str] = {}
    for n in graph.nodes:
        ins = [kind.get(i) for i in n.inputs]
        act = n.attrs.get("act")
        if n.op == "zero":
            kind[n.output] = "zero"
        elif n.op == "const":
            kind[n.output] = "const"
        elif n.op == "mul" and "zero" in ins:
            kind[n.output] = "zero"
        elif ins and all(ins):
            zero_in = all(k == "zero" for k in ins)
            keeps_zero = (n.op in _ZERO_PRESERVING or (n.op == "mul")
                          or (n.op == "add" and act in _ACT_ZERO_AT_ZERO)
                          or (n.op == "conv" and not n.attrs["bn"] and not n.attrs["bias"]
                              and act in _ACT_ZERO_AT_ZERO))
            kind[n.output] = "zero" if zero_in and keeps_zero else "const"
    return kind


def fold_constants(graph: Graph) -> Graph:
    """Remove additions of zero, and replace each input-independent tensor that a live node (or the output)
    reads by one ``const`` node holding the subgraph that computes it."""
    kind = constant_kinds(graph)
    by_out = {n.output: n for n in graph.nodes}
    alias: dict[str, str] = {}
    resolve = _resolver(alias)
    kept: list[Node] = []
    for n in graph.nodes:
        if n.output in kind:
            continue
        ins = [resolve(i) for i in n.inputs]
        if n.op == "add" and not n.attrs.get("act"):
            live = [i for i in ins if kind.get(i) != "zero"]
            if len(live) == 1:
                alias[n.output] = live[0]
                continue
        kept.append(_with_inputs(n, tuple(ins)))

    def record(t: str) -> Node:
        n = by_out[t]
        if kind[t] == "zero":  # a leaf: its value does not depend on what it multiplies
            return Node("zero", n.name, (), n.output)
        return n

    def closure(t: str) -> list[dict]:
        order: list[str] = []
        seen: set[str] = set()

        def visit(u: str) -> None:
            if u in seen:
                return
            seen.add(u)
            for i in record(u).inputs:
                visit(i)
            order.append(u)

        visit(t)
        recs = []
        for u in order:
            r = record(u)
            recs.append({"op": r.op, "name": r.name, "inputs": list(r.inputs), "attrs": r.attrs,
                         "shape": list(graph.shapes[u])})
        return recs

    needed = [i for n in kept for i in n.inputs if i in kind]
    out = resolve(graph.output)
    if out in kind:
        needed.append(out)
    consts: dict[str, Node] = {}
    for t in needed:
        if t not in consts:
            src = by_out[t]
            flat = src.op == "dense" or (src.op == "global_avgpool" and not src.attrs.get("keepdims"))
            consts[t] = Node("const", src.name, (), t, {"nodes": closure(t), "flat": flat})
    position = {n.output: i for i, n in enumerate(graph.nodes)}
    nodes = sorted([*consts.values(), *kept], key=lambda n: position[n.output])
    return _rebuild(graph, nodes, alias, inputs_resolved=True)


# --- 2. dead-node elimination ---------------------------------------------------------------

def eliminate_dead(graph: Graph) -> Graph:
    """Keep only the nodes the output depends on."""
    by_out = {n.output: n for n in graph.nodes}
    live: set[str] = set()
    stack = [graph.output]
    while stack:
        t = stack.pop()
        if t in live or t not in by_out:
            continue
        live.add(t)
        stack.extend(by_out[t].inputs)
    return _rebuild(graph, [n for n in graph.nodes if n.output in live], {})


# --- 3. merging identical ops ---------------------------------------------------------------

def merge_identical(graph: Graph) -> Graph:
    """One node for each weightless op applied to the same inputs with the same attributes."""
    alias: dict[str, str] = {}
    resolve = _resolver(alias)
    seen: dict[tuple, str] = {}
    kept: list[Node] = []
    for n in graph.nodes:
        ins = tuple(resolve(i) for i in n.inputs)
        n = _with_inputs(n, ins)
        if n.op in _WEIGHTLESS:
            key_ins = tuple(sorted(ins)) if n.op == "add" else ins
            key = (n.op, key_ins, _attrs_key(n.attrs))
            if key in seen:
                alias[n.output] = seen[key]
                continue
            seen[key] = n.output
        kept.append(n)
    return _rebuild(graph, kept, alias, inputs_resolved=True)


# --- 4. activation fusion -------------------------------------------------------------------

def fuse_activations(graph: Graph) -> Graph:
    """ReLU into the conv/add/affine/average pool before it when nothing else reads the pre-activation value;
    a ReLU after a ReLU/ReLU6 activation is dropped (it changes nothing)."""
    by_out = {n.output: n for n in graph.nodes}
    uses = _consumers(graph)
    alias: dict[str, str] = {}
    fused: dict[str, Node] = {}
    for n in graph.nodes:
        if n.op != "relu":
            continue
        x = n.inputs[0]
        p = fused.get(x) or by_out.get(x)
        if p is None or p.op not in _FUSABLE:
            continue
        act = p.attrs.get("act")
        if act in ("relu", "relu6"):
            alias[n.output] = x
        elif act is None and uses.get(x) == 1 and x != graph.output:
            fused[x] = replace(p, attrs={**p.attrs, "act": "relu"})
            alias[n.output] = x
    nodes = [fused.get(n.output, n) for n in graph.nodes if n.output not in alias]
    return _rebuild(graph, nodes, alias)


# --- facts ----------------------------------------------------------------------------------

def is_degenerate(graph: Graph) -> bool:
    """True when the output does not depend on the input (e.g. NB201 with an all-'none' cell output):
    such a model still exports and is measured, and the store marks it so analyses can choose."""
    return graph.output == "input" or graph.output in constant_kinds(graph)


def describe(graph: Graph) -> dict[str, int]:
    """Op histogram of a graph (for reports and tests)."""
    hist: dict[str, int] = {}
    for n in graph.nodes:
        hist[n.op] = hist.get(n.op, 0) + 1
    return hist


__all__ = ["GRAPH_MODES", "DEFAULT_GRAPH_MODE", "prepare", "optimise", "fold_constants", "eliminate_dead",
           "merge_identical", "fuse_activations", "is_degenerate", "constant_kinds", "check_mode", "describe"]
