"""NAS-Bench-201: index <-> arch_str as in the public data, sampling, and the network's published size."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.errors import SpaceError
from harness.models.spaces import get_space
from harness.models.spaces.nb201 import NUM_ARCHS, OPS, arch_str, ops_to_index, parse_arch_str
from tests.conftest import SHARED_DATA

ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.fixture(scope="module")
def space():
    return get_space("nb201")


@pytest.mark.skipif(not (SHARED_DATA / "nb201_accuracy").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("path", ["nb201_accuracy/nb201_accuracy_15625.csv.gz",
                                  "hwnasbench/nb201_hwnasbench_cifar10_4dev_15625.csv.gz",
                                  "oneproxy/nb201_oneproxy_18dev_1999.csv.gz",
                                  "eagle/nb201_eagle_i7_7820x_15284.csv.gz"])
def test_index_and_arch_str_match_public_data_exactly(space, path):
    df = pd.read_csv(SHARED_DATA / path, usecols=["nb201_index", "arch_str"])
    for idx, s in zip(df.nb201_index, df.arch_str):
        a = space.parse(str(idx))
        assert a.key == s
        assert space.parse(s).columns["nb201_index"] == idx


def test_round_trip_every_index(space):
    for i in range(0, NUM_ARCHS, 7):
        a = space.parse(str(i))
        assert ops_to_index(parse_arch_str(a.key)) == i
    assert len({space.parse(str(i)).key for i in range(NUM_ARCHS)}) == NUM_ARCHS


def test_sample_is_seeded_and_without_repeats(space):
    a, b, c = space.sample(500, 3), space.sample(500, 3), space.sample(500, 4)
    assert a == b and a != c
    assert len(set(a)) == 500
    assert space.sample(200, 3) == a[:200]  # growing a sample keeps what was measured
    assert len(space.sample(NUM_ARCHS, 0)) == NUM_ARCHS


@pytest.mark.parametrize("n", [0, -1, NUM_ARCHS + 1])
def test_sample_size_is_checked(space, n):
    with pytest.raises(SpaceError):
        space.sample(n, 0)


@pytest.mark.parametrize("bad", ["|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "abc", "-3", "15625",
                                 "|none~0|+|none~0|none~1|+|none~0|none~1|"])
def test_bad_keys_are_rejected(space, bad):
    with pytest.raises(SpaceError):
        space.parse(bad)


def test_an_index_written_as_a_float_is_that_index_and_a_fraction_says_what_an_index_is(space):
    # pandas writes 12.0 for an integer column that held a gap; it was refused as 'not a NAS-Bench-201 arch_str'
    assert space.parse("12.0") == space.parse("12") and space.parse(" 7. ") == space.parse("7")
    with pytest.raises(SpaceError, match="whole number 0..15624, got '12.5'"):
        space.parse("12.5")


# Published NAS-Bench-201 CIFAR-10 sizes (10 classes): the largest cell (all nor_conv_3x3) has
# 1.5315 M parameters and 220.1 M FLOPs; the smallest network (all 'none') 0.0733 M parameters.
@pytest.mark.parametrize("key,params,mflops", [(ALL_CONV3, 1_531_546, 220.11), (ALL_NONE, 73_306, 7.78)])
def test_parameter_count_and_flops_match_published_values(space, key, params, mflops):
    g = space.build(space.parse(key))
    assert g.param_count() == params
    assert g.macs() / 1e6 == pytest.approx(mflops, abs=0.01)


def test_network_structure(space):
    g = space.build(space.parse(ALL_CONV3))
    convs = [n for n in g.nodes if n.op == "conv"]
    # stem + 15 cells x 6 convs + 2 reductions x 3 convs
    assert len(convs) == 1 + 15 * 6 + 2 * 3
    assert sorted({n.attrs["cout"] for n in convs}) == [16, 32, 64]
    assert g.output_shape == (1, 1, 10)
    assert space.build(space.parse("0"), input_shape=(64, 64, 3), num_classes=100).output_shape == (1, 1, 100)


def test_param_count_grows_with_conv_ops(space):
    sizes = {op: space.build(space.parse(arch_str([op] * 6))).param_count() for op in OPS}
    assert sizes["none"] == sizes["skip_connect"] == sizes["avg_pool_3x3"] == 73_306
    assert sizes["nor_conv_1x1"] == 73_306 + 5 * 6 * sum(c * c + 2 * c for c in (16, 32, 64))


@pytest.mark.parametrize("name,content,message", [
    ("junk.txt", bytes(range(128, 256)), "not UTF-8 text"),
    ("empty.csv", b"", "cannot read"),
    ("binary.csv", bytes(range(128, 256)) * 2, "not UTF-8"),
    ("broken.csv.gz", b"\x1f\x8b\x08\x00garbage", "truncated or damaged"),
    ("header.csv", b"nb201_index\n", "a header but no rows"),
    ("comments.txt", b"# nothing\n\n", "names no architecture"),
    ("disagree.csv", b"nb201_index,arch_str\n5,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n",
     "not the same architecture"),  # was taken as index 5, silently (import refuses it)
])
def test_a_bad_arch_file_is_a_clear_error(tmp_path, name, content, message):
    """These were UnicodeDecodeError / EmptyDataError / ParserError tracebacks, or an empty list measured as
    'all 0 architectures are already in the store'."""
    from harness.models.selection import select

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SpaceError, match=message):
        select(get_space("nb201"), arch_file=path)
    with pytest.raises(SpaceError, match="--arch names no architecture"):
        select(get_space("nb201"), archs=["", " ,"])


def test_a_huge_index_is_named_as_written_not_rounded_through_a_float():
    from harness.errors import HarnessError
    from harness.models.spaces import get_space

    with pytest.raises(HarnessError, match="99999999999999999999999 out of range"):
        get_space("nb201").parse("99999999999999999999999")
    assert get_space("nb201").parse("12.0").key == get_space("nb201").parse("12").key
