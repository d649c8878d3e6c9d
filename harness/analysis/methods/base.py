"""What a transfer method is: fit a target's predictor from proxies and a few target samples, then predict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from harness.analysis.workflow import Context
    from harness.models.spaces import Arch


@dataclass
class Fitted:
    """A fitted predictor as the store keeps it: a JSON payload plus metrics worth reporting."""

    payload: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


class Method(Protocol):
    name: ClassVar[str]
    summary: ClassVar[str]       # one line for --help
    max_sources: ClassVar[int | None]  # e.g. 1 for OneProxy's AdaProxy; None: any number
    # optional, default True; False: fit() ignores the sources (target-only), so adapt neither records them nor
    # makes a new predictor when only they changed
    uses_sources: ClassVar[bool]

    def fit(self, ctx: Context, sources: Sequence[str], archs: Sequence[Arch], y_ms: np.ndarray) -> Fitted:
        """Fit on the target's measured ``archs`` (latencies ``y_ms``) and the ``sources``' latencies."""

    def predict(self, ctx: Context, payload: dict[str, Any], archs: Sequence[Arch]) -> np.ndarray:
        """Predicted ms for ``archs`` from a payload this method's ``fit`` produced."""
