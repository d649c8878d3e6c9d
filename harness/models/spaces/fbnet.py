"""FBNet space as HW-NAS-Bench defines it for CIFAR-100 (and HELP uses it): 22 searchable layers.

Macro structure (HW-NAS-Bench ``hw_nas_bench_api/fbnet_models/model_infer.py``): a 3x3 conv + BN + ReLU
stem with 16 channels (stride 1 for 32x32 input); seven stages of [1, 4, 4, 4, 4, 4, 1] layers with
[16, 24, 32, 64, 112, 184, 352] channels and strides [1, 1, 2, 2, 1, 2, 1] (the first layer of a stage
takes the stride and the channel change); a 1x1 conv to 1504 + BN + ReLU, global pooling and a linear
classifier (100 classes).

Candidate blocks, index = position in :data:`OPS` (the order of ``op_idx_list``): ``kK_eE[_g2]`` is
1x1 conv (groups g) + BN + ReLU, channel shuffle when g = 2, KxK depthwise conv (stride) + BN + ReLU,
1x1 projection (groups g) + BN, plus the input when stride 1 and channels unchanged. ``skip`` is the
identity, or a 1x1 conv + BN + ReLU where the stride or the channel count changes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from harness.models.graph import Graph
from harness.models.spaces.base import Arch, SearchSpace, parse_layer_choices

OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
NUM_LAYERS = 22
STAGE_LAYERS = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STAGE_STRIDES_CIFAR = (1, 1, 2, 2, 1, 2, 1)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1504
_OP_RE = re.compile(r"^k(\d)_e(\d)(?:_g(\d))?$")


def layer_plan() -> list[tuple[int, int]]:
    """(out channels, stride) of each of the 22 searchable layers."""
    plan = []
    for n, c, s in zip(STAGE_LAYERS, STAGE_CHANNELS, STAGE_STRIDES_CIFAR):
        plan += [(c, s)] + [(c, 1)] * (n - 1)
    return plan


class FBNetSpace(SearchSpace):
    name = "fbnet"
    description = "FBNet space of HW-NAS-Bench (CIFAR-100): 22 layers x 9 blocks"
    key_columns = ("op_idx_list",)
    alias_columns = ("block_ops",)  # HW-NAS-Bench's table: the same key as block names (k5_e6|skip|...)
    default_input_shape = (32, 32, 3)
    default_num_classes = 100

    def size(self) -> int:
        return len(OPS) ** NUM_LAYERS

    def _arch(self, idx: Sequence[int]) -> Arch:
        key = "-".join(str(int(i)) for i in idx)
        return Arch(self.name, key, {"op_idx_list": key})

    def parse(self, token: str) -> Arch:
        return self._arch(parse_layer_choices(token, OPS, NUM_LAYERS, what="an FBNet", unit="FBNet block",
                                              example="op_idx_list like 7-8-1-..."))

    def sample(self, n: int, seed: int) -> list[Arch]:
        """Uniform over the 9 blocks of every layer."""
        return self.sample_distinct(n, seed, lambda rng: self._arch(rng.integers(0, len(OPS), NUM_LAYERS)))

    def encode(self, arch: Arch) -> np.ndarray:
        """22 layers x 9 blocks one-hot (198 values), blocks in op_idx_list order."""
        out = np.zeros((NUM_LAYERS, len(OPS)), np.float32)
        out[np.arange(NUM_LAYERS), [int(i) for i in arch.key.split("-")]] = 1
        return out.reshape(-1)

    def build(self, arch: Arch, input_shape: Sequence[int] | None = None,
              num_classes: int | None = None) -> Graph:
        ops = [OPS[int(i)] for i in arch.key.split("-")]
        g = Graph(f"fbnet_{arch.key}", tuple(input_shape or self.default_input_shape))
        x = g.conv("input", STEM_CHANNELS, 3, act="relu")
        for op, (cout, stride) in zip(ops, layer_plan()):
            x = self._block(g, x, op, cout, stride)
        x = g.conv(x, HEAD_CHANNELS, 1, act="relu")
        x = g.global_avgpool(x)
        g.dense(x, num_classes or self.default_num_classes)
        return g

    @staticmethod
    def _block(g: Graph, x: str, op: str, cout: int, stride: int) -> str:
        cin = g.shapes[x][2]
        same_shape = stride == 1 and cin == cout
        if op == "skip":
            return x if same_shape else g.conv(x, cout, 1, stride=stride, act="relu")
        k, e, groups = (int(v) if v else 1 for v in _OP_RE.match(op).groups())  # type: ignore[union-attr]
        mid = cin * e
        y = g.conv(x, mid, 1, groups=groups, act="relu")
        if groups > 1:
            y = g.shuffle(y, groups)
        y = g.conv(y, mid, k, stride=stride, groups=mid, act="relu")
        y = g.conv(y, cout, 1, groups=groups)
        return g.add([y, x]) if same_shape else y
