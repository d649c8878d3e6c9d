"""adaproxy: OneProxy's AdaProxy, one proxy's one-hot model re-weighted with the target's samples."""

from __future__ import annotations

from harness.analysis.data import latency_matrix
from harness.analysis.features import onehot
from harness.analysis.methods.base import Fitted
from harness.analysis.transfer import fit_adaproxy, model_from_json


class AdaProxy:
    name = "adaproxy"
    summary = "OneProxy's AdaProxy (exactly one proxy)"
    max_sources = 1

    def fit(self, ctx, sources, archs, y_ms) -> Fitted:
        proxy = latency_matrix(ctx.store, ctx.space.name, list(sources))[sources[0]].dropna()
        model = fit_adaproxy(onehot(ctx.space, ctx.archs(proxy.index.tolist())), proxy.to_numpy(),
                             onehot(ctx.space, archs), y_ms)
        return Fitted({**model.to_json(), "proxy": sources[0]}, {"lambda": model.lam})

    def predict(self, ctx, payload, archs):
        return model_from_json(payload).predict(onehot(ctx.space, archs))
