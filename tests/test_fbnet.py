"""FBNet (HW-NAS-Bench CIFAR-100): keys, sampling, the network's size, both formats agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.errors import SpaceError
from harness.models.spaces import get_space
from harness.models.spaces.fbnet import OPS
from tests.conftest import SHARED_DATA
from tests.test_export import run_both

SPACE = get_space("fbnet")
HELP_ARCH_0 = "7-8-1-8-4-8-8-8-7-4-1-4-7-3-2-7-3-2-4-2-4-5"
FBNET_A = "8-2-0-8-8-7-2-4-2-7-6-5-7-3-5-6-1-7-7-6-7-7"


# Parameters / MACs of HW-NAS-Bench's own FBNet_Infer (CIFAR-100, 32x32) for these architectures.
@pytest.mark.parametrize("key,params,mmacs", [
    ("-".join(["0"] * 22), 1_170_676, 31.322),
    ("-".join(["7"] * 22), 3_749_652, 160.926),
    ("-".join(["8"] * 22), 780_660, 11.609),
    (HELP_ARCH_0, 1_790_500, 67.605),
    (FBNET_A, 2_966_964, 77.580),
])
def test_size_matches_hw_nas_bench_builder(key, params, mmacs):
    g = SPACE.build(SPACE.parse(key))
    assert g.param_count() == params
    assert g.macs() / 1e6 == pytest.approx(mmacs, abs=1e-3)
    assert g.output_shape == (1, 1, 100)


@pytest.mark.parametrize("op", range(len(OPS)), ids=OPS)
def test_every_block_exports_identically_to_onnx_and_tflite(op):
    # the block under test everywhere a shape change allows it, with k5_e6 around for variety
    key = "-".join(str(op if i % 3 else 7) for i in range(22))
    g = SPACE.build(SPACE.parse(key))
    x = np.random.default_rng(op).standard_normal((1, 32, 32, 3)).astype(np.float32)
    y_onnx, y_tfl = run_both(g, x)
    scale = max(1.0, float(np.abs(y_onnx).max()))
    np.testing.assert_allclose(y_tfl.reshape(-1), y_onnx.reshape(-1), atol=1e-4 * scale, rtol=1e-3)


def test_grouped_blocks_shuffle_channels():
    g = SPACE.build(SPACE.parse("-".join(["1"] * 22)))
    assert sum(n.op == "shuffle" for n in g.nodes) == 22
    assert {n.attrs["groups"] for n in g.nodes if n.op == "conv" and n.attrs["kernel"] == 1 and
            n.attrs["cout"] != 1504 and n.attrs["groups"] > 1} == {2}


def test_parse_accepts_indices_and_names():
    a = SPACE.parse(HELP_ARCH_0)
    assert SPACE.parse("[" + HELP_ARCH_0.replace("-", ", ") + "]") == a
    assert SPACE.parse("|".join(OPS[int(i)] for i in HELP_ARCH_0.split("-"))) == a
    assert a.columns == {"op_idx_list": HELP_ARCH_0}
    for bad in ["1-2-3", "-".join(["9"] * 22), "-".join(["k7_e1"] * 22)]:
        with pytest.raises(SpaceError):
            SPACE.parse(bad)


def test_sample_is_uniform_seeded_and_prefix_stable():
    a = SPACE.sample(300, 5)
    assert a == SPACE.sample(300, 5) and SPACE.sample(100, 5) == a[:100] and len(set(a)) == 300
    counts = np.bincount([int(i) for x in a for i in x.key.split("-")], minlength=9)
    assert counts.min() > 0.7 * counts.mean()
    with pytest.raises(SpaceError):
        SPACE.all().__next__()


@pytest.mark.skipif(not (SHARED_DATA / "hwnasbench").is_dir(), reason="../shared/data not present")
def test_public_fbnet_keys_parse_and_round_trip():
    df = pd.read_csv(SHARED_DATA / "hwnasbench" / "fbnet_hwnasbench_cifar100_4dev_5000.csv.gz",
                     usecols=["op_idx_list", "block_ops"])
    for key, names in zip(df.op_idx_list, df.block_ops):
        assert SPACE.parse(key).key == key == SPACE.parse(names).key


def test_the_block_ops_column_is_checked_as_a_key_not_dropped_as_a_metric(tmp_path):
    """HW-NAS-Bench's FBNet table names each architecture twice (op_idx_list, block_ops): import warned
    "block_ops is not numeric; not imported" and never checked that the two agree."""
    from harness.results.importer import ImportFileError, import_table
    from harness.results.store import Store

    sp = get_space("fbnet")
    archs = sp.sample(4, 1)
    names = ["|".join(OPS[int(i)] for i in a.key.split("-")) for a in archs]
    df = pd.DataFrame({"op_idx_list": [a.key for a in archs], "block_ops": names, "dev_ms": [1.0, 2.0, 3.0, 4.0]})
    df.to_csv(tmp_path / "ok.csv", index=False)
    with Store(tmp_path / "s.db") as st:
        report = import_table(st, tmp_path / "ok.csv")
        assert report.space == "fbnet" and report.devices == {"dev": 4} and not report.warnings
        assert "block_ops" not in report.metrics
        df.assign(block_ops=names[1:] + names[:1]).to_csv(tmp_path / "bad.csv", index=False)
        with pytest.raises(ImportFileError, match="block_ops .* is not the same architecture"):
            import_table(st, tmp_path / "bad.csv")
