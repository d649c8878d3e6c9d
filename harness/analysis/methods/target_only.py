"""target-only: ridge on one-hot + graph features of the target's own samples (no proxy); also what
`harness train` fits on all of a device's measurements."""

from __future__ import annotations

from harness.analysis.methods.base import Fitted
from harness.analysis.transfer import fit_linear, model_from_json


class TargetOnly:
    name = "target-only"
    summary = "the target's samples alone (ridge on one-hot + graph features)"
    max_sources = None
    uses_sources = False

    def fit(self, ctx, sources, archs, y_ms) -> Fitted:
        names = ctx.graph.vocabulary(archs)
        model = fit_linear(ctx.features(archs, names), y_ms)
        return Fitted({**model.to_json(), "graph_features": names}, {"loo_mse_log": model.fit.loo_mse})

    def predict(self, ctx, payload, archs):
        return model_from_json(payload).predict(ctx.features(archs, payload["graph_features"]))
