"""MobileNet-family spaces (mbv2, ofa_mbv3, proxyless): published sizes, keys, sampling, encodings,
both export formats, and importing OFA tables whose key spans four columns."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest

from harness.errors import SpaceError
from harness.models.export_onnx import to_onnx
from harness.models.graph import Graph
from harness.models.spaces import SPACES, get_space
from harness.models.spaces.mbv2 import PROXYLESS_WIDTHS, ofa_mbv2_network
from harness.models.spaces.mobile_blocks import make_divisible, mbconv
from harness.models.spaces.ofa_mbv3 import ofa_mbv3_network
from harness.models.spaces.proxyless import MOBILE_REFERENCE, OPS
from harness.results.importer import ImportFileError, import_table
from harness.results.store import Store
from tests.test_export import run_both

MBV2, MBV3, PROXYLESS = get_space("mbv2"), get_space("ofa_mbv3"), get_space("proxyless")


def ofa_key(ks, e, d, r) -> str:
    j = lambda v: "-".join(map(str, v))  # noqa: E731
    return f"ks={j(ks)}|e={j(e)}|d={j(d)}|r={r}"


# --- published sizes -------------------------------------------------------------------------
def test_mobilenet_v2_1_0_is_in_the_mbv2_space_with_its_published_size():
    """Sandler et al. 2018 (Table 4): 3.4 M / 300 M MAdds; torchvision's mobilenet_v2: 3,504,872 params."""
    a = MBV2.parse(ofa_key([3] * 21, [6] * 21, [2, 3, 4, 3, 3, 1], 224))
    g = MBV2.build(a)
    assert g.param_count() == 3_504_872
    assert g.macs() == 300_774_272 and abs(g.macs() / 300e6 - 1) < 0.01
    assert g.output_shape == (1, 1, 1000)
    assert [n.attrs["cout"] for n in g.nodes if n.op == "conv"][-1] == 1280


def test_block_helpers_rebuild_mobilenet_v3_large_exactly():
    """SE, h-swish and the MBConv helper against torchvision's mobilenet_v3_large (5,483,032 params)
    and the Keras table's 217 M MACs (Howard et al. 2019: 219 M)."""
    g = Graph("mbv3_large", (224, 224, 3))
    x = g.conv("input", 16, 3, stride=2, act="hswish")
    for cin, k, mid, cout, se, act, s in [
            (16, 3, 16, 16, 0, "relu", 1), (16, 3, 64, 24, 0, "relu", 2), (24, 3, 72, 24, 0, "relu", 1),
            (24, 5, 72, 40, 1, "relu", 2), (40, 5, 120, 40, 1, "relu", 1), (40, 5, 120, 40, 1, "relu", 1),
            (40, 3, 240, 80, 0, "hswish", 2), (80, 3, 200, 80, 0, "hswish", 1), (80, 3, 184, 80, 0, "hswish", 1),
            (80, 3, 184, 80, 0, "hswish", 1), (80, 3, 480, 112, 1, "hswish", 1), (112, 3, 672, 112, 1, "hswish", 1),
            (112, 5, 672, 160, 1, "hswish", 2), (160, 5, 960, 160, 1, "hswish", 1), (160, 5, 960, 160, 1, "hswish", 1)]:
        x = mbconv(g, x, cout, k, s, mid / cin, act, se=bool(se))
    x = g.conv(x, 960, 1, act="hswish")
    x = g.conv(g.global_avgpool(x, keepdims=True), 1280, 1, bn=False, bias=True, act="hswish")
    g.dense(x, 1000)
    assert g.param_count() == 5_483_032
    assert abs(g.macs() / 217e6 - 1) < 0.01


def ofa_mbv3_reference(ks, e, d, r, width):
    """(params, MACs) written directly from OFA's layer definitions, independently of Graph:
    ofa_mbv3.py (widths, strides, SE stages, head), dynamic_layers.py (middle = make_divisible(round(in*e)),
    SE mid = make_divisible(middle // 4)), pytorch_modules.py (SEModule convs with bias), layers.py
    (ConvLayer/MBConvLayer: conv without bias + BN)."""
    w = [make_divisible(c * width) for c in (16, 16, 24, 40, 80, 112, 160, 960, 1280)]
    params = macs = 0

    def conv(cin, cout, k, hw, groups=1, bn=True, bias=False):
        nonlocal params, macs
        params += cout * cin // groups * k * k + (2 * cout if bn else 0) + (cout if bias else 0)
        macs += hw * hw * cout * cin // groups * k * k

    def block(cin, cout, k, s, ex, hw, se):
        mid = make_divisible(round(cin * ex))
        if ex != 1:
            conv(cin, mid, 1, hw)
        hw = -(-hw // s)
        conv(mid, mid, k, hw, groups=mid)
        if se:
            conv(mid, make_divisible(mid // 4), 1, 1, bn=False, bias=True)
            conv(make_divisible(mid // 4), mid, 1, 1, bn=False, bias=True)
        conv(mid, cout, 1, hw)
        return hw

    hw = r // 2
    conv(3, w[0], 3, hw)
    hw = block(w[0], w[1], 3, 1, 1, hw, False)
    cin = w[1]
    for s, (stride, se) in enumerate(zip((2, 2, 2, 1, 2), (False, True, False, True, True))):
        for j in range(d[s]):
            hw = block(cin, w[2 + s], ks[4 * s + j], stride if j == 0 else 1, e[4 * s + j], hw, se)
            cin = w[2 + s]
    conv(cin, w[7], 1, hw)
    conv(w[7], w[8], 1, 1, bn=False)
    params += w[8] * 1000 + 1000
    macs += w[8] * 1000
    return params, macs


@pytest.mark.parametrize("width,params,mmacs", [(1.0, 7_664_760, 566.171), (1.2, 10_701_632, 843.101)])
def test_ofa_mbv3_max_subnet_matches_ofas_own_definition(width, params, mmacs):
    g = Graph("max", (224, 224, 3))
    ofa_mbv3_network(g, [7] * 20, [6] * 20, [4] * 5, 1000, width_mult=width)
    assert (g.param_count(), g.macs()) == ofa_mbv3_reference([7] * 20, [6] * 20, [4] * 5, 224, width)
    assert g.param_count() == params and g.macs() / 1e6 == pytest.approx(mmacs, abs=1e-3)
    if width == 1.0:  # mmrazor's OFA table (converted from the official w1.0 supernet): 7.6 M parameters
        assert abs(g.param_count() / 7.6e6 - 1) < 0.01
    space_max = MBV3.build(MBV3.parse(ofa_key([7] * 20, [6] * 20, [4] * 5, 224)))
    assert width != 1.2 or space_max.param_count() == params  # the registered space is w1.2


def test_ofa_mbv3_smaller_subnets_match_ofas_definition_too():
    for a in MBV3.sample(5, 3):
        ks, e, d, r = MBV3.decode(a)
        ks = [k or 3 for k in ks]  # inactive blocks (0) are never read
        g = MBV3.build(a)
        assert (g.param_count(), g.macs()) == ofa_mbv3_reference(ks, [x or 3 for x in e], d, r, 1.2)
        assert g.input_shape == (r, r, 3)


def test_proxylessnas_mobile_reference_matches_the_released_network():
    """ProxylessNAS' own log for proxyless_mobile: 'Total training params: 4.08M', 'Total FLOPs: 320.4M'
    (logs/imagenet_mobile_log.txt); pytorchcv's port of its weights counts 4,080,512 parameters."""
    g = PROXYLESS.build(PROXYLESS.parse(MOBILE_REFERENCE))
    assert g.param_count() == 4_080_512
    assert round(g.macs() / 1e6, 1) == 320.4


def test_oneproxy_s5e_supernet_widths():
    """OneProxy's S5e latency table code uses OFA's ProxylessNAS widths x 1.3: 32, 56, 104, 128, 248, 416."""
    g = Graph("w13", (224, 224, 3))
    ofa_mbv2_network(g, [3] * 21, [3] * 21, [2] * 5 + [1], 1000, PROXYLESS_WIDTHS, 1.3)
    projections = [n.attrs["cout"] for n in g.nodes if n.op == "conv" and n.attrs["kernel"] == 1 and
                   not n.attrs.get("act")]
    assert sorted(set(projections)) == [24, 32, 56, 104, 128, 248, 416]


# --- keys ------------------------------------------------------------------------------------
def test_ofa_keys_canonicalise_inactive_blocks_and_accept_ofa_dicts():
    ks, e = [7, 5, 3, 3] * 5, [6, 4, 3, 3] * 5
    a = MBV3.parse(ofa_key(ks, e, [2, 3, 4, 2, 2], 192))
    assert a.columns == {"ks": "7-5-0-0-7-5-3-0-7-5-3-3-7-5-0-0-7-5-0-0",
                         "e": "6-4-0-0-6-4-3-0-6-4-3-3-6-4-0-0-6-4-0-0", "d": "2-3-4-2-2", "resolution": 192}
    # the same network written with other values (or 0) in inactive blocks, as an OFA/HELP arch dict
    other = json.dumps({"wid": None, "ks": [7, 5, 7, 7] + [7, 5, 3, 5] + [7, 5, 3, 3] + [7, 5, 0, 0] * 2,
                        "e": [6, 4, 6, 6] + [6, 4, 3, 6] + [6, 4, 3, 3] + [6, 4, 4, 4] * 2,
                        "d": [2, 3, 4, 2, 2], "r": 192})
    assert MBV3.parse(other) == a == MBV3.parse(a.key) == MBV3.from_columns(dict(a.columns))
    assert MBV3.from_columns({"ks": ks, "e": e, "d": "2-3-4-2-2", "resolution": "192.0"}) == a
    assert MBV3.build(MBV3.parse(other)).fingerprint() == MBV3.build(a).fingerprint()


@pytest.mark.parametrize("token,needle", [
    (ofa_key([3] * 19, [3] * 20, [2] * 5, 224), "ks has 19 entries"),
    (ofa_key([4] + [3] * 19, [3] * 20, [2] * 5, 224), "ks entry 4 of block 1 (active)"),
    (ofa_key([3] * 20, [3, 3, 9] + [3] * 17, [2] * 5, 224), "e entry 9 of block 3 (inactive; 0 also allowed)"),
    (ofa_key([3] * 20, [3] * 20, [2, 2, 5, 2, 2], 224), "d entry 5 for stage 3"),
    (ofa_key([3] * 20, [3] * 20, [2] * 5, 225), "resolution 225"),
    ("ks=3-3|e=3-3", "lacks d, resolution"),
    ("kernel=3", "cannot read 'kernel=3'"),
    ('{"ks": [3', "not valid JSON"),
])
def test_bad_ofa_keys_name_the_bad_token(token, needle):
    with pytest.raises(SpaceError) as info:
        MBV3.parse(token)
    assert needle in str(info.value)
    with pytest.raises(SpaceError, match="lacks key column"):
        MBV3.from_columns({"ks": "3", "e": "3", "d": ""})


def test_mbv2_depths_take_the_fixed_last_stage():
    five = MBV2.parse(ofa_key([5] * 21, [4] * 21, [4, 4, 4, 4, 4], 160))
    assert five.columns["d"] == "4-4-4-4-4-1" and five == MBV2.parse(five.key)
    with pytest.raises(SpaceError, match="d entry 2 for stage 6"):
        MBV2.parse(ofa_key([5] * 21, [4] * 21, [4, 4, 4, 4, 4, 2], 160))


def test_proxyless_keys():
    a = PROXYLESS.parse(MOBILE_REFERENCE)
    assert a.columns == {"proxyless_ops": MOBILE_REFERENCE}
    assert PROXYLESS.parse(",".join(str(OPS.index(o)) for o in MOBILE_REFERENCE.split("-"))) == a
    with pytest.raises(SpaceError, match="layer 1 .* cannot be 'zero'"):
        PROXYLESS.parse("-".join(["zero"] * 21))
    with pytest.raises(SpaceError, match="unknown proxyless choice 'k9_e3'"):
        PROXYLESS.parse("-".join(["k9_e3"] * 21))
    with pytest.raises(SpaceError, match="has 21 layers, got 3"):
        PROXYLESS.parse("k3_e3-k3_e3-k3_e3")


# --- sampling and encodings --------------------------------------------------------------------
@pytest.mark.parametrize("space", [MBV2, MBV3, PROXYLESS], ids=lambda s: s.name)
def test_sample_is_seeded_distinct_and_prefix_stable(space):
    a = space.sample(200, 7)
    assert a == space.sample(200, 7) and space.sample(60, 7) == a[:60] and len(set(a)) == 200
    assert space.sample(20, 8) != a[:20]
    with pytest.raises(SpaceError):
        space.sample(0, 0)
    with pytest.raises(SpaceError):
        next(space.all())


def test_ofa_sampling_is_uniform_over_choices():
    a = MBV3.sample(300, 1)
    d = np.array([[int(v) for v in x.columns["d"].split("-")] for x in a])
    counts = np.bincount(d.ravel(), minlength=5)[2:]
    assert counts.min() > 0.8 * counts.mean()
    assert {x.columns["resolution"] for x in a} == set(MBV3.resolutions)


@pytest.mark.parametrize("name,length", [("nb201", 30), ("fbnet", 198), ("mbv2", 131), ("ofa_mbv3", 125),
                                         ("proxyless", 147)])
def test_encode_is_fixed_length_one_hot(name, length):
    space = get_space(name)
    archs = space.sample(20, 0)
    x = np.stack([space.encode(a) for a in archs])
    assert x.shape == (20, length) and x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
    assert len({row.tobytes() for row in x}) == 20, "distinct architectures, distinct encodings"


def test_encodings_put_each_choice_in_its_slot():
    nb = get_space("nb201").encode(get_space("nb201").parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+"
                                                             "|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"))
    assert nb.reshape(6, 5).argmax(1).tolist() == [3, 0, 1, 4, 2, 0]
    fb = get_space("fbnet").encode(get_space("fbnet").parse("-".join(["8"] + ["0"] * 21)))
    assert fb.reshape(22, 9)[0, 8] == 1 and fb.reshape(22, 9)[1:, 0].all()
    a = MBV3.parse(ofa_key([7] * 20, [3] * 20, [2] * 5, 160))
    f = MBV3.encode(a)
    assert f[0] == 1 and f.sum() == 1 + 2 * 10  # resolution + (ks, e) of the 10 active blocks
    assert f[5 + 2] == 1 and f[5 + 60] == 1  # block 1: ks=7 (third choice), e=3 (first choice)
    assert f[5 + 2 * 3: 5 + 4 * 3].sum() == 0  # blocks 3-4 inactive
    p = PROXYLESS.encode(PROXYLESS.parse(MOBILE_REFERENCE)).reshape(21, 7)
    assert p[2, 6] == 1 and p[0, 2] == 1 and p.sum() == 21


def test_every_registered_space_implements_encode():
    for cls in SPACES.values():
        assert "encode" not in getattr(cls, "__abstractmethods__", set())


# --- both formats --------------------------------------------------------------------------------
@pytest.mark.parametrize("name,key", [
    ("ofa_mbv3", ofa_key([3, 5, 7, 3] * 5, [3, 4, 6, 6] * 5, [2, 3, 4, 2, 3], 160)),
    ("mbv2", ofa_key([7, 5, 3, 5] * 5 + [7], [6, 3, 4, 4] * 5 + [6], [3, 2, 2, 4, 2, 1], 160)),
    ("proxyless", MOBILE_REFERENCE),
])
def test_onnx_and_tflite_agree_and_hold_the_described_weights(name, key):
    space = get_space(name)
    g = space.build(space.parse(key), input_shape=(64, 64, 3), num_classes=100)
    x = np.random.default_rng(3).standard_normal((1, 64, 64, 3)).astype(np.float32)
    y_onnx, y_tfl = run_both(g, x)
    assert y_onnx.shape == y_tfl.shape == (1, 100)
    assert np.isfinite(y_onnx).all() and y_onnx.std() > 1e-3, "a live signal, not NaNs or a constant"
    scale = max(1.0, float(np.abs(y_onnx).max()))
    np.testing.assert_allclose(y_tfl, y_onnx, atol=1e-4 * scale, rtol=1e-3)
    model = to_onnx(g)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 13
    n_weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                    if len(t.dims) and not t.name.endswith(("clip_min", "clip_max")))
    bn_channels = sum(n.attrs["cout"] for n in g.nodes if n.op == "conv" and n.attrs["bn"])
    assert n_weights == g.param_count() - bn_channels


# --- import: a key spread over four columns ----------------------------------------------------
def ofa_table(path, archs, **extra):
    df = pd.DataFrame({"ks": [a.columns["ks"] for a in archs], "e": [a.columns["e"] for a in archs],
                       "d": [a.columns["d"] for a in archs], "resolution": [a.columns["resolution"] for a in archs],
                       "dev_ofa_ms": np.linspace(10, 20, len(archs)), **extra})
    df.to_csv(path, index=False)
    return path


def test_import_ofa_mbv3_table_reads_four_key_columns_together(tmp_path):
    archs = MBV3.sample(6, 11)
    raw = [dict(a.columns) for a in archs]
    raw[0]["ks"] = raw[0]["ks"].replace("0", "5")  # inactive entries as the public tables write them
    raw[0]["e"] = raw[0]["e"].replace("0", "3")
    df = pd.DataFrame(raw).assign(dev_ofa_ms=np.linspace(10, 20, 6), flops_m=np.arange(6.0))
    df.to_csv(tmp_path / "ofa.csv", index=False)
    with Store(tmp_path / "s.db") as st:
        r = import_table(st, tmp_path / "ofa.csv")
        assert r.space == "ofa_mbv3" and r.rows == 6 and r.devices == {"dev_ofa": 6}
        assert r.metrics == ["flops_m"]
        keys = {k for (k,) in st.db.execute("SELECT key FROM architectures WHERE space = 'ofa_mbv3'")}
        assert keys == {a.key for a in archs}
        stored = json.loads(st.db.execute("SELECT columns_json FROM architectures WHERE key = ?",
                                          (archs[0].key,)).fetchone()[0])
        assert stored == archs[0].columns
        mb = MBV2.sample(3, 0)  # mbv2 has the same four columns: named with --space
        r2 = import_table(st, ofa_table(tmp_path / "mbv2.csv", mb), space="mbv2")
        assert r2.space == "mbv2" and r2.rows == 3
        with pytest.raises(ImportFileError, match="ofa_mbv3: ks has 21 entries"):
            import_table(st, tmp_path / "mbv2.csv")  # detected as ofa_mbv3: the error says why


def test_arch_file_with_ofa_columns_selects_those_architectures(tmp_path):
    from harness.models.selection import select

    archs = MBV3.sample(4, 2)
    picks = ofa_table(tmp_path / "picks.csv", archs + archs[:1])
    assert select(MBV3, arch_file=picks) == archs


def test_import_ofa_errors_name_line_and_token(tmp_path):
    archs = MBV3.sample(3, 0)
    bad = pd.DataFrame([dict(a.columns) for a in archs]).assign(x_ms=1.0)
    bad.loc[1, "ks"] = "3-3"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    dup = pd.DataFrame([dict(archs[0].columns)] * 2).assign(x_ms=1.0)
    dup.loc[1, "ks"] = dup.loc[1, "ks"].replace("0", "7")  # same network, other inactive values
    dup.to_csv(tmp_path / "dup.csv", index=False)
    missing = pd.DataFrame([dict(archs[0].columns)]).drop(columns=["d"]).assign(x_ms=1.0)
    missing.to_csv(tmp_path / "missing.csv", index=False)
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(ImportFileError, match=r"line 3: ofa_mbv3: ks has 2 entries"):
            import_table(st, tmp_path / "bad.csv")
        with pytest.raises(ImportFileError, match=r"duplicate architectures on lines 2, 3.*inactive"):
            import_table(st, tmp_path / "dup.csv")
        with pytest.raises(ImportFileError, match="missing key column.*d"):
            import_table(st, tmp_path / "missing.csv", space="ofa_mbv3")
        assert st.db.execute("SELECT COUNT(*) FROM architectures").fetchone()[0] == 0


def test_arch_takes_an_ofa_dict_in_json_and_names_the_space_a_key_belongs_to():
    # --arch split the JSON on its commas ("'{\"ks\": [3' is not valid JSON") though the README offers it; a key of
    # another space (a forgotten --space) said only "not a NAS-Bench-201 arch_str"
    import json

    from harness.errors import SpaceError
    from harness.models.selection import select
    from harness.models.spaces import get_space

    ofa = get_space("ofa_mbv3")
    a = ofa.sample(1, 0)[0]
    as_json = json.dumps({"ks": a.columns["ks"], "e": a.columns["e"], "d": a.columns["d"],
                          "r": a.columns["resolution"]})
    assert [x.key for x in select(ofa, archs=[as_json])] == [a.key]
    with pytest.raises(SpaceError, match="they are ofa_mbv3 keys: add --space ofa_mbv3"):
        select(get_space("nb201"), archs=[a.key])


def test_an_arch_dict_nested_thousands_deep_is_an_error_not_a_recursion_traceback():
    from harness.errors import HarnessError
    from harness.models.spaces import get_space

    with pytest.raises(HarnessError, match="nested too deeply"):
        get_space("ofa_mbv3").parse('{"ks": ' + "[" * 100_000 + "]" * 100_000 + "}")
