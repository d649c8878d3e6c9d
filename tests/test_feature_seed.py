"""The shipped graph-feature seed (tests/data/features) that the session's model cache starts from is what the
code computes today: a stale seed would make every whole-space test run on wrong features."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.features import GRAPH_FEATURES_VERSION, GraphFeatures
from harness.models.passes import DEFAULT_GRAPH_MODE
from harness.models.spaces import get_space
from tests.conftest import FEATURE_SEED

SPACE = get_space("nb201")
# the default (pruned) graph and the kept one: multiproxy predictors read both views of dead code
MODES = (DEFAULT_GRAPH_MODE, "keep")


def _seed(mode: str):
    return FEATURE_SEED / f"nb201-graph-{mode}-v{GRAPH_FEATURES_VERSION}.npz"


def _compare(archs, mode: str) -> None:
    seeded = GraphFeatures(SPACE, FEATURE_SEED.parent, mode)  # reads the seed, computes nothing for these keys
    assert all(a.key in seeded._rows for a in archs), "the seed lacks architectures: regenerate it (README)"
    fresh = GraphFeatures(SPACE, None, mode)                 # in memory only: built now by today's code
    names = fresh.vocabulary(archs)
    assert set(seeded.vocabulary(archs)) == set(names)
    np.testing.assert_allclose(seeded.matrix(archs, names), fresh.matrix(archs, names), rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_the_seed_matches_the_code_on_a_sample(mode):
    seed = _seed(mode)
    assert seed.exists(), (f"{seed.name} missing: GRAPH_FEATURES_VERSION or the default graph mode changed; "
                           f"regenerate the seed ({FEATURE_SEED / 'README.md'})")
    _compare(SPACE.sample(300, 11), mode)


@pytest.mark.slow
def test_the_seed_matches_the_code_on_the_whole_space():
    """The default graph mode over all 15,625 (also: every architecture of the space builds). The kept graph
    is the same build without dead-code elimination: its seed is checked on a larger sample below (its whole
    space would cost another ~11 CPU-s of every suite run)."""
    _compare(list(SPACE.all()), DEFAULT_GRAPH_MODE)


def test_the_kept_graph_seed_matches_the_code_on_a_larger_sample():
    _compare(SPACE.sample(2000, 12), "keep")


def test_nb201_knows_its_constant_output_networks_without_building_them():
    """SearchSpace.constant_output (what `degenerate=False` leaves out of imported rows) agrees with the pruned
    graphs themselves, over the whole space (the seed holds every architecture's pruned-graph counts)."""
    archs = list(SPACE.all())
    built = GraphFeatures(SPACE, FEATURE_SEED.parent, "prune").constant_output(archs)
    fast = np.array([SPACE.constant_output(a) for a in archs])
    assert built.sum() == 341 and (fast == built).all()
