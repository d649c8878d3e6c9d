"""OFA MobileNetV3 space (Cai et al., Once-for-All, ICLR 2020): ``ofa_mbv3_d234_e346_k357_w1.2``.

Width 1.2 because that is the supernet the public OFA latency/accuracy data use: HELP's OFA tables
(``validate_imagenet.py`` loads ``ofa_mbv3_d234_e346_k357_w1.2``; its ``ArchManager`` samples resolutions
160-224), OFA's own tutorial (``FLOPsTable(multiplier=1.2)``, accuracy predictor) and OneProxy's
accuracy predictor. :func:`ofa_mbv3_network` also builds width 1.0 (used for the reference check).

Structure (OFA ``ofa/imagenet_classification/elastic_nn/networks/ofa_mbv3.py``): base widths
[16, 16, 24, 40, 80, 112, 160, 960, 1280] times the width, rounded to multiples of 8 (w1.2: 24, 24, 32,
48, 96, 136, 192, 1152, 1536). 3x3 stride-2 conv + BN + h-swish; a fixed 3x3 depthwise block (expansion
1, ReLU, residual); five stages of 2-4 blocks with strides [2, 2, 2, 1, 2], activations
[ReLU, ReLU, h-swish, h-swish, h-swish], squeeze-and-excitation in stages 2, 4, 5; a 1x1 conv + BN +
h-swish to 1152, global pooling, a 1x1 conv (no BN, no bias) + h-swish to 1536, a linear classifier.
Each of the 20 blocks has a kernel size (3/5/7) and an expansion ratio (3/4/6).
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.models.graph import Graph
from harness.models.spaces.mobile_blocks import ElasticMobileSpace, make_divisible, mbconv

BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
STRIDES = (2, 2, 2, 1, 2)
ACTS = ("relu", "relu", "hswish", "hswish", "hswish")
SE = (False, True, False, True, True)
WIDTH_MULT = 1.2


def ofa_mbv3_network(g: Graph, ks: Sequence[int], e: Sequence[int], d: Sequence[int], num_classes: int,
                     width_mult: float = WIDTH_MULT) -> None:
    """Add OFA MobileNetV3's active sub-network (inactive blocks' ks/e are not read) to ``g``."""
    w = [make_divisible(c * width_mult) for c in BASE_WIDTHS]
    x = g.conv("input", w[0], 3, stride=2, act="hswish")
    x = mbconv(g, x, w[1], 3, 1, 1, "relu")
    for s in range(5):
        for j in range(d[s]):
            i = 4 * s + j
            x = mbconv(g, x, w[2 + s], ks[i], STRIDES[s] if j == 0 else 1, e[i], ACTS[s], se=SE[s])
    x = g.conv(x, w[7], 1, act="hswish")
    x = g.global_avgpool(x, keepdims=True)
    x = g.conv(x, w[8], 1, bn=False, act="hswish")
    g.dense(x, num_classes)


class OFAMobileNetV3Space(ElasticMobileSpace):
    name = "ofa_mbv3"
    description = "Once-for-All MobileNetV3 w1.2: 20 blocks k3/5/7 x e3/4/6, depths 2-4, 160-224 px"
    default_input_shape = (224, 224, 3)
    elastic_stages = 5
    tail_blocks = 0

    def network(self, g: Graph, ks: Sequence[int], e: Sequence[int], d: Sequence[int], num_classes: int) -> None:
        ofa_mbv3_network(g, ks, e, d, num_classes)
