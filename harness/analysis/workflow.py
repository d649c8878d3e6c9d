"""The OneProxy/AdaProxy loop on the store: train, suggest, adapt, predict, pareto.

These functions turn store contents into the matrices of :mod:`harness.analysis.transfer` and back
into DataFrames, and save predictors with their provenance (which devices, how many and which
architectures, which method) so a prediction can always be traced to the measurements behind it.
Which method fits and predicts is looked up in :mod:`harness.analysis.methods` (one entry per method).
Results are dataclasses; errors name parameters (``ParameterError.param``), the CLI maps them to flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import pareto as pareto_mod
from harness.analysis import sampling
from harness.analysis.data import arch_columns, latency_matrix
from harness.analysis.features import (STRUCTURE_VERSION, GraphFeatures, edge_activity, fingerprint, graph_columns,
                                       live_onehot, onehot)
from harness.analysis.methods import BUILTIN, DEFAULT_METHOD, get_method
from harness.analysis.methods.base import Fitted
from harness.analysis.transfer import (FLOOR_MS, MIN_TARGET_SAMPLES, LinearModel, TransferError, fit_linear,
                                      model_from_json)
from harness.errors import HarnessError, NoPredictorError, ParameterError, did_you_mean
from harness.models.spaces import Arch, SearchSpace, get_space
from harness.results.store import Store


@dataclass
class Structure:
    """Both views of some architectures' structure as the transfer fit reads them (Context.features' layout):
    the one-hot, the feature matrix, the graph-feature names of each view, and where the blocks sit."""

    names: list[str]            # graph features of the pruned graph
    kept: list[str]             # graph features of the kept graph (the second view)
    onehot: np.ndarray
    matrix: np.ndarray          # [one-hot, graph (pruned), live one-hot, graph (kept), edge activity]
    n_edges: int = 0            # edge-activity columns at the end (features.edge_activity; 0 for most spaces)

    @property
    def plain_width(self) -> int:
        return self.onehot.shape[1] + len(self.names)

    @property
    def graph_cols(self) -> list[tuple[int, int]]:
        return graph_columns(self.onehot.shape[1], len(self.names), len(self.kept), self.matrix.shape[1],
                             self.n_edges)

    @property
    def block_names(self) -> list[str]:
        """The own model of each of :attr:`graph_cols`' blocks, in their order."""
        return ((["graph-feature model, pruned graph"] if self.names else [])
                + (["graph-feature model, kept graph"] if self.kept else [])
                + (["edge-activity model"] if self.n_edges else []))


@dataclass
class Context:
    """Everything the workflow needs about one space in one store."""

    store: Store
    space: SearchSpace
    cache_dir: str | None = None
    source_predictors: dict[str, dict] = field(default_factory=dict)  # gap-fillers trained so far
    notes: list[str] = field(default_factory=list)  # what a command should tell its user (proxies left out...)
    _wide: dict[tuple[str, ...], pd.DataFrame] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.graph = GraphFeatures(self.space, self.cache_dir)
        self._graph_kept: GraphFeatures | None = None

    @property
    def graph_kept(self) -> GraphFeatures:
        """Graph features with dead convolutions kept (the second view; built on first use)."""
        if self._graph_kept is None:
            self._graph_kept = GraphFeatures(self.space, self.cache_dir, "keep")
        return self._graph_kept

    def archs(self, keys: Sequence[str]) -> list[Arch]:
        return [self.space.parse(k) for k in keys]

    def candidates(self) -> list[Arch]:
        """Every architecture of the space when it can be enumerated, else those the store knows."""
        size = self.space.size()
        if size is not None and size <= 100_000:
            return list(self.space.all())
        return self.archs(arch_columns(self.store, self.space.name).index.tolist())

    def worth_measuring(self, archs: Sequence[Arch]) -> tuple[list[Arch], int]:
        """The candidates a target measurement can teach something, and how many were left out: not those whose
        network has a constant output (NB201's 341 cells with no path from input to output). They are extreme in
        every encoding, so farthest-point picks favour them (4 of 20 `suggest` picks on the whole space), public
        tables often lack them (Eagle, OneProxy) and no search wants them; they are still predicted."""
        constant = self.graph.constant_output(archs)  # self.graph is the pruned graph's features
        return [a for a, c in zip(archs, constant) if not c], int(constant.sum())

    def features(self, archs: Sequence[Arch], graph_names: Sequence[str],
                 kept_names: Sequence[str] | None = None, edges: int = 0) -> np.ndarray:
        """[one-hot, graph features (pruned)]; with ``kept_names`` also the second view of dead code:
        [live-edges-only one-hot, graph features with dead convolutions kept] (its first
        one-hot + len(graph_names) columns are the plain view); with ``edges`` > 0 then the first ``edges`` columns
        of the space's edge activity (features.edge_activity: what a device that pays per operation reads; a
        predictor saved before its sibling column read 12)."""
        plain = np.hstack([onehot(self.space, archs), self.graph.matrix(archs, graph_names)])
        if kept_names is None:
            if edges:
                raise ValueError("the edge activity follows the second view: give kept_names too")
            return plain
        blocks = [plain, live_onehot(self.space, archs), self.graph_kept.matrix(archs, kept_names)]
        return np.hstack(blocks + ([edge_activity(self.space, archs)[:, :edges]] if edges else []))

    def structure(self, archs: Sequence[Arch], names: Sequence[str] | None = None,
                  kept: Sequence[str] | None = None) -> Structure:
        """Both views and the edge activity for ``archs``, on these graph-feature names (default: the
        vocabularies of ``archs``, as when fitting; a saved model's names when predicting)."""
        names = list(self.graph.vocabulary(archs) if names is None else names)
        kept = list(self.graph_kept.vocabulary(archs) if kept is None else kept)
        edges = edge_activity(self.space, archs)
        return Structure(names, kept, onehot(self.space, archs), np.hstack([self.features(archs, names, kept), edges]),
                         edges.shape[1])

    def wide(self, devices: Sequence[str]) -> pd.DataFrame:
        """latency_matrix of these devices, read once per context (adapt's leave-one-out refits reuse it)."""
        key = tuple(devices)
        if key not in self._wide:
            self._wide[key] = latency_matrix(self.store, self.space.name, list(devices))
        return self._wide[key]

    def devices_with_data(self) -> list[str]:
        return sorted(set(self.store.latencies(self.space.name).device))


MIN_PROXY_ARCHS = 10  # a proxy's gaps are filled by its own predictor (ridge): from fewer it is a guess


def resolve_proxies(ctx: Context, proxies: Sequence[str], exclude: Sequence[str] = (), param: str = "proxies") -> list[str]:
    """The proxy devices ``proxies`` names (``all``: every device with data but ``exclude``). A proxy needs
    ``MIN_PROXY_ARCHS`` architectures: ``all`` leaves thinner ones out (a note says which), a named one is an error.
    ``param``: the parameter the errors name (pareto's what-if proxies are --adapt-proxy, not --proxy)."""
    have = ctx.devices_with_data()
    everything = list(proxies) == ["all"]
    names = [d for d in have if d not in exclude] if everything else list(dict.fromkeys(proxies))
    missing = [p for p in names if p not in have]
    if missing:
        raise ParameterError(param, f"proxy device(s) {', '.join(missing)} have no {ctx.space.name} data"
                             f"{did_you_mean(missing[0], have)}; devices with data: {', '.join(have) or '(none)'}")
    counts = ctx.store.latencies(ctx.space.name, names).groupby("device").size()
    thin = [p for p in names if counts.get(p, 0) < MIN_PROXY_ARCHS]
    if thin and not everything:
        raise ParameterError(param, f"proxy {', '.join(f'{p} ({counts.get(p, 0)} architectures)' for p in thin)} "
                             f"has too little {ctx.space.name} data to stand for the space: a proxy needs "
                             f"{MIN_PROXY_ARCHS}; name others, or all")
    if thin:
        ctx.notes.append(f"left out of the proxies (under {MIN_PROXY_ARCHS} {ctx.space.name} architectures each): "
                         + ", ".join(f"{p} ({counts.get(p, 0)})" for p in thin))
        names = [p for p in names if p not in thin]
    if not names:
        raise ParameterError(param, f"no proxy devices with {ctx.space.name} data")
    return names


GUESSING_SOURCE_ARCHS = 200  # below this many architectures a source's own predictor is a rough guess


def measured_at_the_samples(ctx: Context, sources: Sequence[str], archs: Sequence[Arch]) -> list[str]:
    """``all`` leaves out small sources (under GUESSING_SOURCE_ARCHS architectures) that have at most half of the
    target's samples: their values there are their own predictor's guesses from a few dozen architectures, which
    the fit reads as evidence (a 40-architecture local proxy entered a Pixel 3 fit as its second source). A large
    table's predictor (OneProxy's 1,999) is kept; named proxies stay, as named; a note says who went."""
    keys = {a.key for a in archs}
    long = ctx.store.latencies(ctx.space.name, list(sources))
    have = long[long.key.isin(keys)].groupby("device").key.nunique()
    size = long.groupby("device").key.nunique()
    thin = [s for s in sources if 2 * int(have.get(s, 0)) <= len(keys) and int(size.get(s, 0)) < GUESSING_SOURCE_ARCHS]
    kept = [s for s in sources if s not in thin]
    if thin and kept:
        ctx.notes.append(f"left out of the proxies (they have at most half of the {len(keys)} target samples; "
                         "elsewhere their values are their own predictor's guesses): "
                         + ", ".join(f"{s} ({int(have.get(s, 0))})" for s in thin))
        return kept
    return list(sources)


def same_values(ctx: Context, table: dict[str, float], exclude: Sequence[str | None] = (),
                min_common: int = 10, devices: Sequence[str] | None = None) -> list[str]:
    """Devices in the store whose latencies are the replay table's own (equal on every common architecture, at
    least ``min_common``): the same published column imported under another name (``--prefix op-``) would be the
    target's answers used as a source, a loop that looks perfect and means nothing. ``devices``: only these."""
    long = ctx.store.latencies(ctx.space.name, list(devices) if devices is not None else None)
    long = long[~long.device.isin([e for e in exclude if e])]
    out = []
    for device, rows in long.groupby("device", sort=True):
        truth = rows.key.map(table)
        both = truth.notna()
        # equal as published, or as a spreadsheet rounded them (3 decimals): no two measurements agree to 0.1 % on
        # every one of several architectures (Eagle's GTX 1080 Ti, a near-copy of its i7, differs by 0.5 % median)
        if both.sum() >= min_common and np.allclose(rows.latency_ms[both], truth[both], rtol=1e-3, atol=5e-4):
            out.append(str(device))
    return out


def without_own_copies(ctx: Context, sources: list[str], proxies: Sequence[str], target: str, archs: list[Arch],
                       y: np.ndarray, param: str = "proxies") -> list[str]:
    """``sources`` without devices whose latencies are the target's own on every common architecture (at least
    3, or 5 where the target has them): a replay target's table imported under its own name, or another
    (``--prefix``), is the target's answers used as a source; `adapt --proxy all` then reported a leave-one-out
    SRCC of 1.000 that meant nothing. ``all`` leaves them out with a note; naming one is an error. (A replay
    table read with noise is no longer equal: the closed loop knows its table, `adapt` cannot.)"""
    if len(y) < 3:
        return sources
    copies = same_values(ctx, {a.key: float(v) for a, v in zip(archs, y)}, exclude=[target],
                         min_common=min(5, len(y)), devices=sources)
    if not copies:
        return sources
    if list(proxies) != ["all"]:
        raise ParameterError(param, f"{', '.join(copies)} {'hold' if len(copies) > 1 else 'holds'} {target}'s own "
                             "latencies (equal on every common architecture): the target's data under another name "
                             "cannot be its source; drop it")
    ctx.notes.append(f"left out of the proxies: {', '.join(copies)} (equal to {target}'s own latencies on every common "
                     "architecture: the target's data under another name)")
    rest = [s for s in sources if s not in copies]
    if not rest:
        raise ParameterError(param, f"no proxy devices with {ctx.space.name} data but copies of {target}'s own")
    return rest


@dataclass
class TrainResult:
    id: int
    device: str
    n_archs: int
    holdout_srcc: float | None
    holdout_n: int = 0  # how many architectures that SRCC is over
    holdout_how: str = ""  # "20% hold-out" or "5-fold cross-validation"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AdaptResult:
    id: int
    target: str
    method: str
    n_target_samples: int
    proxies: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    reused: bool = False  # the latest predictor had exactly these inputs: nothing new was fitted or saved
    why_new: str = ""     # else: why a new predictor was made instead

    def to_json(self) -> dict[str, Any]:
        """Flat, as `harness adapt --json` prints it (per-source diagnostics left out)."""
        d = asdict(self)
        return {**{k: v for k, v in d.items() if k != "metrics"},
                **{k: v for k, v in self.metrics.items() if k != "source_srcc_on_samples"}}


@dataclass
class ParetoResult:
    proxy: str
    target: str
    accuracy: str
    proxy_front: pareto_mod.ParetoCheck
    frame: pd.DataFrame                      # the compared architectures (+ predicted_ms when predicted)
    predicted_front: pareto_mod.ParetoCheck | None = None
    predicted_from: str | None = None
    # of the compared architectures, how many the saved predictor was fitted on (its front judged in-sample)
    predicted_in_sample: int | None = None
    proxy_archs: int = 0  # architectures the proxy has (the check covers only those the target has too)

    def fronts(self) -> dict[str, pareto_mod.ParetoCheck]:
        return {k: v for k, v in (("proxy_front", self.proxy_front), ("predicted_front", self.predicted_front))
                if v is not None}


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
    bad = ~np.isfinite(series.to_numpy()) | (series.to_numpy() <= 0)
    if bad.any():
        measured = (ctx.store.latencies(ctx.space.name, [device]).origin == "measured").any()
        fix = (f"Leave {device} out of --proxy/--adapt-proxy (name the proxies instead of `all`), or measure those "
               "architectures again (--remeasure --arch KEY): a 0 ms result is below the device's timer resolution"
               if measured else "Re-import the device's data (harness import refuses such values)")
        raise HarnessError(f"{device} has {int(bad.sum())} latencies in the store that are not positive and finite "
                           f"(e.g. {series[bad].index[0]}: {series[bad].iloc[0]}); a predictor cannot learn from "
                           f"them. {fix}.")
    archs = ctx.archs(series.index.tolist())
    names = ctx.graph.vocabulary(archs)
    features, y = ctx.features(archs, names), series.to_numpy()
    return _Training(fit_linear(features, y), names, series.index.tolist(), features, y)


def train(ctx: Context, device: str) -> TrainResult:
    """Fit and save ``device``'s own predictor (ridge on one-hot + graph features, log-latency)."""
    t = _train_linear(ctx, device)
    holdout, n_eval, how = _holdout_srcc(t.features, t.latency_ms)
    payload = {**t.model.to_json(), "graph_features": t.names}
    prov = {"device": device, "n_archs": len(t.keys), "archs_fingerprint": fingerprint(t.keys),
            "features": ["onehot", "graph"]}
    pid = ctx.store.save_predictor(ctx.space.name, device, "linear", payload, prov,
                                   {"holdout_srcc": holdout, "holdout_n": n_eval, "holdout_how": how})
    return TrainResult(pid, device, len(t.keys), holdout, n_eval, how)


HOLDOUT_FROM = 1000  # from here a 20% hold-out has >= 200 architectures; below, every one is predicted out of fold


def _holdout_srcc(features: np.ndarray, y: np.ndarray) -> tuple[float | None, int, str]:
    """(SRCC, over how many architectures, how) for the report only; the saved model uses all data. A 20%
    hold-out of 20 measurements was 4 architectures ("1.0000" for a predictor that ranks the space at 0.89):
    below HOLDOUT_FROM every architecture is predicted by a model fitted without its fold (5 folds)."""
    from scipy.stats import spearmanr

    n = len(y)
    if n < 10:
        return None, 0, ""
    idx = np.random.default_rng(0).permutation(n)
    if n >= HOLDOUT_FROM:
        cut = int(0.8 * n)
        model = fit_linear(features[idx[:cut]], y[idx[:cut]])
        rho = float(spearmanr(model.predict(features[idx[cut:]]), y[idx[cut:]]).statistic)
        return (rho if np.isfinite(rho) else None), n - cut, "20% hold-out"
    pred = np.empty(n)
    for fold in np.array_split(idx, 5):
        rest = np.setdiff1d(idx, fold)
        pred[fold] = fit_linear(features[rest], y[rest]).predict(features[fold])
    rho = float(spearmanr(pred, y).statistic)  # NaN when every prediction is the same: no ranking to judge
    return (rho if np.isfinite(rho) else None), n, "5-fold cross-validation"


def _linear_from(saved: dict) -> tuple[LinearModel, list[str]]:
    return model_from_json(saved), list(saved["graph_features"])  # type: ignore[return-value]


# --- source latencies, measured where possible ---------------------------------------------------
def source_latencies(ctx: Context, sources: Sequence[str], archs: Sequence[Arch],
                     predictors: dict[str, dict] | None = None) -> tuple[np.ndarray, dict[str, dict]]:
    """(n_archs, n_sources) ms: measured/imported values, gaps filled by each source's own predictor.

    ``predictors``: saved gap-fillers to use (a saved model's); others are trained once per context.
    Returns the values and the gap-fillers used, by source."""
    keys = [a.key for a in archs]
    full = ctx.wide(sources)
    wide = full.reindex(keys)
    given = dict(predictors or {})
    used: dict[str, dict] = {}
    out = wide.to_numpy(dtype=float, copy=True)
    for j, src in enumerate(sources):
        gaps = np.isnan(out[:, j])
        if not gaps.any():
            continue
        if src not in given and src not in ctx.source_predictors:
            t = _train_linear(ctx, src)
            ctx.source_predictors[src] = {**t.model.to_json(), "graph_features": t.names}
        used[src] = given.get(src) or ctx.source_predictors[src]
        model, names = _linear_from(used[src])
        gap_archs = [a for a, g in zip(archs, gaps) if g]
        out[gaps, j] = fill_gaps(model.predict(ctx.features(gap_archs, names)), full[src].to_numpy(dtype=float),
                                 ctx.graph.constant_output(gap_archs))
    return out, {**{s: p for s, p in given.items()}, **used}


def fill_gaps(predicted_ms: np.ndarray, observed_ms: np.ndarray, constant_output: np.ndarray) -> np.ndarray:
    """A source's gap-filler predictions, kept within what the source was seen to do.

    The filler is a linear fit in log-latency on the source's table; beyond the range it saw it extrapolates
    (OneProxy's 1999 architectures hold no network with a constant output: for NB201's 341 such cells a
    filler predicted up to 3e6 ms, and the target's predictor, leaning on that source, followed). So: within
    [min / 2, max * 2] of the observed values, and a network whose output is a constant - it computes
    nothing - at the source's fastest seen, where every device measured in full puts it."""
    seen = observed_ms[np.isfinite(observed_ms) & (observed_ms > 0)]
    if not len(seen):
        return predicted_ms
    out = np.clip(predicted_ms, seen.min() / 2, seen.max() * 2)
    out[np.asarray(constant_output, dtype=bool)] = seen.min()
    return out


# --- adapt ---------------------------------------------------------------------------------------
def adapt(ctx: Context, proxies: Sequence[str], target: str, method: str = DEFAULT_METHOD) -> AdaptResult:
    """Fit the target's predictor from exactly the target measurements in the store (``method``: a name
    registered in :mod:`harness.analysis.methods`)."""
    m = get_method(method)
    have = ctx.devices_with_data()
    if target not in have:
        raise NoPredictorError(target, f"target {target!r} has no {ctx.space.name} measurements in "
                               f"{ctx.store.path}{did_you_mean(target, have)}; measure some first",
                               needs="measurements")
    sources = resolve_proxies(ctx, proxies, exclude=[target])
    if target in sources:
        raise ParameterError("proxies", "the target cannot be its own proxy")
    archs, y = _target_samples(ctx, target)
    sources = without_own_copies(ctx, sources, proxies, target, archs, y)
    if list(proxies) == ["all"]:
        sources = measured_at_the_samples(ctx, sources, archs)
    if m.max_sources is not None and len(sources) > m.max_sources:
        raise ParameterError("proxies", f"{method} adapts at most {m.max_sources} proxy device(s); got "
                             f"{len(sources)}")
    if not getattr(m, "uses_sources", True):  # target-only: the proxies named change nothing it fits
        sources = []
    sources = sorted(sources)  # one set, one fit: --proxy b,a and all (the same devices) made three predictors
    digest = _inputs_digest(ctx, method, sources, archs, y)
    latest = ctx.store.latest_predictor(ctx.space.name, target)
    if latest is not None and latest["provenance"].get("inputs_digest") == digest:
        return AdaptResult(latest["id"], target, method, len(y), sources, latest["metrics"], reused=True)
    fitted = m.fit(ctx, sources, archs, y)
    if not isinstance(fitted, Fitted):  # a plug-in returning a dict: an AttributeError deep in adapt before
        raise HarnessError(f"the {method} method's fit returned a {type(fitted).__name__}, not a Fitted(payload, "
                           "metrics) (harness.analysis.methods.base)")
    on_samples = _predictions(m.predict(ctx, fitted.payload, archs), len(archs), f"the {method} method")
    if not np.isfinite(on_samples).all():  # saved before, with "SRCC nan"; predict then blamed the data
        raise HarnessError(f"the {method} method predicts values that are not finite for its own {len(archs)} "
                           f"samples ({', '.join(f'{v:g}' for v in on_samples[:4])}...); nothing was saved"
                           + ("" if method in BUILTIN else " (a bug in that plug-in?)"))
    fitted.metrics.update(held_out_quality(
        lambda tr, te: m.predict(ctx, m.fit(ctx, sources, [archs[i] for i in tr], y[tr]).payload,
                                 [archs[i] for i in te]), y))
    from harness.analysis.methods import code_digest

    prov = {"target": target, "proxies": sources, "n_target_samples": len(y),
            "target_archs": [a.key for a in archs], "method": method, "inputs_digest": digest,
            "method_code": code_digest(method)}
    pid = ctx.store.save_predictor(ctx.space.name, target, method, fitted.payload, prov, fitted.metrics)
    return AdaptResult(pid, target, method, len(y), sources, fitted.metrics, why_new=_why_new(latest, prov))


def held_out_quality(refit, y: np.ndarray, max_loo: int = 60) -> dict:
    """SRCC and median relative error of predictions for the K target samples, each predicted by the whole
    fit (source choice, weights, blend) redone without it: leave-one-out, 10-fold above ``max_loo``.
    ``refit(train_idx, test_idx)`` returns predicted ms for the test samples."""
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
    if np.ptp(pred) == 0 or np.ptp(y) == 0:  # no ranking to compare (scipy would warn and give NaN)
        return {"loo_median_rel_error": float(np.median(np.abs(pred / y - 1.0))),
                "loo_scheme": "leave-one-out" if n <= max_loo else "10-fold"}
    return {"loo_srcc": float(spearmanr(pred, y).statistic),
            "loo_median_rel_error": float(np.median(np.abs(pred / y - 1.0))),
            "loo_scheme": "leave-one-out" if n <= max_loo else "10-fold"}


def _inputs_digest(ctx: Context, method: str, sources: Sequence[str], archs: Sequence[Arch], y: np.ndarray) -> str:
    """What an adapted predictor depends on: method, proxies and their data, the target's samples, harness."""
    import hashlib
    import json

    from harness import __version__

    src = ctx.store.latencies(ctx.space.name, list(sources))
    from harness.analysis.methods import code_digest

    body = {"method": method, "method_code": code_digest(method), "sources": list(sources), "version": __version__,
            "structure": STRUCTURE_VERSION,
            "graph_mode": getattr(ctx.graph, "graph_mode", None),
            "target": sorted((a.key, round(float(v), 9)) for a, v in zip(archs, y)),
            "source_data": {d: [len(g), round(float(g.latency_ms.sum()), 6)] for d, g in src.groupby("device")}}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _why_new(latest: dict | None, prov: dict) -> str:
    """Why adapt made a new predictor instead of reusing the latest one (said in its output)."""
    if latest is None:
        return "the first for this device"
    old = latest["provenance"]
    if old.get("method") != prov["method"]:
        made = old.get("method") or f"{latest.get('method')} (harness train)"  # a trained one records no method
        return f"#{latest['id']} used {made}"
    if sorted(old.get("proxies") or []) != sorted(prov["proxies"]):
        return f"#{latest['id']} used other proxies"
    if old.get("n_target_samples") != prov["n_target_samples"]:
        return f"#{latest['id']} had {old.get('n_target_samples')} target samples, now {prov['n_target_samples']}"
    if old.get("target_archs") != prov["target_archs"] or "inputs_digest" not in old:
        return f"the target's measurements changed since #{latest['id']}"
    if old.get("method_code") != prov["method_code"]:
        return f"the code of {prov['method']} changed since #{latest['id']}"
    return f"the proxies' data, harness or its features changed since #{latest['id']}"


def _target_series(ctx: Context, target: str) -> pd.Series:
    """The target's measured latencies (ms) by architecture key."""
    return latency_matrix(ctx.store, ctx.space.name, [target])[target].dropna()


def _target_samples(ctx: Context, target: str) -> tuple[list[Arch], np.ndarray]:
    series = _target_series(ctx, target)
    if len(series) < 3:
        raise TransferError(f"{target} has {len(series)} {ctx.space.name} measurement(s); adapt needs at least 3")
    return ctx.archs(series.index.tolist()), series.to_numpy()


# --- predict -------------------------------------------------------------------------------------
def describe_predictor(saved: dict) -> str:
    """How a saved predictor is named on screen: predict and search use the device's latest, whichever command
    made it (a `train` after an `adapt` replaced it silently)."""
    prov = saved.get("provenance") or {}
    if "loop_id" in prov:
        how = f"closed loop, round {prov.get('round')}, {prov.get('n_target_samples')} samples"
    elif "n_target_samples" in prov:
        how = f"{saved['method']}, adapted from {prov['n_target_samples']} target samples"
    elif "n_archs" in prov:
        how = f"{saved['method']}, trained on {prov['n_archs']} architectures"
    else:
        how = str(saved["method"])
    return f"predictor #{saved['id']} ({how})"


def _predictions(values, n: int, what: str) -> np.ndarray:
    """A method's predictions as floats, one per architecture asked for: a plug-in returning another length or
    text ended in a pandas error."""
    try:
        pred = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise HarnessError(f"{what}: predict returned {type(values).__name__} values that are not numbers") from None
    if len(pred) != n:
        raise HarnessError(f"{what}: predict returned {len(pred)} values for {n} architectures")
    return pred


def predict(ctx: Context, device: str, archs: Sequence[Arch] | None = None) -> pd.DataFrame:
    saved = ctx.store.latest_predictor(ctx.space.name, device)
    if saved is None:
        have = ctx.devices_with_data()
        if device not in have:  # train or adapt would refuse it too: say what is missing
            raise NoPredictorError(device, f"no {ctx.space.name} predictor for {device!r}, and no {ctx.space.name} "
                                           f"latencies to make one from in {ctx.store.path}"
                                           f"{did_you_mean(device, have)}", needs="measurements")
        raise NoPredictorError(device, f"no {ctx.space.name} predictor for {device!r}: train or adapt one first")
    archs = list(archs) if archs is not None else ctx.candidates()
    pred = _predictions(get_method(saved["method"]).predict(ctx, saved["model"], archs), len(archs),
                        f"predictor #{saved['id']} for {device} ({saved['method']})")
    bad = ~np.isfinite(pred)
    if bad.any() and saved["method"] not in BUILTIN:  # a plug-in's own predict: its code, not the data
        raise HarnessError(f"predictor #{saved['id']} for {device}: the {saved['method']} method's predict gives "
                           f"values that are not finite for {int(bad.sum())} of {len(pred)} architectures; nothing "
                           "was written (a bug in that method?)")
    if bad.any():
        raise HarnessError(f"predictor #{saved['id']} for {device} ({saved['method']}) gives predictions that are "
                           f"not finite for {int(bad.sum())} of {len(pred)} architectures, so nothing was written; "
                           "its training data holds infinite or missing latencies. Fix the data (harness import "
                           "now refuses such values) and train or adapt again.")
    # a method linear in ms (AdaProxy) extrapolates below zero: no latency is, so those are shown tied at half
    # the fastest positive prediction and named in attrs["not_positive"] (search leaves them out, the CLI says so)
    nonpos = pred <= 0
    if nonpos.any():
        pred = np.where(nonpos, pred[~nonpos].min() / 2 if (~nonpos).any() else FLOOR_MS, pred)
    cols = pd.DataFrame([a.columns for a in archs]).assign(predicted_ms=pred)
    cols.attrs["not_positive"] = [a.key for a, bad in zip(archs, nonpos) if bad]
    cols.attrs["method"] = saved["method"]
    cols.attrs["predictor"] = describe_predictor(saved)
    return cols


# --- suggest -------------------------------------------------------------------------------------
def suggest(ctx: Context, proxies: Sequence[str], k: int, strategy: str = sampling.DEFAULT_STRATEGY,
            seed: int = 0, exclude_device: str | None = None) -> pd.DataFrame:
    sources = resolve_proxies(ctx, proxies, exclude=[exclude_device] if exclude_device else [])
    pool, n_constant = ctx.worth_measuring(ctx.candidates())
    if exclude_device:
        done = set(ctx.store.latencies(ctx.space.name, [exclude_device]).key)
        pool = [a for a in pool if a.key not in done]
    if k > len(pool):
        left = f" ({n_constant} networks with a constant output are never picked)" if n_constant else ""
        raise ParameterError("samples", f"{k} samples is more than the {len(pool)} candidate architectures{left}")
    if strategy in sampling.SEQUENTIAL:
        picked = _suggest_uncertain(ctx, sources, proxies, pool, k, seed, exclude_device)
    else:
        s_ms, _ = source_latencies(ctx, sources, pool)
        _note_predicted_sources(ctx, sources, pool)
        picks = sampling.select(k, np.log(np.clip(s_ms, 1e-3, None)), onehot(ctx.space, pool), strategy, seed)
        picked = pd.DataFrame([pool[i].columns for i in picks])
    picked.attrs["constant_output_left_out"] = n_constant
    return picked


def _note_predicted_sources(ctx: Context, sources: Sequence[str], pool: Sequence[Arch]) -> None:
    """Say where the picks rest on predicted proxy latencies: a proxy measured on 1,999 of 15,284 candidates was
    spread over by its own predictor's values for the rest, silently."""
    have = ctx.wide(sources).reindex([a.key for a in pool]).notna().sum()
    part = [f"{d} ({int(have.get(d, 0)):,})" for d in sources if have.get(d, 0) < len(pool)]
    if part:
        ctx.notes.append(f"of the {len(pool):,} candidates, {', '.join(part)} {'has' if len(part) == 1 else 'have'} "
                         "latencies measured for only these many; the rest are each proxy's own predictions (ridge "
                         "on one-hot + graph features), which the picks are spread over too")


def _suggest_uncertain(ctx: Context, sources: list[str], proxies: Sequence[str], pool: list[Arch], k: int,
                       seed: int, target: str | None) -> pd.DataFrame:
    """The next K for a target with its first measurements: fit the multiproxy ensemble on them and pick
    where its members disagree most, spread out (sampling.select_uncertain)."""
    from harness.analysis.methods.multiproxy import fit_model

    if target is None:
        raise ParameterError("target", "the uncertain strategy picks the next architectures for a target that "
                             "already has measurements: name it")
    have = _target_series(ctx, target) if target in ctx.devices_with_data() else pd.Series(dtype=float)
    if len(have) < sampling.MIN_FOR_UNCERTAIN:
        raise ParameterError("strategy", f"{target} has {len(have)} {ctx.space.name} measurement(s); the uncertain "
                             f"strategy needs at least {sampling.MIN_FOR_UNCERTAIN}: pick the first ones with diverse")
    measured = ctx.archs(have.index.tolist())
    sources = without_own_copies(ctx, sources, proxies, target, measured, have.to_numpy())
    model, fitted_on, _ = fit_model(ctx, sources, measured, have.to_numpy())
    every = measured + list(pool)
    s_ms, _ = source_latencies(ctx, sources, every)
    _note_predicted_sources(ctx, sources, pool)
    st = ctx.structure(every, fitted_on.names, fitted_on.kept)
    used = [sources.index(s) for s in model.sources]
    spread = model.disagreement(s_ms[:, used], st.onehot, st.matrix)
    picks = sampling.select_uncertain(k, spread, np.log(np.clip(s_ms, 1e-3, None)), st.onehot,
                                      np.arange(len(measured)), seed)
    return pd.DataFrame([every[i].columns for i in picks])


# --- pareto --------------------------------------------------------------------------------------
def _what_if_predictions(ctx: Context, proxies: Sequence[str], target: str, k: int, archs: list[Arch],
                         method: str = DEFAULT_METHOD, seed: int = 0, param: str = "what_if_proxies") -> np.ndarray:
    """Predictions for ``archs`` from ``method`` fitted on only K of the target's measurements, picked as
    `suggest` would (validation: the target is fully measured, we pretend it is new). Nothing is saved."""
    sources = resolve_proxies(ctx, proxies, exclude=[target], param=param)
    pool, y = _target_samples(ctx, target)
    sources = without_own_copies(ctx, sources, proxies, target, pool, y, param)
    worth = {a.key for a in ctx.worth_measuring(pool)[0]}  # as `suggest` picks
    keep = [i for i, a in enumerate(pool) if a.key in worth]
    if k > len(keep):
        raise ParameterError("what_if_k", f"{k} is more than the {len(keep)} of {target}'s measured architectures "
                             f"worth picking ({len(y) - len(keep)} with a constant output are never picked, as "
                             "`suggest` does)")
    pool, y = [pool[i] for i in keep], y[keep]
    s_pool, _ = source_latencies(ctx, sources, pool)
    picks = sampling.select(k, np.log(np.clip(s_pool, 1e-3, None)), onehot(ctx.space, pool),
                            sampling.DEFAULT_STRATEGY, seed)
    m = get_method(method)
    fitted = m.fit(ctx, sources, [pool[i] for i in picks], y[picks])
    return m.predict(ctx, fitted.payload, archs)


def pareto(ctx: Context, proxy: str, target: str, accuracy: str, what_if_k: int | None = None,
           what_if_proxies: Sequence[str] | None = None, what_if_method: str = DEFAULT_METHOD) -> ParetoResult:
    acc = ctx.store.arch_metrics(ctx.space.name, "accuracy")  # as search: oneproxy_row is metadata (it was taken)
    if accuracy not in acc.columns:
        raise ParameterError("accuracy", f"no accuracy column {accuracy!r} for {ctx.space.name}; have: "
                             f"{', '.join(map(str, acc.columns)) or '(none: import a table with acc_* columns)'}")
    if what_if_k is not None and what_if_k < MIN_TARGET_SAMPLES:
        raise ParameterError("what_if_k", f"{what_if_k} target samples are too few to fit a predictor; give at "
                             f"least {MIN_TARGET_SAMPLES}")
    if proxy == target:
        raise ParameterError("proxy", f"the proxy and the target are both {proxy!r}: the check compares one device's "
                             "Pareto set on another; name a different proxy")
    if what_if_k and target in (what_if_proxies or []):
        raise ParameterError("what_if_proxies", f"the target {target!r} cannot be its own proxy for --what-if-k")
    wide = latency_matrix(ctx.store, ctx.space.name, [proxy, target])
    # as search and suggest: networks whose output is a constant (NB201's cells with no path to the output, ~1 %
    # accuracy, fastest everywhere) are no candidates; they sat on every front and moved its recall
    kept = latency_matrix(ctx.store, ctx.space.name, [proxy, target], degenerate=False)
    n_constant = len(wide.dropna()) - len(kept.dropna())
    if n_constant:
        ctx.notes.append(f"left out {n_constant} networks with a constant output (no path from input to output), as "
                         "`search` and `suggest` do: no search wants them")
    wide = kept
    both = wide.join(acc[[accuracy]], how="inner").dropna()
    if len(both) < 3:
        raise HarnessError(f"only {len(both)} architectures have {proxy}, {target} and {accuracy}")
    a = both[accuracy].to_numpy()
    t = both[target].to_numpy()
    result = ParetoResult(proxy, target, accuracy, pareto_mod.check(both[proxy].to_numpy(), t, a), both,
                          proxy_archs=int(wide[proxy].notna().sum()))
    pred = None
    if what_if_k:
        pred = _what_if_predictions(ctx, what_if_proxies or [proxy], target, what_if_k,
                                    ctx.archs(both.index.tolist()), what_if_method,
                                    param="what_if_proxies" if what_if_proxies else "proxy")
        result.predicted_from = f"{what_if_method} fit on {what_if_k} of {target}'s measurements"
    elif (saved := ctx.store.latest_predictor(ctx.space.name, target)) is not None:
        pred = predict(ctx, target, ctx.archs(both.index.tolist()))["predicted_ms"].to_numpy()
        result.predicted_from = "the target's saved predictor"
        prov = saved["provenance"]
        fitted = set(prov.get("target_archs") or [])  # a loop's predictor names no list: it has every sample
        result.predicted_in_sample = (len(fitted & set(both.index)) if fitted else
                                      min(int(prov.get("n_target_samples") or len(both)), len(both)))
    if pred is not None:
        result.predicted_front = pareto_mod.check(pred, t, a)
        result.frame = both.assign(predicted_ms=pred)
    return result


def open_context(store: Store, space: str, cache_dir: str | None = None) -> Context:
    return Context(store, get_space(space), cache_dir)
