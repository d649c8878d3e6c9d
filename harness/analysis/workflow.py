"""The OneProxy/AdaProxy loop on the store: train, suggest, adapt, predict, pareto.

These functions turn store contents into the matrices of :mod:`harness.analysis.transfer` and back
into DataFrames, and save predictors with their provenance (which devices, how many and which
architectures, which method) so a prediction can always be traced to the measurements behind it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analysis import pareto as pareto_mod
from harness.analysis import sampling
from harness.analysis.data import arch_columns, latency_matrix
from harness.analysis.features import GraphFeatures, fingerprint, onehot
from harness.analysis.transfer import (AdaProxyModel, LinearModel, MultiProxyModel, TransferError, fit_adaproxy,
                                       fit_linear, fit_multiproxy, model_from_json)
from harness.errors import HarnessError
from harness.models.spaces import Arch, SearchSpace, get_space
from harness.results.store import Store

METHODS = ("multiproxy", "adaproxy", "target-only")
DEFAULT_METHOD = "multiproxy"


@dataclass
class Context:
    """Everything the workflow needs about one space in one store."""

    store: Store
    space: SearchSpace
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        self.graph = GraphFeatures(self.space, self.cache_dir)

    def archs(self, keys: Sequence[str]) -> list[Arch]:
        return [self.space.parse(k) for k in keys]

    def candidates(self) -> list[Arch]:
        """Every architecture of the space when it can be enumerated, else those the store knows."""
        size = self.space.size()
        if size is not None and size <= 100_000:
            return list(self.space.all())
        return self.archs(arch_columns(self.store, self.space.name).index.tolist())

    def features(self, archs: Sequence[Arch], graph_names: Sequence[str]) -> np.ndarray:
        return np.hstack([onehot(self.space, archs), self.graph.matrix(archs, graph_names)])

    def devices_with_data(self) -> list[str]:
        return sorted(set(self.store.latencies(self.space.name).device))


def resolve_proxies(ctx: Context, proxies: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    have = ctx.devices_with_data()
    names = [d for d in have if d not in exclude] if list(proxies) == ["all"] else list(dict.fromkeys(proxies))
    missing = [p for p in names if p not in have]
    if missing:
        raise HarnessError(f"proxy device(s) {', '.join(missing)} have no {ctx.space.name} data; devices with "
                           f"data: {', '.join(have) or '(none)'}")
    if not names:
        raise HarnessError(f"no proxy devices with {ctx.space.name} data")
    return names


# --- a device's own predictor -------------------------------------------------------------------
@dataclass
class _Training:
    model: LinearModel
    names: list[str]        # graph-feature vocabulary
    keys: list[str]         # architectures trained on
    features: np.ndarray
    latency_ms: np.ndarray


def _train_linear(ctx: Context, device: str) -> _Training:
    series = latency_matrix(ctx.store, ctx.space.name, [device])[device].dropna()
    archs = ctx.archs(series.index.tolist())
    names = ctx.graph.vocabulary(archs)
    features, y = ctx.features(archs, names), series.to_numpy()
    return _Training(fit_linear(features, y), names, series.index.tolist(), features, y)


def train(ctx: Context, device: str) -> dict:
    """Fit and save ``device``'s own predictor (ridge on one-hot + graph features, log-latency)."""
    t = _train_linear(ctx, device)
    holdout = _holdout_srcc(t.features, t.latency_ms)
    payload = {**t.model.to_json(), "graph_features": t.names}
    prov = {"device": device, "n_archs": len(t.keys), "archs_fingerprint": fingerprint(t.keys),
            "features": ["onehot", "graph"]}
    pid = ctx.store.save_predictor(ctx.space.name, device, "linear", payload, prov, {"holdout_srcc": holdout})
    return {"id": pid, "device": device, "n_archs": len(t.keys), "holdout_srcc": holdout}


def _holdout_srcc(features: np.ndarray, y: np.ndarray) -> float | None:
    """SRCC on a random 20% held out (for the report only; the saved model uses all data)."""
    from scipy.stats import spearmanr

    if len(y) < 20:
        return None
    idx = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    model = fit_linear(features[idx[:cut]], y[idx[:cut]])
    return float(spearmanr(model.predict(features[idx[cut:]]), y[idx[cut:]]).statistic)


def _linear_from(saved: dict) -> tuple[LinearModel, list[str]]:
    return model_from_json(saved), list(saved["graph_features"])  # type: ignore[return-value]


# --- source latencies, measured where possible ---------------------------------------------------
def source_latencies(ctx: Context, sources: Sequence[str], archs: Sequence[Arch],
                     predictors: dict[str, dict] | None = None) -> tuple[np.ndarray, dict[str, dict]]:
    """(n_archs, n_sources) ms: measured/imported values, gaps filled by each source's own predictor."""
    keys = [a.key for a in archs]
    wide = latency_matrix(ctx.store, ctx.space.name, list(sources)).reindex(keys)
    predictors = dict(predictors or {})
    out = wide.to_numpy(dtype=float, copy=True)
    for j, src in enumerate(sources):
        gaps = np.isnan(out[:, j])
        if not gaps.any():
            continue
        if src not in predictors:
            t = _train_linear(ctx, src)
            predictors[src] = {**t.model.to_json(), "graph_features": t.names}
        model, names = _linear_from(predictors[src])
        gap_archs = [a for a, g in zip(archs, gaps) if g]
        out[gaps, j] = model.predict(ctx.features(gap_archs, names))
    return out, predictors


# --- adapt ---------------------------------------------------------------------------------------
def adapt(ctx: Context, proxies: Sequence[str], target: str, method: str = DEFAULT_METHOD) -> dict:
    """Fit the target's predictor from exactly the target measurements in the store."""
    if method not in METHODS:
        raise HarnessError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    have = ctx.devices_with_data()
    if target not in have:
        raise HarnessError(f"target {target!r} has no {ctx.space.name} measurements in {ctx.store.path}; "
                           f"measure some first (harness suggest, then harness measure --arch-file)")
    sources = resolve_proxies(ctx, proxies, exclude=[target])
    if target in sources:
        raise HarnessError("the target cannot be its own proxy")
    series = latency_matrix(ctx.store, ctx.space.name, [target])[target].dropna()
    archs = ctx.archs(series.index.tolist())
    y = series.to_numpy()
    if len(y) < 3:
        raise TransferError(f"{target} has {len(y)} {ctx.space.name} measurement(s); adapt needs at least 3")
    x = onehot(ctx.space, archs)
    digest = _inputs_digest(ctx, method, sources, series)
    latest = ctx.store.latest_predictor(ctx.space.name, target)
    if latest is not None and latest["provenance"].get("inputs_digest") == digest:
        return {"id": latest["id"], "target": target, "method": method, "n_target_samples": len(y),
                "proxies": sources, "reused": True,
                **{k: v for k, v in latest["metrics"].items() if k != "source_srcc_on_samples"}}
    prov = {"target": target, "proxies": sources, "n_target_samples": len(y),
            "target_archs": series.index.tolist(), "method": method, "inputs_digest": digest}
    if method == "target-only":
        names = ctx.graph.vocabulary(archs)
        feats = ctx.features(archs, names)
        model = fit_linear(feats, y)
        payload = {**model.to_json(), "graph_features": names}
        metrics = {"loo_mse_log": model.fit.loo_mse}

        def refit(tr, te):
            return fit_linear(feats[tr], y[tr]).predict(feats[te])
    elif method == "adaproxy":
        if len(sources) != 1:
            raise HarnessError("adaproxy (OneProxy's method) adapts exactly one proxy; give one --proxy")
        proxy = latency_matrix(ctx.store, ctx.space.name, sources)[sources[0]].dropna()
        p_x, p_y = onehot(ctx.space, ctx.archs(proxy.index.tolist())), proxy.to_numpy()
        model = fit_adaproxy(p_x, p_y, x, y)
        payload = {**model.to_json(), "proxy": sources[0]}
        metrics = {"lambda": model.lam}

        def refit(tr, te):  # lambda as chosen on all K (its own 5-fold search K times over is slow)
            return fit_adaproxy(p_x, p_y, x[tr], y[tr], lambdas=(model.lam,)).predict(x[te])
    else:
        s_ms, predictors = source_latencies(ctx, sources, archs)
        names = ctx.graph.vocabulary(archs)
        feats = ctx.features(archs, names)
        model = fit_multiproxy(s_ms, x, y, list(sources), structure=feats)
        payload = {**model.to_json(), "graph_features": names,
                   "source_predictors": {s: predictors[s] for s in model.sources if s in predictors}}
        metrics = {"loo_mse_log": model.fit.loo_mse, "sources_used": model.sources,
                   "onehot_weight": model.onehot_weight, "proxy_blend": model.blend,
                   "source_srcc_on_samples": model.candidates}

        def refit(tr, te):
            m = fit_multiproxy(s_ms[tr], x[tr], y[tr], list(sources), structure=feats[tr])
            return m.predict(s_ms[te][:, [sources.index(s) for s in m.sources]], x[te], feats[te])
    metrics.update(held_out_quality(refit, y))
    pid = ctx.store.save_predictor(ctx.space.name, target, method, payload, prov, metrics)
    return {"id": pid, "target": target, "method": method, "n_target_samples": len(y), "proxies": sources,
            "reused": False, "why_new": _why_new(latest, prov),
            **{k: v for k, v in metrics.items() if k != "source_srcc_on_samples"}}


def held_out_quality(refit, y: np.ndarray, max_loo: int = 60) -> dict:
    """SRCC and median relative error of predictions for the K target samples, each predicted by the whole
    fit (source choice, weights, blend) redone without it: leave-one-out, 10-fold above ``max_loo``."""
    from scipy.stats import spearmanr

    n = len(y)
    folds = ([np.array([i]) for i in range(n)] if n <= max_loo
             else np.array_split(np.random.default_rng(0).permutation(n), 10))
    pred = np.empty(n)
    try:
        for test in folds:
            pred[test] = refit(np.setdiff1d(np.arange(n), test), test)
    except (TransferError, ValueError, np.linalg.LinAlgError):
        return {}  # too few samples to refit without one of them
    return {"loo_srcc": float(spearmanr(pred, y).statistic),
            "loo_median_rel_error": float(np.median(np.abs(pred / y - 1.0))),
            "loo_scheme": "leave-one-out" if n <= max_loo else "10-fold"}


def _inputs_digest(ctx: Context, method: str, sources: Sequence[str], target: pd.Series) -> str:
    """What an adapted predictor depends on: method, proxies and their data, the target's samples, harness."""
    from harness import __version__

    src = ctx.store.latencies(ctx.space.name, list(sources))
    body = {"method": method, "sources": list(sources), "version": __version__,
            "graph_mode": getattr(ctx.graph, "graph_mode", None),
            "target": sorted((k, round(float(v), 9)) for k, v in target.items()),
            "source_data": {d: [len(g), round(float(g.latency_ms.sum()), 6)] for d, g in src.groupby("device")}}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _why_new(latest: dict | None, prov: dict) -> str:
    """Why adapt made a new predictor instead of reusing the latest one (said in its output)."""
    if latest is None:
        return "the first for this device"
    old = latest["provenance"]
    if old.get("method") != prov["method"]:
        return f"#{latest['id']} used {old.get('method')}"
    if old.get("proxies") != prov["proxies"]:
        return f"#{latest['id']} used other proxies"
    if old.get("n_target_samples") != prov["n_target_samples"]:
        return f"#{latest['id']} had {old.get('n_target_samples')} target samples, now {prov['n_target_samples']}"
    if old.get("target_archs") != prov["target_archs"] or "inputs_digest" not in old:
        return f"the target's measurements changed since #{latest['id']}"
    return f"the proxies' data or harness changed since #{latest['id']}"


# --- predict -------------------------------------------------------------------------------------
def predict(ctx: Context, device: str, archs: Sequence[Arch] | None = None) -> pd.DataFrame:
    saved = ctx.store.latest_predictor(ctx.space.name, device)
    if saved is None:
        raise HarnessError(f"no {ctx.space.name} predictor for {device!r}: run `harness train --device {device}` "
                           f"or `harness adapt --target {device} --proxy ...` first")
    archs = list(archs) if archs is not None else ctx.candidates()
    payload = saved["model"]
    model = model_from_json(payload)
    if isinstance(model, LinearModel):
        pred = model.predict(ctx.features(archs, payload["graph_features"]))
    elif isinstance(model, AdaProxyModel):
        pred = model.predict(onehot(ctx.space, archs))
    else:
        assert isinstance(model, MultiProxyModel)
        s_ms, _ = source_latencies(ctx, model.sources, archs, payload.get("source_predictors"))
        structure = ctx.features(archs, payload["graph_features"]) if model.structure_fit is not None else None
        pred = model.predict(s_ms, onehot(ctx.space, archs), structure)
    cols = pd.DataFrame([a.columns for a in archs])
    return cols.assign(predicted_ms=pred)


# --- suggest -------------------------------------------------------------------------------------
def suggest(ctx: Context, proxies: Sequence[str], k: int, strategy: str = sampling.DEFAULT_STRATEGY,
            seed: int = 0, exclude_device: str | None = None) -> pd.DataFrame:
    sources = resolve_proxies(ctx, proxies, exclude=[exclude_device] if exclude_device else [])
    pool = ctx.candidates()
    if exclude_device:
        done = set(ctx.store.latencies(ctx.space.name, [exclude_device]).key)
        pool = [a for a in pool if a.key not in done]
    if k > len(pool):
        raise HarnessError(f"--samples {k} is larger than the {len(pool)} candidate architectures")
    s_ms, _ = source_latencies(ctx, sources, pool)
    picks = sampling.select(k, np.log(np.clip(s_ms, 1e-3, None)), onehot(ctx.space, pool), strategy, seed)
    return pd.DataFrame([pool[i].columns for i in picks])


# --- pareto --------------------------------------------------------------------------------------
def _what_if_predictions(ctx: Context, proxies: Sequence[str], target: str, k: int, archs: list[Arch],
                         seed: int = 0) -> np.ndarray:
    """Predictions for ``archs`` from a multi-proxy fit on only K of the target's measurements (validation:
    the target is fully measured, we pretend it is new). Nothing is saved."""
    sources = resolve_proxies(ctx, proxies, exclude=[target])
    series = latency_matrix(ctx.store, ctx.space.name, [target])[target].dropna()
    pool = ctx.archs(series.index.tolist())
    s_pool, predictors = source_latencies(ctx, sources, pool)
    picks = sampling.select(k, np.log(np.clip(s_pool, 1e-3, None)), onehot(ctx.space, pool),
                            sampling.DEFAULT_STRATEGY, seed)
    chosen = [pool[i] for i in picks]
    names = ctx.graph.vocabulary(chosen)
    model = fit_multiproxy(s_pool[picks], onehot(ctx.space, chosen), series.to_numpy()[picks], list(sources),
                           structure=ctx.features(chosen, names))
    cols = [sources.index(s) for s in model.sources]
    s_all, _ = source_latencies(ctx, sources, archs, predictors)
    return model.predict(s_all[:, cols], onehot(ctx.space, archs), ctx.features(archs, names))


def pareto(ctx: Context, proxy: str, target: str, accuracy: str, what_if_k: int | None = None,
           what_if_proxies: Sequence[str] | None = None) -> dict:
    acc = ctx.store.arch_metrics(ctx.space.name)
    if accuracy not in acc.columns:
        raise HarnessError(f"no accuracy column {accuracy!r} for {ctx.space.name}; have: "
                           f"{', '.join(acc.columns) or '(none: import a table with acc_* columns)'}")
    wide = latency_matrix(ctx.store, ctx.space.name, [proxy, target])
    both = wide.join(acc[[accuracy]], how="inner").dropna()
    if len(both) < 3:
        raise HarnessError(f"only {len(both)} architectures have {proxy}, {target} and {accuracy}")
    a = both[accuracy].to_numpy()
    t = both[target].to_numpy()
    result = {"proxy": proxy, "target": target, "accuracy": accuracy,
              "proxy_front": pareto_mod.check(both[proxy].to_numpy(), t, a)}
    if what_if_k:
        pred = _what_if_predictions(ctx, what_if_proxies or [proxy], target, what_if_k,
                                    ctx.archs(both.index.tolist()))
        result["predicted_front"] = pareto_mod.check(pred, t, a)
        result["predicted_from"] = f"multiproxy fit on {what_if_k} of {target}'s measurements"
    elif ctx.store.latest_predictor(ctx.space.name, target) is not None:
        pred = predict(ctx, target, ctx.archs(both.index.tolist()))["predicted_ms"].to_numpy()
        result["predicted_front"] = pareto_mod.check(pred, t, a)
        result["predicted_from"] = "the target's saved predictor"
    result["frame"] = both.assign(predicted_ms=pred) if "predicted_front" in result else both
    return result


def open_context(store: Store, space: str, cache_dir: str | None = None) -> Context:
    return Context(store, get_space(space), cache_dir)
