"""ProxylessNAS mobile search space (Cai, Zhu, Han, ICLR 2019): 21 layers, each an MBConv choice or zero.

Structure (ProxylessNAS ``search/models/super_nets/super_proxyless.py``): a 3x3 stride-2 conv + BN +
ReLU6 to 32 channels; a fixed 3x3 MBConv1 block to 16; six stages of [4, 4, 4, 4, 4, 1] searchable layers
with strides [2, 2, 2, 1, 2, 1]; a 1x1 conv + BN + ReLU6 to 1280, global pooling, a linear classifier;
input 224x224. Candidates per layer (``conv_candidates`` order): ``k3_e3, k3_e6, k5_e3, k5_e6, k7_e3,
k7_e6``, plus ``zero`` (the layer is skipped: only its identity shortcut remains) where the stride is 1
and the width is kept, i.e. layers 2-4 of the five 4-layer stages except the 96-channel stage's first
(15 layers); the first layer of each stage cannot be zero.

Stage widths are those of the released ProxylessNAS-Mobile network, [32, 40, 80, 96, 192, 320]
(4,080,512 parameters, 320.4 M MACs, per the repository's ``logs/imagenet_mobile_log.txt``); the search
script's generic default for the first stage is 24. The reference network itself is :data:`MOBILE_REFERENCE`.

Key column ``proxyless_ops``: the 21 choices as names joined by ``-`` (indices 0-6 are accepted too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from harness.errors import SpaceError
from harness.models.graph import Graph
from harness.models.spaces.base import Arch, SearchSpace, parse_layer_choices
from harness.models.spaces.mobile_blocks import mbconv

OPS = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6", "zero")
STAGE_WIDTHS = (32, 40, 80, 96, 192, 320)
STAGE_LAYERS = (4, 4, 4, 4, 4, 1)
STAGE_STRIDES = (2, 2, 2, 1, 2, 1)
STEM, FIRST_BLOCK, HEAD = 32, 16, 1280
NUM_LAYERS = sum(STAGE_LAYERS)
_OP_RE = re.compile(r"^k(\d)_e(\d)$")

# ProxylessNAS-Mobile (the paper's 74.6% / 78 ms Pixel 1 network), stage by stage, from the released
# configuration as ported with its weights by osmr/imgclsmob (pytorchcv ``proxylessnas.py``).
MOBILE_REFERENCE = "-".join([
    "k5_e3", "k3_e3", "zero", "zero",
    "k7_e3", "k3_e3", "k5_e3", "k5_e3",
    "k7_e6", "k5_e3", "k5_e3", "k5_e3",
    "k5_e6", "k5_e3", "k5_e3", "k5_e3",
    "k7_e6", "k7_e6", "k7_e3", "k7_e3",
    "k7_e6",
])


def layer_plan() -> list[tuple[int, int, bool]]:
    """(out channels, stride, zero allowed) of each of the 21 searchable layers."""
    plan, cin = [], FIRST_BLOCK
    for width, n, stride in zip(STAGE_WIDTHS, STAGE_LAYERS, STAGE_STRIDES):
        for j in range(n):
            s = stride if j == 0 else 1
            plan.append((width, s, s == 1 and cin == width))
            cin = width
    return plan


class ProxylessSpace(SearchSpace):
    name = "proxyless"
    description = "ProxylessNAS mobile space: 21 layers x {k3,k5,k7} x {e3,e6} or zero, 224 px"
    key_columns = ("proxyless_ops",)
    default_input_shape = (224, 224, 3)
    default_num_classes = 1000

    def size(self) -> int:
        n_zero = sum(z for _, _, z in layer_plan())
        return len(OPS) ** n_zero * (len(OPS) - 1) ** (NUM_LAYERS - n_zero)

    def _arch(self, idx: Sequence[int], token: object) -> Arch:
        for i, ((_, _, zero_ok), op) in enumerate(zip(layer_plan(), idx)):
            if OPS[op] == "zero" and not zero_ok:
                raise SpaceError(f"proxyless: layer {i + 1} in {token!r} cannot be 'zero' (it changes the stride "
                                 f"or the width); expected one of {', '.join(OPS[:-1])}")
        key = "-".join(OPS[i] for i in idx)
        return Arch(self.name, key, {"proxyless_ops": key})

    def parse(self, token: str) -> Arch:
        idx = parse_layer_choices(token, OPS, NUM_LAYERS, what="a proxyless", unit="proxyless choice",
                                  example=f"proxyless_ops like {MOBILE_REFERENCE[:35]}...")
        return self._arch(idx, token)

    def sample(self, n: int, seed: int) -> list[Arch]:
        """Uniform over each layer's valid choices."""
        n_choices = [len(OPS) if zero_ok else len(OPS) - 1 for _, _, zero_ok in layer_plan()]
        return self.sample_distinct(n, seed, lambda rng: self._arch([int(rng.integers(0, c)) for c in n_choices],
                                                                      "sample"))

    def encode(self, arch: Arch) -> np.ndarray:
        """21 layers x 7 choices one-hot (147 values), choices in OPS order (``zero`` last)."""
        out = np.zeros((NUM_LAYERS, len(OPS)), np.float32)
        out[np.arange(NUM_LAYERS), [OPS.index(op) for op in arch.key.split("-")]] = 1
        return out.reshape(-1)

    def build(self, arch: Arch, input_shape: Sequence[int] | None = None,
              num_classes: int | None = None) -> Graph:
        ops = arch.key.split("-")
        g = Graph(f"proxyless_{'-'.join(str(OPS.index(o)) for o in ops)}",
                  tuple(input_shape or self.default_input_shape))
        x = g.conv("input", STEM, 3, stride=2, act="relu6")
        x = mbconv(g, x, FIRST_BLOCK, 3, 1, 1, "relu6", residual=False)
        for op, (cout, stride, _) in zip(ops, layer_plan()):
            if op == "zero":  # zero op + identity shortcut: the layer passes its input through
                continue
            k, e = (int(v) for v in _OP_RE.match(op).groups())  # type: ignore[union-attr]
            x = mbconv(g, x, cout, k, stride, e, "relu6")
        x = g.conv(x, HEAD, 1, act="relu6")
        x = g.global_avgpool(x)
        g.dense(x, num_classes or self.default_num_classes)
        return g
