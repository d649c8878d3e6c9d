"""MobileNetV2 space as Once-for-All defines it (and OneProxy measures it): elastic kernel, expansion,
depth and resolution on MobileNetV2's macro structure.

OFA builds it with ``OFAProxylessNASNets(base_stage_width="google")``
(``ofa/imagenet_classification/elastic_nn/networks/ofa_proxyless.py``): widths
[32, 16, 24, 32, 64, 96, 160, 320, 1280] (width 1.0); a 3x3 stride-2 conv + BN + ReLU6; a fixed 3x3
depthwise block (expansion 1, no residual) to 16; five stages of 2-4 blocks (24, 32, 64, 96, 160 channels,
strides 2, 2, 2, 1, 2) and a last stage of one block (320, stride 1); ReLU6 everywhere, no SE; a 1x1 conv
+ BN + ReLU6 to 1280, global pooling, a linear classifier. Each of the 21 blocks has a kernel size
(3/5/7) and an expansion ratio (3/4/6); ``d`` has 6 entries as in OFA's arch dicts, the last always 1
(5 entries are accepted and completed).

MobileNetV2 1.0 itself is a member: ks = 3, e = 6 everywhere, d = 2-3-4-3-3-1, r = 224 (3,504,872
parameters, 300.8 M MACs).

OneProxy's MobileNet-V2 latency code (``functions/latency_table_measure.py``, shipped only as a .pyc)
uses OFA's ProxylessNAS-width supernet ``ofa_proxyless_d234_e346_k357_w1.3`` instead (stage widths
32, 56, 104, 128, 248, 416): same choices and key, wider layers. :func:`ofa_mbv2_network` builds it
with ``stage_widths=PROXYLESS_WIDTHS, width_mult=1.3``.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.models.graph import Graph
from harness.models.spaces.mobile_blocks import ElasticMobileSpace, make_divisible, mbconv

GOOGLE_WIDTHS = (32, 16, 24, 32, 64, 96, 160, 320, 1280)  # MobileNetV2
PROXYLESS_WIDTHS = (32, 16, 24, 40, 80, 96, 192, 320, 1280)  # ProxylessNAS (OFA's default)
STRIDES = (2, 2, 2, 1, 2, 1)


def ofa_mbv2_network(g: Graph, ks: Sequence[int], e: Sequence[int], d: Sequence[int], num_classes: int,
                     stage_widths: Sequence[int] = GOOGLE_WIDTHS, width_mult: float = 1.0) -> None:
    """Add the active sub-network of OFA's MobileNetV2-style supernet to ``g`` (21 blocks, 6 stages)."""
    w = [make_divisible(c * width_mult) for c in stage_widths]
    x = g.conv("input", w[0], 3, stride=2, act="relu6")
    x = mbconv(g, x, w[1], 3, 1, 1, "relu6", residual=False)
    for s in range(6):
        for j in range(d[s]):
            i = 4 * s + j
            x = mbconv(g, x, w[2 + s], ks[i], STRIDES[s] if j == 0 else 1, e[i], "relu6")
    x = g.conv(x, w[8], 1, act="relu6")
    x = g.global_avgpool(x)
    g.dense(x, num_classes)


class MobileNetV2Space(ElasticMobileSpace):
    name = "mbv2"
    description = "OFA MobileNetV2 space (w1.0): 21 blocks k3/5/7 x e3/4/6, depths 2-4, 160-224 px"
    default_input_shape = (224, 224, 3)
    elastic_stages = 5
    tail_blocks = 1
    detect_from_columns = False  # ks/e/d/resolution tables are ofa_mbv3's (the public HELP data)

    def network(self, g: Graph, ks: Sequence[int], e: Sequence[int], d: Sequence[int], num_classes: int) -> None:
        ofa_mbv2_network(g, ks, e, d, num_classes)
