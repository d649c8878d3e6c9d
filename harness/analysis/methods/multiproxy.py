"""multiproxy (ours): the proxies' log-latencies (non-negative weights) + a structure correction, the
best few such fits ensembled with the target's own structure models by leave-one-out error; the structure features
carry both views of dead code (pruned, and kept with live-edges-only one-hot), and own models read each graph's
features alone."""

from __future__ import annotations

from harness.analysis.features import onehot
from harness.analysis.methods.base import Fitted
from harness.analysis.transfer import fit_multiproxy, model_from_json


def fit_model(ctx, sources, archs, y_ms):
    """The fitted ensemble, the structure it was fitted on (its graph-feature names) and the sources'
    gap-fillers used (also what `suggest --strategy uncertain` asks where it is unsure)."""
    from harness.analysis.workflow import source_latencies

    source_ms, predictors = source_latencies(ctx, sources, archs)
    st = ctx.structure(archs)
    model = fit_multiproxy(source_ms, st.onehot, y_ms, list(sources), structure=st.matrix,
                           plain_width=st.plain_width, graph_cols=st.graph_cols)
    return model, st, predictors


class MultiProxy:
    name = "multiproxy"
    summary = "ours: every proxy blended with the target's own model (default)"
    max_sources = None

    def fit(self, ctx, sources, archs, y_ms) -> Fitted:
        model, st, predictors = fit_model(ctx, sources, archs, y_ms)
        payload = {**model.to_json(), "graph_features": st.names, "graph_features_kept": st.kept,
                   "edge_activity": st.n_edges,
                   "source_predictors": {s: predictors[s] for s in model.sources if s in predictors}}
        label = {"onehot": "one-hot", "structure": "structure", "both": "structure, both views"}
        parts = [f"{len(p.sources)} source(s) + {label.get(p.correction, p.correction)} x{p.weight:g} ({p.share:.0%})"
                 if p.weight > 0
                 else f"{len(p.sources)} source(s) ({p.share:.0%})" for p in model.parts]
        own = [f"own structure model ({model.structure_share:.0%})"]
        if model.both_fit is not None:
            own.append(f"own structure model, both views ({model.both_share:.0%})")
        own += [f"own {name} ({g.share:.0%})" for name, g in zip(st.block_names, model.graph_parts)]
        return Fitted(payload, {"loo_mse_log": model.fit.loo_mse, "sources_used": model.sources,
                                "onehot_weight": model.onehot_weight, "proxy_blend": model.blend,
                                "parts": parts + own,
                                "source_srcc_on_samples": model.candidates})

    def predict(self, ctx, payload, archs):
        from harness.analysis.workflow import source_latencies

        model = model_from_json(payload)
        s_ms, _ = source_latencies(ctx, model.sources, archs, payload.get("source_predictors"))
        # a predictor saved before version 3 read one view: no kept-graph names; before edge activity: none
        structure = (ctx.features(archs, payload["graph_features"],
                                  payload.get("graph_features_kept") if model.plain_width is not None else None,
                                  edges=int(payload.get("edge_activity") or 0))
                     if model.structure_fit is not None else None)
        return model.predict(s_ms, onehot(ctx.space, archs), structure)
