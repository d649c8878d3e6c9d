"""MobileNet-style building blocks and the elastic OFA search-space logic shared by mbv2 and ofa_mbv3.

The blocks follow Once-for-All's definitions (``ofa/utils/layers.py`` ``MBConvLayer``,
``ofa/utils/pytorch_modules.py`` ``SEModule`` / ``make_divisible``), so parameter counts match OFA's
networks exactly. :class:`ElasticMobileSpace` holds what OFA's two elastic MobileNet supernets share:
per-block kernel size and expansion ratio, per-stage depth and the input resolution, keyed by the
``ks``, ``e``, ``d``, ``resolution`` columns of the public OFA latency tables.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from harness.errors import SpaceError
from harness.models.graph import Graph
from harness.models.spaces.base import Arch, SearchSpace


def make_divisible(v: float, divisor: int = 8, min_val: int | None = None) -> int:
    """TensorFlow's/OFA's channel rounding: nearest multiple of ``divisor``, never more than 10% down."""
    min_val = divisor if min_val is None else min_val
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def mid_channels(cin: int, expand: float) -> int:
    """Width of an inverted bottleneck, as OFA's DynamicMBConvLayer computes it."""
    return make_divisible(round(cin * expand))


def squeeze_excite(g: Graph, x: str, reduction: int = 4) -> str:
    """OFA's SEModule: mean -> 1x1 conv (bias) + ReLU -> 1x1 conv (bias) + h-sigmoid -> x * gate."""
    c = g.shapes[x][2]
    s = g.global_avgpool(x, keepdims=True)
    s = g.conv(s, make_divisible(c // reduction), 1, bn=False, bias=True, act="relu")
    s = g.conv(s, c, 1, bn=False, bias=True, act="hsigmoid")
    return g.mul(x, s)


def mbconv(g: Graph, x: str, cout: int, kernel: int, stride: int, expand: float, act: str,
           se: bool = False, residual: bool | None = None) -> str:
    """Inverted residual block (MobileNetV2/V3): [1x1 expand + BN + act] -> KxK depthwise + BN + act
    [-> SE] -> 1x1 project + BN [+ input]. The shortcut is used when stride 1 and the shape is kept
    (``residual=None``), as OFA's and ProxylessNAS' builders decide."""
    cin = g.shapes[x][2]
    y = x
    mid = cin
    if expand != 1:
        mid = mid_channels(cin, expand)
        y = g.conv(y, mid, 1, act=act)
    y = g.conv(y, mid, kernel, stride=stride, groups=mid, act=act)
    if se:
        y = squeeze_excite(g, y)
    y = g.conv(y, cout, 1)
    if residual is None:
        residual = stride == 1 and cin == cout
    return g.add([y, x]) if residual else y


def short_hash(text: str) -> str:
    """A stable 10-hex tag for graph names (the full key is too long for a file or graph name)."""
    return hashlib.sha256(text.encode()).hexdigest()[:10]


_FIELD_ALIASES = {"ks": "ks", "k": "ks", "e": "e", "d": "d", "r": "r", "resolution": "r", "image_size": "r"}


def _int_list(value: Any, what: str, token: object) -> list[int]:
    """'3-5-7', '3,5,7', '[3, 5, 7]' or a sequence -> [3, 5, 7]; SpaceError naming the bad entry."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[-,\s\[\]]+", value.strip()) if p]
    elif isinstance(value, (int, float, np.integer, np.floating)):
        parts = [value]
    else:
        parts = list(value)
    out = []
    for p in parts:
        try:
            f = float(p)
        except (TypeError, ValueError):
            raise SpaceError(f"{what}: entry {p!r} in {token!r} is not a number") from None
        if f != int(f):
            raise SpaceError(f"{what}: entry {p!r} in {token!r} is not a whole number")
        out.append(int(f))
    return out


class ElasticMobileSpace(SearchSpace):
    """OFA-style elastic MobileNet: per-block kernel/expansion, per-stage depth, input resolution.

    Canonical key ``ks=3-5-...|e=4-6-...|d=2-3-...|r=224``. Blocks beyond their stage's depth are
    inactive: their ``ks``/``e`` entries are ignored by the network, so the canonical key writes 0 there
    (as OFA's own ``MobileNetArchEncoder.feature2arch`` does). Two rows that differ only in inactive
    entries are the same network and the same architecture here.
    """

    key_columns = ("ks", "e", "d", "resolution")
    resolution_in_key = True
    composite_key = True
    kernel_sizes: ClassVar[tuple[int, ...]] = (3, 5, 7)
    expand_ratios: ClassVar[tuple[int, ...]] = (3, 4, 6)
    depths: ClassVar[tuple[int, ...]] = (2, 3, 4)
    resolutions: ClassVar[tuple[int, ...]] = (160, 176, 192, 208, 224)
    max_depth: ClassVar[int] = 4
    elastic_stages: ClassVar[int] = 5  # stages of max_depth blocks whose depth is searched
    tail_blocks: ClassVar[int] = 0  # blocks after them with a fixed depth of 1 (mbv2's 320-channel stage)
    default_num_classes = 1000

    # --- layout -------------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return self.elastic_stages * self.max_depth + self.tail_blocks

    @property
    def n_depths(self) -> int:
        return self.elastic_stages + self.tail_blocks

    def active(self, d: Sequence[int]) -> list[bool]:
        """Which of the blocks run for stage depths ``d``."""
        flags = [i % self.max_depth < d[i // self.max_depth] for i in range(self.elastic_stages * self.max_depth)]
        return flags + [True] * self.tail_blocks

    def size(self) -> int:
        per_stage = sum((len(self.kernel_sizes) * len(self.expand_ratios)) ** n for n in self.depths)
        tail = (len(self.kernel_sizes) * len(self.expand_ratios)) ** self.tail_blocks
        return per_stage ** self.elastic_stages * tail * len(self.resolutions)

    # --- keys ---------------------------------------------------------------------------
    def _make(self, ks: Sequence[int], e: Sequence[int], d: Sequence[int], r: int, token: object) -> Arch:
        """Validate and canonicalise (inactive blocks -> 0); SpaceError names the bad entry."""
        nb, nd = self.n_blocks, self.n_depths
        d = list(d)
        if self.tail_blocks and len(d) == self.elastic_stages:
            d += [1] * self.tail_blocks  # OFA's ProxylessNAS supernet fixes the last stage's depth at 1
        for what, vals, n, unit in (("ks", ks, nb, "kernel size per block"), ("e", e, nb, "expansion ratio per block"),
                                    ("d", d, nd, "depth per stage")):
            if len(vals) != n:
                raise SpaceError(f"{self.name}: {what} has {len(vals)} entries in {token!r}; expected {n} "
                                 f"(one {unit})")
        for s, v in enumerate(d):
            allowed = self.depths if s < self.elastic_stages else (1,)
            if v not in allowed:
                raise SpaceError(f"{self.name}: d entry {v} for stage {s + 1} in {token!r}; expected one of "
                                 f"{', '.join(map(str, allowed))}")
        if r not in self.resolutions:
            raise SpaceError(f"{self.name}: resolution {r} in {token!r}; expected one of "
                             f"{', '.join(map(str, self.resolutions))}")
        flags = self.active(d)
        cks, ce = [], []
        for i, (k, x, on) in enumerate(zip(ks, e, flags)):
            for what, v, allowed in (("ks", k, self.kernel_sizes), ("e", x, self.expand_ratios)):
                if v not in allowed and (on or v != 0):
                    state = "active" if on else "inactive; 0 also allowed"
                    raise SpaceError(f"{self.name}: {what} entry {v} of block {i + 1} ({state}) in {token!r}; "
                                     f"expected one of {', '.join(map(str, allowed))}")
            cks.append(k if on else 0)
            ce.append(x if on else 0)
        cols = {"ks": "-".join(map(str, cks)), "e": "-".join(map(str, ce)), "d": "-".join(map(str, d)),
                "resolution": int(r)}
        key = f"ks={cols['ks']}|e={cols['e']}|d={cols['d']}|r={r}"
        return Arch(self.name, key, cols)

    def _from_fields(self, fields: dict[str, Any], token: object) -> Arch:
        missing = [f for f in ("ks", "e", "d", "r") if f not in fields or fields[f] is None]
        if missing:
            names = ", ".join("resolution" if m == "r" else m for m in missing)
            raise SpaceError(f"{self.name}: {token!r} lacks {names}; expected ks, e, d and resolution "
                             "(e.g. ks=3-5-...|e=3-4-...|d=2-3-...|r=224)")
        r = _int_list(fields["r"], "resolution", token)
        if len(r) != 1:
            raise SpaceError(f"{self.name}: resolution in {token!r} must be one number, got {r}")
        return self._make(_int_list(fields["ks"], "ks", token), _int_list(fields["e"], "e", token),
                          _int_list(fields["d"], "d", token), r[0], token)

    def parse(self, token: str) -> Arch:
        """``ks=..|e=..|d=..|r=..`` (the canonical key) or an OFA arch dict as JSON."""
        t = str(token).strip()
        if t.startswith("{"):
            try:
                raw = json.loads(t)
            except json.JSONDecodeError as err:
                raise SpaceError(f"{self.name}: {t!r} is not valid JSON ({err.msg})") from None
            except RecursionError:  # {"ks": [[[[...]]]]} thousands deep
                raise SpaceError(f"{self.name}: {t[:60]!r}... is nested too deeply for an OFA arch dict") from None
            fields = {_FIELD_ALIASES[k]: v for k, v in raw.items() if k in _FIELD_ALIASES}
            return self._from_fields(fields, token)
        fields: dict[str, Any] = {}
        for part in re.split(r"[|;]", t):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            if not sep or name not in _FIELD_ALIASES:
                raise SpaceError(f"{self.name}: cannot read {part.strip()!r} in {token!r}; expected "
                                 "ks=3-5-...|e=3-4-...|d=2-3-...|r=224 or an OFA arch dict as JSON")
            fields[_FIELD_ALIASES[name]] = value
        return self._from_fields(fields, token)

    def from_columns(self, row: dict[str, Any]) -> Arch:
        """The four key columns together make one key (the importer calls this for composite keys)."""
        def present(col: str) -> bool:
            v = row.get(col)
            return v is not None and str(v).strip() not in ("", "nan", "None")

        missing = [c for c in self.key_columns if not present(c)]
        if missing:
            raise SpaceError(f"{self.name}: row lacks key column(s) {', '.join(missing)}; all of "
                             f"{', '.join(self.key_columns)} are needed")
        fields = {"ks": row["ks"], "e": row["e"], "d": row["d"], "r": row["resolution"]}
        return self._from_fields(fields, {c: row[c] for c in self.key_columns})

    def decode(self, arch: Arch) -> tuple[list[int], list[int], list[int], int]:
        """(ks, e, d, resolution) of a canonical architecture; inactive blocks have ks = e = 0."""
        c = arch.columns
        return ([int(v) for v in str(c["ks"]).split("-")], [int(v) for v in str(c["e"]).split("-")],
                [int(v) for v in str(c["d"]).split("-")], int(c["resolution"]))

    # --- sampling and encoding ----------------------------------------------------------
    def sample(self, n: int, seed: int) -> list[Arch]:
        """Uniform over every choice, as OFA's ``sample_active_subnet``."""
        ks_c, e_c, d_c = np.array(self.kernel_sizes), np.array(self.expand_ratios), np.array(self.depths)

        def draw(rng: np.random.Generator) -> Arch:
            ks = ks_c[rng.integers(0, len(ks_c), self.n_blocks)]
            e = e_c[rng.integers(0, len(e_c), self.n_blocks)]
            d = d_c[rng.integers(0, len(d_c), self.elastic_stages)]
            r = self.resolutions[int(rng.integers(0, len(self.resolutions)))]
            return self._make(ks.tolist(), e.tolist(), d.tolist(), r, "sample")

        return self.sample_distinct(n, seed, draw)

    def encode(self, arch: Arch) -> np.ndarray:
        """OFA's ``MobileNetArchEncoder.arch2feature`` layout: resolution one-hot, then a kernel-size
        one-hot per block, then an expansion one-hot per block; inactive blocks are all zeros."""
        ks, e, d, r = self.decode(arch)
        nr, nk, ne = len(self.resolutions), len(self.kernel_sizes), len(self.expand_ratios)
        out = np.zeros(nr + self.n_blocks * (nk + ne), np.float32)
        out[self.resolutions.index(r)] = 1
        for i, (k, x) in enumerate(zip(ks, e)):
            if k:
                out[nr + i * nk + self.kernel_sizes.index(k)] = 1
                out[nr + self.n_blocks * nk + i * ne + self.expand_ratios.index(x)] = 1
        return out

    # --- building -----------------------------------------------------------------------
    def build(self, arch: Arch, input_shape: Sequence[int] | None = None,
              num_classes: int | None = None) -> Graph:
        """The network at the architecture's resolution (``input_shape`` overrides it, e.g. for tests)."""
        ks, e, d, r = self.decode(arch)
        g = Graph(f"{self.name}_r{r}_{short_hash(arch.key)}", tuple(input_shape or (r, r, 3)))
        self.network(g, ks, e, d, num_classes or self.default_num_classes)
        return g

    @abstractmethod
    def network(self, g: Graph, ks: Sequence[int], e: Sequence[int], d: Sequence[int], num_classes: int) -> None:
        """Add the layers of the (ks, e, d) sub-network to ``g``."""
