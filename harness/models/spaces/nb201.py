"""NAS-Bench-201 (Dong & Yang, ICLR 2020): the CIFAR network of a cell string.

Structure as in NAS-Bench-201's ``TinyNetwork``/``InferCell``: a 3x3 conv + BN stem with 16 channels,
three stages of five cells with 16/32/64 channels joined by residual reduction blocks
(ReLU-Conv3x3-BN stride 2, ReLU-Conv3x3-BN, shortcut AvgPool2x2 + Conv1x1), then BN-ReLU, global
average pooling and a linear classifier. A cell has four nodes; node j sums op(node i) over i < j.

``nb201_index`` is the official benchmark index. Its order is not a formula, so the package ships the
official list (``nb201_order.txt.gz``, one 6-digit operation code per index).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources

import numpy as np

from harness.errors import SpaceError
from harness.models.graph import Graph
from harness.models.spaces.base import Arch, SearchSpace

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), in arch_str order
NUM_ARCHS = 5 ** 6
_ARCH_RE = re.compile(r"^\|([a-z0-9_]+)~0\|\+\|([a-z0-9_]+)~0\|([a-z0-9_]+)~1\|\+"
                      r"\|([a-z0-9_]+)~0\|([a-z0-9_]+)~1\|([a-z0-9_]+)~2\|$")


@cache
def _order() -> tuple[tuple[str, ...], dict[tuple[str, ...], int]]:
    raw = resources.files("harness.models.spaces").joinpath("nb201_order.txt.gz").read_bytes()
    codes = gzip.decompress(raw).decode().split()
    archs = tuple(tuple(OPS[int(c)] for c in code) for code in codes)
    if len(archs) != NUM_ARCHS:
        raise SpaceError(f"nb201_order.txt.gz holds {len(archs)} architectures, expected {NUM_ARCHS}")
    return archs, {ops: i for i, ops in enumerate(archs)}


def arch_str(ops: Sequence[str]) -> str:
    o = list(ops)
    return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def parse_arch_str(s: str) -> tuple[str, ...]:
    m = _ARCH_RE.match(s.strip())
    if not m:
        raise SpaceError(f"not a NAS-Bench-201 arch_str: {s!r} "
                         "(expected e.g. |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|...~2|)")
    ops = m.groups()
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise SpaceError(f"unknown NAS-Bench-201 operation(s) {bad} in {s!r}; valid: {', '.join(OPS)}")
    return tuple(ops)


def index_to_ops(index: int) -> tuple[str, ...]:
    if not 0 <= index < NUM_ARCHS:
        raise SpaceError(f"nb201_index {index} out of range 0..{NUM_ARCHS - 1}")
    return _order()[0][index]


def ops_to_index(ops: Sequence[str]) -> int:
    return _order()[1][tuple(ops)]


class NB201Space(SearchSpace):
    name = "nb201"
    description = "NAS-Bench-201 cell space, CIFAR network (15625 architectures)"
    key_columns = ("nb201_index", "arch_str")
    default_input_shape = (32, 32, 3)
    default_num_classes = 10
    stem_channels = 16
    cells_per_stage = 5

    def size(self) -> int:
        return NUM_ARCHS

    def _arch(self, index: int) -> Arch:
        s = arch_str(index_to_ops(index))
        return Arch(self.name, s, {"nb201_index": index, "arch_str": s})

    def parse(self, token: str) -> Arch:
        t = str(token).strip()
        if re.fullmatch(r"\d+(\.0*)?", t):  # 12.0: how pandas writes an integer column that held a gap
            return self._arch(int(t.split(".")[0]))  # not through float: 10**23 read as 99999999999999991611392
        if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", t):
            raise SpaceError(f"an nb201 index is a whole number 0..{NUM_ARCHS - 1}, got {t!r}")
        return self._arch(ops_to_index(parse_arch_str(t)))

    def constant_output(self, arch: Arch) -> bool:
        """No chain of non-`none` edges from node 0 to node 3 (341 of the 15,625): the cell's output is zeros."""
        reach = {0}
        for (to, frm), op in zip(EDGES, parse_arch_str(arch.key)):  # EDGES is in topological order
            if op != "none" and frm in reach:
                reach.add(to)
        return 3 not in reach

    def sample(self, n: int, seed: int) -> list[Arch]:
        if not 0 < n <= NUM_ARCHS:
            raise SpaceError(f"--sample must be between 1 and {NUM_ARCHS} for nb201, got {n}")
        # a prefix of one seeded permutation: --sample 100 extends --sample 50 instead of replacing it
        picks = np.random.default_rng(seed).permutation(NUM_ARCHS)[:n]
        return [self._arch(int(i)) for i in picks]

    def all(self) -> Iterator[Arch]:
        return (self._arch(i) for i in range(NUM_ARCHS))

    def encode(self, arch: Arch) -> np.ndarray:
        """6 edges x 5 operations one-hot (30 values), edges in arch_str order, operations as in OPS:
        OneProxy's ``encode.pickle`` layout without its constant bias column."""
        out = np.zeros((len(EDGES), len(OPS)), np.float32)
        for edge, op in enumerate(parse_arch_str(arch.key)):
            out[edge, OPS.index(op)] = 1
        return out.reshape(-1)

    def build(self, arch: Arch, input_shape: Sequence[int] | None = None,
              num_classes: int | None = None) -> Graph:
        ops = parse_arch_str(arch.key)
        g = Graph(f"nb201_{arch.columns['nb201_index']}", tuple(input_shape or self.default_input_shape))
        c = self.stem_channels
        x = g.conv("input", c, 3)  # stem: Conv3x3 + BN
        for stage in range(3):
            if stage:
                x = self._reduction(g, x, c * 2)
                c *= 2
            for _ in range(self.cells_per_stage):
                x = self._cell(g, x, ops)
        x = g.relu(g.affine(x))  # lastact: BN + ReLU
        x = g.global_avgpool(x)
        g.dense(x, num_classes or self.default_num_classes)
        return g

    @staticmethod
    def _reduction(g: Graph, x: str, cout: int) -> str:
        """ResNetBasicblock(stride 2): ReLUConvBN x2 plus AvgPool2x2 -> Conv1x1 shortcut."""
        a = g.conv(g.relu(x), cout, 3, stride=2)
        b = g.conv(g.relu(a), cout, 3)
        shortcut = g.conv(g.avgpool(x, 2, 2, "valid"), cout, 1, bn=False)
        return g.add([shortcut, b])

    @staticmethod
    def _cell(g: Graph, x: str, ops: Sequence[str]) -> str:
        """InferCell as PyTorch runs it: node j = sum of op(node i); 'none' is Zero (x * 0) and every edge
        gets its own ReLU. This is the ``graph: keep`` model; ``prune`` folds the zeros and drops what
        no longer reaches the output (harness.models.passes)."""
        c = g.shapes[x][2]
        nodes = [x]
        for j in (1, 2, 3):
            terms = []
            for (to, src), op in zip(EDGES, ops):
                if to != j:
                    continue
                h = nodes[src]
                if op == "none":
                    terms.append(g.zero(h))
                elif op == "skip_connect":
                    terms.append(h)
                elif op == "nor_conv_1x1":
                    terms.append(g.conv(g.relu(h), c, 1))
                elif op == "nor_conv_3x3":
                    terms.append(g.conv(g.relu(h), c, 3))
                elif op == "avg_pool_3x3":
                    terms.append(g.avgpool(h, 3, 1, "same"))
            nodes.append(g.add(terms))
        return nodes[3]
