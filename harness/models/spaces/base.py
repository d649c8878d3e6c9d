"""What every search space provides: sampling, keys, a builder to the shared Graph, and an encoding."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.errors import SpaceError
from harness.models.graph import Graph


@dataclass(frozen=True)
class Arch:
    """One architecture of a space. ``key`` is its canonical string; ``columns`` its key columns."""

    space: str
    key: str
    columns: dict[str, Any]

    def __hash__(self) -> int:
        return hash((self.space, self.key))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and (self.space, self.key) == (other.space, other.key)

    @property
    def label(self) -> str:
        """How to name it on a screen: its index where the space numbers architectures (nb201's, what --arch
        takes; a 90-character arch_str folds mid-token at 80 columns), else its key."""
        first = next(iter(self.columns.values()), None)
        return str(first) if isinstance(first, int) else self.key


def parse_layer_choices(token: object, choices: Sequence[str], n_layers: int, *, what: str, unit: str,
                        example: str) -> list[int]:
    """Indices into ``choices`` of a one-choice-per-layer token (fbnet, proxyless): ``7-8-1-...``,
    ``k3_e1,skip,...``, brackets and ``-`` ``,`` ``|`` or spaces as separators, indices or names."""
    t = str(token).strip().strip("[]()")
    parts = [p.strip() for p in re.split(r"[-,|\s]+", t) if p.strip()]
    if len(parts) != n_layers:
        raise SpaceError(f"{what} architecture has {n_layers} layers, got {len(parts)} in {token!r} "
                         f"(expected {example}; indices 0..{len(choices) - 1} or names)")
    idx = []
    for p in parts:
        if p.isdigit() and int(p) < len(choices):
            idx.append(int(p))
        elif p in choices:
            idx.append(list(choices).index(p))
        else:
            raise SpaceError(f"unknown {unit} {p!r} in {token!r}; valid: 0..{len(choices) - 1} or "
                             f"{', '.join(choices)}")
    return idx


MAX_SAMPLE = 1_000_000  # architectures one --sample may ask for (a campaign of a million is weeks of device time)


class SearchSpace(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""  # one line for `harness spaces`
    key_columns: ClassVar[tuple[str, ...]]
    # the (H, W, C) a model is built at and its classes: a space that only names architectures (imported tables)
    # may leave them out; building at another input shape needs the channels (an AttributeError before)
    default_input_shape: ClassVar[tuple[int, int, int] | None] = None
    default_num_classes: ClassVar[int | None] = None
    # True when the key columns only together name an architecture (ofa_mbv3's ks, e, d, resolution):
    # tables are then read row by row with from_columns. False: each key column alone names it (nb201's
    # nb201_index and arch_str), and the importer checks that the columns agree.
    composite_key: ClassVar[bool] = False
    # True when the resolution is part of an architecture's key (OFA spaces): a profile may not override it
    resolution_in_key: ClassVar[bool] = False
    # False when another space has the same key columns and should claim tables that have them (mbv2 shares
    # ofa_mbv3's); such tables import into this space only with an explicit space (--space).
    detect_from_columns: ClassVar[bool] = True
    # other columns that name an architecture in published tables (HW-NAS-Bench's FBNet `block_ops`, the names
    # of `op_idx_list`): the importer checks they agree with the key and does not take them for a metric
    alias_columns: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def size(self) -> int | None:
        """Number of architectures, or None when the space is too large to enumerate."""

    @abstractmethod
    def parse(self, token: str) -> Arch:
        """An architecture from a user's token (index, key string, ...); SpaceError if invalid."""

    @abstractmethod
    def sample(self, n: int, seed: int) -> list[Arch]:
        """n distinct architectures, reproducible for a seed."""

    def sample_distinct(self, n: int, seed: int, draw: Callable[[np.random.Generator], Arch]) -> list[Arch]:
        """n distinct architectures from repeated ``draw``s of one seeded stream. Each draw consumes a fixed
        run of the stream, so a smaller sample is a prefix of a larger one with the same seed. More than the
        space holds is an error, not an endless loop (a 12-architecture plug-in space drew for ever)."""
        size = self.size()
        if n > MAX_SAMPLE:  # 10^8 drew for minutes into a gigabyte before anything was said
            raise SpaceError(f"--sample {n:,} is more than any campaign measures; at most {MAX_SAMPLE:,}")
        if n < 1 or (size is not None and n > size):
            raise SpaceError(f"--sample must be between 1 and {size} for {self.name}, got {n}" if size is not None
                             else f"--sample must be at least 1, got {n}")
        rng = np.random.default_rng(seed)
        seen: dict[str, Arch] = {}
        draws, cap = 0, 1000 * n + 10_000
        while len(seen) < n:  # repeats (rare in large spaces) are drawn again
            a = draw(rng)
            seen.setdefault(a.key, a)
            draws += 1
            if draws >= cap:
                raise SpaceError(f"{self.name}: {draws} draws found only {len(seen)} distinct architectures, "
                                 f"fewer than the {n} asked for; sample fewer (--sample {len(seen)})")
        return list(seen.values())

    def all(self) -> Iterator[Arch]:
        raise SpaceError(f"space {self.name!r} cannot be enumerated; use --sample")

    def constant_output(self, arch: Arch) -> bool:
        """Whether the network's output cannot depend on its input by construction (NB201: no path of operations
        from a cell's input to its output), known without building it: analyses that leave such networks out
        (``degenerate=False``) also leave out imported rows of them. Spaces whose networks always read their
        input keep this default."""
        return False

    @abstractmethod
    def encode(self, arch: Arch) -> np.ndarray:
        """Fixed-length float32 one-hot encoding of the architecture's choices (latency predictors)."""

    def from_columns(self, row: dict[str, Any]) -> Arch:
        """An architecture from a table row holding (some of) the key columns; spaces with a
        ``composite_key`` override it to read all their columns together."""
        for col in self.key_columns:
            if col in row and row[col] is not None and str(row[col]) != "nan":
                return self.parse(str(row[col]))
        raise SpaceError(f"row has none of the key columns {', '.join(self.key_columns)} of space {self.name!r}")

    def parse_many(self, tokens: Iterable[str]) -> list[Arch]:
        """Parse tokens, dropping repeats but keeping the user's order."""
        seen: dict[Arch, None] = {}
        for t in tokens:
            seen.setdefault(self.parse(t), None)
        return list(seen)

    @abstractmethod
    def build(self, arch: Arch, input_shape: Sequence[int] | None = None,
              num_classes: int | None = None) -> Graph:
        """The network of ``arch`` as a Graph (the input of every exporter)."""
