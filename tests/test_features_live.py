"""The live-edges-only NB201 encoding: dead convolutions are written as none, live ones kept."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as hst

from harness.analysis.features import live_onehot, onehot
from harness.models.spaces import get_space
from harness.models.spaces.nb201 import OPS, arch_str

SPACE = get_space("nb201")


def ops_of(v: np.ndarray) -> list[str]:
    return [OPS[i] for i in v.reshape(6, 5).argmax(axis=1)]


def test_dead_edges_become_none():
    cases = {
        # node 1 feeds only none edges: its conv is dead; so is 2<-0 (node 2 feeds only none)
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|":
            ["none", "none", "none", "skip_connect", "none", "none"],
        # node 1 has no live input: the conv 2<-1 computes on nothing
        "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|":
            ["none", "nor_conv_3x3", "none", "none", "none", "skip_connect"],
        # everything live
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|":
            ["nor_conv_3x3", "nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "nor_conv_3x3"],
    }
    for key, expected in cases.items():
        assert ops_of(live_onehot(SPACE, [SPACE.parse(key)])[0]) == expected


@settings(max_examples=80, deadline=None)
@given(hst.lists(hst.sampled_from(OPS), min_size=6, max_size=6))
def test_live_view_only_ever_turns_ops_into_none(ops):
    a = SPACE.parse(arch_str(ops))
    live, plain = ops_of(live_onehot(SPACE, [a])[0]), ops_of(onehot(SPACE, [a])[0])
    assert all(lv == p or lv == "none" for lv, p in zip(live, plain))
    # the edges straight into the output are live exactly when they are not none
    assert live[3] == plain[3] and (live[5] == plain[5] or plain[5] == "none" or live[5] == "none")
    assert live_onehot(SPACE, [a]).sum() == 6


def test_other_spaces_get_an_empty_block():
    fb = get_space("fbnet")
    assert live_onehot(fb, fb.sample(3, 0)).shape == (3, 0)
