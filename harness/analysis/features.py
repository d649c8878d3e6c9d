"""Architecture features for latency predictors.

Two encodings, both per space: the space's one-hot of its choices (``SearchSpace.encode``) and a
structure-aware one read off the built network (the Graph every exporter uses): how many operators of
each kind actually execute, their output sizes, MACs and parameters, read off the graph as exported in a
graph mode (harness.models.passes): with ``prune`` (the default) dead convolutions and folded zeros are
not counted, with ``keep`` (PyTorch-exported tables) they are. Graph features cost a build per
architecture, so they are cached on disk per space and mode.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from harness.models.graph import Graph
from harness.models.passes import DEFAULT_GRAPH_MODE, check_mode, prepare
from harness.models.spaces import Arch, SearchSpace

GRAPH_FEATURES_VERSION = 2  # 2: counted on the graph mode's graph (exporter version 2)
# what the transfer fit reads (adapt refits a predictor of an older layout instead of reusing it): 2: + edge activity,
# 3: + sibling merges (its last column; a saved predictor records how many edge columns it read)
STRUCTURE_VERSION = 3


def onehot(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    return np.stack([space.encode(a) for a in archs]).astype(float) if archs else np.zeros((0, 0))


def _op_kind(g: Graph, node) -> str:
    a = node.attrs
    if node.op != "conv":
        return node.op
    if a["groups"] > 1:
        return f"dwconv{a['kernel']}" if a["groups"] == a["cin"] else f"gconv{a['kernel']}"
    return f"conv{a['kernel']}"


def graph_counts(g: Graph) -> dict[str, float]:
    counts: dict[str, float] = {"nodes": len(g.nodes), "macs": g.macs(), "params": g.param_count()}
    for n in g.nodes:
        kind = _op_kind(g, n)
        h, w, c = g.shapes[n.output]
        counts[f"n_{kind}"] = counts.get(f"n_{kind}", 0) + 1
        counts[f"out_{kind}"] = counts.get(f"out_{kind}", 0) + h * w * c
    return counts


class GraphFeatures:
    """log1p of graph counts, vectorised over a fixed vocabulary; cached per space on disk."""

    def __init__(self, space: SearchSpace, cache_dir: str | os.PathLike | None = None,
                 graph_mode: str = DEFAULT_GRAPH_MODE):
        self.space = space
        self.graph_mode = check_mode(graph_mode)
        self.path = (Path(cache_dir) / "features" / f"{space.name}-graph-{graph_mode}-v{GRAPH_FEATURES_VERSION}.npz"
                     if cache_dir is not None else None)  # None: kept in memory only
        self._rows: dict[str, dict[str, float]] = {}
        # called as (done, total) while architectures are built: building 15625 takes tens of seconds
        self.on_progress: Callable[[int, int], None] | None = None
        if self.path is not None and self.path.exists():
            data = np.load(self.path, allow_pickle=False)
            names = list(data["names"])
            for key, row in zip(data["keys"], data["values"]):
                self._rows[str(key)] = {n: float(v) for n, v in zip(names, row) if v}

    def _ensure(self, archs: Sequence[Arch]) -> None:
        missing = [a for a in archs if a.key not in self._rows]
        for i, a in enumerate(missing):
            if self.on_progress is not None and i % 50 == 0:
                self.on_progress(i, len(missing))
            self._rows[a.key] = graph_counts(prepare(self.space.build(a), self.graph_mode))
        if missing:
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        names = sorted({n for row in self._rows.values() for n in row})
        keys = list(self._rows)
        values = np.array([[self._rows[k].get(n, 0.0) for n in names] for k in keys])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, keys=np.array(keys), names=np.array(names), values=values)
        os.replace(tmp, self.path)

    def vocabulary(self, archs: Sequence[Arch]) -> list[str]:
        self._ensure(archs)
        return sorted({n for a in archs for n in self._rows[a.key]})

    def constant_output(self, archs: Sequence[Arch]) -> np.ndarray:
        """Whose pruned network has an output that does not depend on its input (passes.is_degenerate: NB201's
        cells with no path from input to output), read off the cached counts: such a graph is only constants."""
        if self.graph_mode != "prune":
            raise ValueError("constant outputs are read off the pruned graph's counts (graph mode prune)")
        self._ensure(archs)
        return np.array([self._rows[a.key].get("nodes", 0) == self._rows[a.key].get("n_const", 0) for a in archs],
                        dtype=bool)

    def matrix(self, archs: Sequence[Arch], names: Sequence[str]) -> np.ndarray:
        self._ensure(archs)
        return np.log1p(np.array([[self._rows[a.key].get(n, 0.0) for n in names] for a in archs]))


def graph_columns(onehot_width: int, n_graph: int, n_kept: int = 0, width: int | None = None,
                  n_edges: int = 0) -> list[tuple[int, int]]:
    """Column ranges of the blocks that get an own model in the transfer fit, in the structure features
    [one-hot, graph (pruned)] and, when ``n_kept`` > 0, [..., live one-hot, graph (kept)] and, when ``n_edges`` >
    0, [..., edge activity] of total ``width`` (the layout of ``workflow.Context.features``)."""
    cols = [(onehot_width, onehot_width + n_graph)] if n_graph else []
    if n_kept or n_edges:
        if width is None:
            raise ValueError("width is needed to place the columns after the plain view")
        if n_kept:
            cols.append((width - n_edges - n_kept, width - n_edges))
        if n_edges:
            cols.append((width - n_edges, width))
    return cols


def edge_activity(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    """Per cell edge: does it hold an operation, does it hold a convolution; then how many operations a fusing
    runtime merges with a sibling (NB201: 6 + 6 + 1 columns; other spaces: an empty (n, 0) block).

    What a device pays per launched operation whatever it computes reads: HW-NAS-Bench's edge GPU costs about
    the same for any non-``none`` operation on an edge, skip included (+0.48 in log on edge 3<-2), and about
    the same for a 1x1 as a 3x3 convolution. The one-hot can express that only as four equal coefficients,
    which 20 samples cannot pin down; as its own model in the transfer ensemble (benchmarks/transfer.py, K =
    20, 20 draws, paired): edge GPU 0.849 -> 0.890, other targets within -0.006..+0.002.

    The last column (:func:`sibling_merges`) is what no per-operation count says: a runtime that merges
    operations of one kind reading the same tensor runs them as one."""
    if space.name != "nb201" or not archs:
        return np.zeros((len(archs), 0))
    from harness.models.spaces.nb201 import EDGES, OPS

    e = onehot(space, archs).reshape(len(archs), len(EDGES), len(OPS))
    conv = [OPS.index("nor_conv_1x1"), OPS.index("nor_conv_3x3")]
    return np.hstack([1.0 - e[:, :, OPS.index("none")], e[:, :, conv].sum(axis=2), sibling_merges(space, archs)])


def sibling_merges(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    """NAS-Bench-201 only, (n, 1): the live convolutions and pools that read the same node as a live operation
    of the same kind (per node and kind, count - 1).

    TensorRT fuses sibling convolutions on one input into one wider convolution and runs identical pools once:
    on Eagle's Jetson Nano fp16 each such sibling costs ~7 % less than the one-hot says (a ridge on all 1999
    OneProxy architectures: SRCC 0.935 -> 0.966 on held-out ones with the per-kind counts; the operation pairs'
    interactions, 435 columns, reach no more). As one column of the edge-activity model (benchmarks/transfer.py,
    30 paired draws): Jetson Nano fp16 0.893 -> 0.902 at K = 20, 0.918 -> 0.938 at K = 50; no target loses more
    than 0.005 at any K (the edge GPU 0.895 -> 0.892)."""
    if space.name != "nb201" or not archs:
        return np.zeros((len(archs), 0))
    from harness.models.spaces.nb201 import EDGES, OPS

    live = live_onehot(space, archs).reshape(len(archs), len(EDGES), len(OPS))
    kinds = [OPS.index(k) for k in ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")]
    merged = np.zeros(len(archs))
    for node in sorted({src for _, src in EDGES}):
        reads = [i for i, (_, src) in enumerate(EDGES) if src == node]
        merged += np.clip(live[:, reads][:, :, kinds].sum(axis=1) - 1, 0, None).sum(axis=1)
    return merged[:, None]


def fingerprint(keys: Sequence[str]) -> str:
    """Short hash of a set of architecture keys (provenance of a training set)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def live_onehot(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    """NAS-Bench-201 only: the one-hot with every operation on a dead edge written as ``none``.

    An edge is live when its source node is reachable from the cell input and its destination reaches the
    cell output through non-``none`` edges. Devices disagree on dead code (Eagle, nn-Meter and the edge
    GPU/TPU prune a convolution that feeds only ``none`` edges, HW-NAS-Bench's Pixel 3 / Pi 4 run it), so the
    predictors get both views and the fit chooses per target. Other spaces: an empty (n, 0) block.
    """
    if space.name != "nb201" or not archs:
        return np.zeros((len(archs), 0))
    from harness.models.spaces.nb201 import EDGES, OPS, parse_arch_str

    out = np.zeros((len(archs), len(EDGES) * len(OPS)))
    for r, a in enumerate(archs):
        ops = parse_arch_str(a.key)
        on = [(src, dst) for (dst, src), op in zip(EDGES, ops) if op != "none"]
        reach_in, reach_out = {0}, {3}
        for src, dst in sorted(on, key=lambda e: e[1]):  # edges go forward: one pass in order suffices
            if src in reach_in:
                reach_in.add(dst)
        for src, dst in sorted(on, key=lambda e: -e[0]):
            if dst in reach_out:
                reach_out.add(src)
        for e, ((dst, src), op) in enumerate(zip(EDGES, ops)):
            live = op != "none" and src in reach_in and dst in reach_out
            out[r, e * len(OPS) + OPS.index(op if live else "none")] = 1.0
    return out
