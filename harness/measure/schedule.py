"""Interleaved rounds: every architecture is visited ``rounds`` times, each round in its own seeded order.

Slow drift (a phone heating up, a background job) then falls on all architectures alike instead of on
whichever happened to be measured late, and the latency is the median over rounds. Resume is by
content: a (architecture, round) pair already in the store is skipped, so a campaign stopped mid-round
goes on where it stopped.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from harness.models.spaces import Arch


def round_order(archs: Sequence[Arch], round_no: int, rounds: int, seed: int) -> list[Arch]:
    """One round's order. A single-round campaign keeps the requested order."""
    order = list(archs)
    if rounds > 1:
        random.Random(f"harness-rounds:{seed}:{round_no}").shuffle(order)
    return order


def plan_visits(archs: Sequence[Arch], rounds: int, seed: int,
                done: set[tuple[str, int]] = frozenset()) -> list[tuple[Arch, int]]:  # type: ignore[assignment]
    """(architecture, round) visits still to make, round by round."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    return [(a, r) for r in range(1, rounds + 1) for a in round_order(archs, r, rounds, seed)
            if (a.key, r) not in done]
