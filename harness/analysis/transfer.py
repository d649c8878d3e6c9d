"""Latency predictors and their transfer to a new device from a few target measurements.

Array level (no store): every function takes feature matrices and latencies in ms, so the CLI, the
notebook API and ``benchmarks/transfer.py`` run the very same code.

* :func:`fit_linear`  - a device's own predictor: ridge on features, in log-latency.
* :func:`fit_adaproxy` - OneProxy's AdaProxy (baseline): proxy predictor ``w`` linear on the one-hot
  (``w = pinv(X) y_proxy``); target ``X (w * (a + b)) + c`` fitted on the K target samples with an L1
  penalty on the per-operation correction ``b`` (OneProxy's ``solver.py``; solved by FISTA instead of
  cvxpy), lambda by 5-fold cross-validation on the K samples.
* :func:`fit_multiproxy` - ours: the target's log-latency as a ridge combination of the source
  devices' log-latencies (non-negative weights), plus a down-weighted correction on the structure
  features (or, without them, the one-hot) for what no source sees. Sources are ranked by SRCC on the
  K samples (NASFLAT's source selection); the best few candidates by exact leave-one-out error and the target's own structure
  models are averaged by inverse LOO error, so a target unlike every source falls back on its own
  structure instead of a misleading proxy. The structure features may carry two views of an architecture
  (``plain_width``): as exported with dead code pruned, and with dead convolutions kept (devices disagree on
  dead code); candidates and own models read the plain view or both, and LOO error chooses per target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from harness.analysis.ridge import RidgeFit, fit_ridge
from harness.errors import HarnessError

MIN_TARGET_SAMPLES = 3
FLOOR_MS = 1e-3  # latencies are logged; published tables contain near-zero values


class TransferError(HarnessError):
    """A predictor cannot be fitted from what is there (too few samples, no data...)."""


def _log(ms: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(ms, dtype=float), FLOOR_MS, None))


def _check_samples(y: np.ndarray, need: int = MIN_TARGET_SAMPLES, what: str = "target") -> None:
    n = int(np.isfinite(y).sum())
    if n < need:
        raise TransferError(f"the {what} has {n} measurement(s); at least {need} are needed")


# --- a device's own predictor -------------------------------------------------------------------
@dataclass
class LinearModel:
    """Ridge in log-latency on a feature matrix (one-hot and/or graph features)."""

    fit: RidgeFit

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.exp(self.fit.predict(features))

    def to_json(self) -> dict:
        return {"kind": "linear", "fit": self.fit.to_json()}


def fit_linear(features: np.ndarray, y_ms: np.ndarray) -> LinearModel:
    _check_samples(y_ms, what="device")
    return LinearModel(fit_ridge(features, _log(y_ms)))


# --- OneProxy's AdaProxy ------------------------------------------------------------------------
def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))])


def _min_norm_lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """pinv(a) @ y through the small Gram matrix. The one-hot groups already sum to the bias column,
    so a has an exact null direction: cut it (relative eigenvalue < 1e-10), or w explodes."""
    evals, evecs = np.linalg.eigh(a.T @ a)
    keep = evals > 1e-10 * evals.max()
    return evecs[:, keep] @ ((evecs[:, keep].T @ (a.T @ y)) / evals[keep])


def _fista_l1(m: np.ndarray, y: np.ndarray, penalised: np.ndarray, lam: float, iters: int = 500) -> np.ndarray:
    """argmin (1/n)||m t - y||^2 + lam * ||t[penalised]||_1 by accelerated proximal gradient."""
    n = len(y)
    step = n / (2.0 * max(np.linalg.norm(m, 2) ** 2, 1e-12))
    t = np.zeros(m.shape[1])
    z, k = t.copy(), 1.0
    for _ in range(iters):
        grad = (2.0 / n) * m.T @ (m @ z - y)
        nxt = z - step * grad
        nxt[penalised] = np.sign(nxt[penalised]) * np.maximum(np.abs(nxt[penalised]) - step * lam, 0.0)
        k_next = (1 + np.sqrt(1 + 4 * k * k)) / 2
        z = nxt + ((k - 1) / k_next) * (nxt - t)
        if np.max(np.abs(nxt - t)) < 1e-7 * (1.0 + np.max(np.abs(nxt))):
            t = nxt
            break
        t, k = nxt, k_next
    return t


@dataclass
class AdaProxyModel:
    w: np.ndarray       # proxy weights on [one-hot, 1]
    a: float
    b: np.ndarray       # per-feature correction
    c: float
    lam: float

    def predict(self, onehot: np.ndarray) -> np.ndarray:
        return _with_bias(onehot) @ (self.w * (self.a + self.b)) + self.c

    def to_json(self) -> dict:
        return {"kind": "adaproxy", "w": self.w.tolist(), "a": self.a, "b": self.b.tolist(), "c": self.c,
                "lam": self.lam}


def _adaproxy_solve(xw: np.ndarray, y: np.ndarray, lam: float) -> tuple[float, np.ndarray, float]:
    """xw: target one-hot (with bias) times w elementwise; returns a, b, c."""
    m = np.hstack([xw.sum(axis=1, keepdims=True), xw, np.ones((len(y), 1))])
    penalised = np.zeros(m.shape[1], dtype=bool)
    penalised[1:-1] = True
    t = _fista_l1(m, y, penalised, lam)
    return float(t[0]), t[1:-1], float(t[-1])


def fit_adaproxy(proxy_onehot: np.ndarray, proxy_ms: np.ndarray, target_onehot: np.ndarray,
                 target_ms: np.ndarray, lambdas: tuple[float, ...] = (0.0, 1e-2, 1e-1, 1.0),
                 seed: int = 0) -> AdaProxyModel:
    _check_samples(target_ms)
    ok = np.isfinite(proxy_ms)
    _check_samples(proxy_ms[ok], need=2, what="proxy")
    w = _min_norm_lstsq(_with_bias(proxy_onehot[ok]), proxy_ms[ok])
    xw = _with_bias(target_onehot) * w
    y = np.asarray(target_ms, dtype=float)
    folds = np.array_split(np.random.default_rng(seed).permutation(len(y)), min(5, len(y)))
    best = (np.inf, lambdas[0])
    for lam in lambdas:
        err = 0.0
        for f in folds:
            train = np.setdiff1d(np.arange(len(y)), f)
            a, b, c = _adaproxy_solve(xw[train], y[train], lam)
            err += float(np.sum((xw[f] @ (a + b) + c - y[f]) ** 2))
        if err < best[0]:
            best = (err, lam)
    a, b, c = _adaproxy_solve(xw, y, best[1])
    return AdaProxyModel(w, a, b, c, best[1])


# --- ours: multi-proxy transfer -----------------------------------------------------------------
# what a proxy part's correction reads besides the sources: the one-hot, the plain structure view (one-hot + graph
# features of the pruned graph) or both views (plus the live-edges-only one-hot and the kept graph's features)
CORRECTIONS = ("onehot", "structure", "both")
CORRECTION_WEIGHTS = (0.0, 0.1, 0.3, 1.0)
TOP_PARTS = 3
FEW_SOURCES = 3  # structure-corrected candidates are also fitted on this many best sources by SRCC


@dataclass
class ProxyPart:
    """One member of the ensemble: ridge on the log-latencies of ``sources`` (all weights >= 0) plus a
    correction on the one-hot or the structure features, penalised more the smaller ``weight`` is (0 = none).
    ``fit`` reads [log source ms, correction features] raw: the weight is already folded into its scale."""

    sources: list[str]
    correction: str
    weight: float
    fit: RidgeFit
    share: float = 1.0

    def predict_log(self, source_log: dict[str, np.ndarray], onehot: np.ndarray,
                    structure: np.ndarray | None, plain_width: int | None = None) -> np.ndarray:
        cols = [source_log[s] for s in self.sources]
        blocks = [np.column_stack(cols)]
        if self.weight > 0:
            if self.correction == "onehot":
                extra = onehot
            else:
                extra = _view(structure, plain_width, self.correction)
            blocks.append(extra)
        return self.fit.predict(np.hstack(blocks))

    def to_json(self) -> dict:
        return {"sources": self.sources, "correction": self.correction, "weight": self.weight,
                "fit": self.fit.to_json(), "share": self.share}

    @classmethod
    def from_json(cls, d: dict) -> ProxyPart:
        return cls(list(d["sources"]), str(d["correction"]), float(d["weight"]), RidgeFit.from_json(d["fit"]),
                   float(d["share"]))


def _view(structure: np.ndarray | None, plain_width: int | None, view: str) -> np.ndarray:
    """The plain view (the first ``plain_width`` columns; all when None) or both views of the structure."""
    if structure is None:
        raise TransferError("this predictor also needs the architectures' structure features")
    if plain_width is not None and structure.shape[1] < plain_width:
        raise TransferError(f"this predictor reads {plain_width}+ structure columns, got {structure.shape[1]}")
    if view == "both" or plain_width is None:
        return structure
    return structure[:, :plain_width]


@dataclass
class GraphPart:
    """The target's own model on a block of graph features only (operator counts, output sizes, MACs,
    parameters: ``structure[:, start:stop]``). Twenty samples pin down these ~20 physical features better
    than the ~70 of one-hot + graph: a GPU or VPU whose cost is per kernel is ranked by them where a one-hot
    fit over-reads the samples (benchmarks/transfer.py K = 20, 10 draws: FBNet worst 0.940 -> 0.965)."""

    start: int
    stop: int
    fit: RidgeFit
    share: float = 0.0

    def predict_log(self, structure: np.ndarray | None) -> np.ndarray:
        if structure is None or structure.shape[1] < self.stop:
            raise TransferError(f"this predictor reads structure columns {self.start}-{self.stop}; "
                                f"got {0 if structure is None else structure.shape[1]} columns")
        return self.fit.predict(structure[:, self.start:self.stop])

    def to_json(self) -> dict:
        return {"start": self.start, "stop": self.stop, "fit": self.fit.to_json(), "share": self.share}

    @classmethod
    def from_json(cls, d: dict) -> GraphPart:
        return cls(int(d["start"]), int(d["stop"]), RidgeFit.from_json(d["fit"]), float(d["share"]))


@dataclass
class MultiProxyModel:
    """An ensemble of proxy parts and the target's own structure models, each weighted by the inverse of its
    leave-one-out error (``share``s sum to 1)."""

    sources: list[str]          # every source a part uses, best SRCC first (the columns predict() expects)
    parts: list[ProxyPart]      # best leave-one-out error first
    candidates: dict[str, float] = field(default_factory=dict)  # SRCC of every source on the K samples
    structure_fit: RidgeFit | None = None  # the target's own structure model (plain view)
    structure_share: float = 0.0
    # structure columns of the plain view; the rest is the second view (None: one view, saved before version 3)
    plain_width: int | None = None
    both_fit: RidgeFit | None = None       # the target's own structure model on both views
    both_share: float = 0.0
    graph_parts: list[GraphPart] = field(default_factory=list)  # own models on graph features only (version 4)

    @property
    def fit(self) -> RidgeFit:
        """The best part's fit (its ``loo_mse`` is the model's reported leave-one-out error)."""
        return self.parts[0].fit

    @property
    def onehot_weight(self) -> float:
        return self.parts[0].weight

    @property
    def blend(self) -> float:
        """Weight of the proxy parts together; the rest goes to the structure models."""
        return 1.0 - self.structure_share - self.both_share - sum(g.share for g in self.graph_parts)

    def predict(self, source_ms: np.ndarray, onehot: np.ndarray, structure: np.ndarray | None = None) -> np.ndarray:
        """source_ms: latencies of ``self.sources`` (columns in that order) for the architectures to predict;
        structure: their structure features as at fit time (needed when a part or an own model reads them)."""
        shares, preds = self._members(source_ms, onehot, structure, weighted_only=True)
        return np.exp(shares @ preds)

    def disagreement(self, source_ms: np.ndarray, onehot: np.ndarray,
                     structure: np.ndarray | None = None) -> np.ndarray:
        """(N,): how much the ensemble's members (proxy parts, own structure models, own graph-feature models)
        disagree per architecture, the standard deviation of their log-latency predictions: where it is unsure."""
        return self._members(source_ms, onehot, structure)[1].std(axis=0)

    def _members(self, source_ms: np.ndarray, onehot: np.ndarray, structure: np.ndarray | None,
                 weighted_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Every member's share (M,) and log-latency prediction (M, N): proxy parts, own structure models (plain
        view, both views), own graph-feature models. ``weighted_only``: an own structure model of share 0 (a
        version-1 predictor blended wholly to its proxy) is left out, so it needs no structure features."""
        slog = _log(source_ms)
        by_name = {s: slog[:, j] for j, s in enumerate(self.sources)}
        shares = [p.share for p in self.parts]
        preds = [p.predict_log(by_name, onehot, structure, self.plain_width) for p in self.parts]
        for view, own, share in (("structure", self.structure_fit, self.structure_share),
                                 ("both", self.both_fit, self.both_share)):
            if own is not None and (share > 0 or not weighted_only):
                shares.append(share)
                preds.append(own.predict(_view(structure, self.plain_width, view)))
        shares += [g.share for g in self.graph_parts]
        preds += [g.predict_log(structure) for g in self.graph_parts]
        return np.array(shares), np.array(preds)

    def to_json(self) -> dict:
        return {"kind": "multiproxy", "version": 4, "sources": self.sources,
                "parts": [p.to_json() for p in self.parts], "candidates": self.candidates,
                "structure_share": self.structure_share,
                "structure_fit": self.structure_fit.to_json() if self.structure_fit else None,
                "plain_width": self.plain_width, "both_share": self.both_share,
                "both_fit": self.both_fit.to_json() if self.both_fit else None,
                "graph_parts": [g.to_json() for g in self.graph_parts]}


def rank_sources(source_ms: np.ndarray, target_ms: np.ndarray, names: list[str]) -> list[tuple[str, float]]:
    """Sources by SRCC with the target on the K samples, best first (NaN-safe; a constant or gappy source
    scores -1). Ranks of all sources at once: the closed loop calls this thousands of times."""
    s = np.asarray(source_ms, dtype=float)
    t = np.asarray(target_ms, dtype=float)
    rs = rankdata(s, axis=0)
    rt = rankdata(t)
    rs, rt = rs - rs.mean(axis=0), rt - rt.mean()
    denom = np.sqrt((rs ** 2).sum(axis=0) * (rt ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rs * rt[:, None]).sum(axis=0) / denom
    bad = ~np.isfinite(rho) | np.isnan(s).any(axis=0) | (np.ptp(s, axis=0) == 0) if len(s) else np.ones(len(names), bool)
    scores = [(name, -1.0 if bad[j] else float(rho[j])) for j, name in enumerate(names)]
    return sorted(scores, key=lambda t: -t[1])


def _nonnegative_fit(slog: np.ndarray, extra: np.ndarray, y: np.ndarray, weight: float,
                     cols: list[int]) -> tuple[list[int], RidgeFit]:
    """Ridge on [slog[:, cols], extra]; while a source gets a negative weight, drop the most negative one.

    A negative weight on a source's latency has no physical meaning: with 20 samples and 17 correlated
    sources it is the fit playing sources off against each other, which leave-one-out on the samples
    does not catch (Pixel 3: LOO error 0.005, error on the rest 0.03, SRCC 0.82 instead of 0.90)."""
    cols = list(cols)
    while True:
        if weight > 0:
            feats = np.hstack([slog[:, cols], extra])
            w = np.concatenate([np.ones(len(cols)), np.full(extra.shape[1], weight)])
        else:
            feats, w = slog[:, cols], None
        fit = fit_ridge(feats, y, weights=w)
        worst = int(np.argmin(fit.coef[:len(cols)]))
        if fit.coef[worst] >= 0 or len(cols) == 1:
            return cols, fit
        cols.pop(worst)


def fit_multiproxy(source_ms: np.ndarray, onehot: np.ndarray, target_ms: np.ndarray, names: list[str],
                   structure: np.ndarray | None = None, weights: tuple[float, ...] = CORRECTION_WEIGHTS,
                   top: int = TOP_PARTS, plain_width: int | None = None,
                   graph_cols: Sequence[tuple[int, int]] = ()) -> MultiProxyModel:
    """source_ms: (K, n_sources) latencies of the sources on the K measured architectures.

    Candidates: every source with non-negative weights, alone and with a correction at each weight: on the
    structure features (``structure``: one-hot + graph features of the K architectures) or, without them, on
    the one-hot; structure-corrected ones also on the ``FEW_SOURCES`` best sources by SRCC only.
    The ``top`` candidates by exact leave-one-out error and the target's own structure model are averaged
    in log-latency, each weighted by the inverse of its LOO error: one lucky LOO minimum no longer decides
    alone, and where no source resembles the target its own structure carries the ranking
    (benchmarks/transfer.py, K = 20: NB201 worst target 0.835 -> 0.880, FBNet and the family protocol up too).

    ``plain_width`` < structure columns: ``structure`` is [plain view, second view] ([one-hot, pruned graph's
    features] then [live-edges-only one-hot, kept graph's features]: workflow.Context.features). Structure
    corrections then read the plain view or both, and both own models (plain, both views) join the average (NB201 K = 20: mean /
    worst 0.953 / 0.880 -> 0.955 / 0.888, without one-hot-only corrections 0.959 / 0.888, with the few-source
    candidates 0.961 / 0.893; family protocol and FBNet up too).

    ``graph_cols``: column ranges of ``structure`` holding graph features only (the pruned graph's, the kept
    graph's); each gets an own model in the average (:class:`GraphPart`; K = 20, mean / worst over 10 draws: NB201
    0.952 / 0.837 -> 0.957 / 0.843, family protocol 0.928 / 0.856 -> 0.939 / 0.858, FBNet 0.967 / 0.940 -> 0.974 / 0.965).
    The last block of ``structure`` may be the edge activity (features.edge_activity): its own model is what ranks a
    device that pays per operation (NB201 K = 20: 0.957 / 0.843 -> 0.959 / 0.877, the edge GPU).
    """
    _check_samples(target_ms)
    if source_ms.shape[1] == 0:
        raise TransferError("no source device has data for the measured architectures")
    ranked = rank_sources(source_ms, target_ms, names)
    order = [names.index(n) for n, _ in ranked]
    y = _log(target_ms)
    slog = _log(source_ms)
    two_views = structure is not None and plain_width is not None and plain_width < structure.shape[1]
    # the structure views contain the one-hot: with them, a one-hot-only correction is a subset that wins LOO on
    # 20 samples more often than it ranks the rest well (edge GPU 0.87-0.89 against 0.91), so it is left out
    views = [("onehot", onehot)] if structure is None else [("structure", _view(structure, plain_width, "structure"))]
    if two_views:
        views.append(("both", structure))
    found: list[ProxyPart] = []
    for correction, extra in views:
        for g in weights:
            if g == 0 and found and correction != "onehot":
                continue  # no correction: the same candidate whatever it would read
            cols, fit = _nonnegative_fit(slog, extra, y, g, order)
            found.append(ProxyPart([names[j] for j in cols], correction, g, fit))
            if g > 0 and correction != "onehot" and len(order) > FEW_SOURCES:
                # the same on the few sources that rank the K samples best: 17 correlated sources leave
                # the 20 samples little to say about the correction
                cols, fit = _nonnegative_fit(slog, extra, y, g, order[:FEW_SOURCES])
                found.append(ProxyPart([names[j] for j in cols], correction, g, fit))
    found.sort(key=lambda p: p.fit.loo_mse)
    parts = found[:top]
    own = fit_ridge(_view(structure, plain_width, "structure"), y) if structure is not None else None
    own_both = fit_ridge(structure, y) if two_views else None
    owns = [f for f in (own, own_both) if f is not None]
    graphs = []
    for start, stop in graph_cols:
        if structure is None or not 0 <= start < stop <= structure.shape[1]:
            raise TransferError(f"graph feature columns {start}-{stop} are outside the structure features")
        graphs.append(GraphPart(start, stop, fit_ridge(structure[:, start:stop], y)))
    inv = np.array([1.0 / max(f.loo_mse, 1e-12) for f in [p.fit for p in parts] + owns + [g.fit for g in graphs]])
    inv /= inv.sum()
    for member, share in zip(parts + graphs, np.concatenate([inv[:len(parts)], inv[len(parts) + len(owns):]])):
        member.share = float(share)
    used = {s for p in parts for s in p.sources}
    return MultiProxyModel([n for n, _ in ranked if n in used], parts, dict(ranked), own,
                           float(inv[len(parts)]) if own is not None else 0.0,
                           plain_width if two_views else None, own_both,
                           float(inv[len(parts) + 1]) if own_both is not None else 0.0, graphs)


def model_from_json(d: dict) -> LinearModel | AdaProxyModel | MultiProxyModel:
    kind = d.get("kind")
    if kind == "linear":
        return LinearModel(RidgeFit.from_json(d["fit"]))
    if kind == "adaproxy":
        return AdaProxyModel(np.asarray(d["w"]), float(d["a"]), np.asarray(d["b"]), float(d["c"]), float(d["lam"]))
    if kind == "multiproxy":
        structure = d.get("structure_fit")
        structure_fit = RidgeFit.from_json(structure) if structure else None
        if "parts" in d:  # version 2 (one structure view), 3 (two views) or 4 (own graph-feature models)
            both = d.get("both_fit")
            width = d.get("plain_width")
            return MultiProxyModel(list(d["sources"]), [ProxyPart.from_json(p) for p in d["parts"]],
                                   dict(d.get("candidates", {})), structure_fit, float(d["structure_share"]),
                                   int(width) if width is not None else None,
                                   RidgeFit.from_json(both) if both else None, float(d.get("both_share", 0.0)),
                                   [GraphPart.from_json(g) for g in d.get("graph_parts", [])])
        return _multiproxy_v1(d, structure_fit)
    raise TransferError(f"unknown predictor kind {kind!r}")


def _multiproxy_v1(d: dict, structure_fit: RidgeFit | None) -> MultiProxyModel:
    """A predictor saved before version 2: one part on [log sources, g * one-hot], blended by ``blend``."""
    fit = RidgeFit.from_json(d["fit"])
    g, n = float(d["onehot_weight"]), len(d["sources"])
    if g > 0:  # the raw one-hot was multiplied by g; fold that into the scale, as version 2 does
        fit.mean = np.concatenate([fit.mean[:n], fit.mean[n:] / g])
        fit.scale = np.concatenate([fit.scale[:n], fit.scale[n:] / g])
    blend = float(d.get("blend", 1.0)) if structure_fit is not None else 1.0
    part = ProxyPart(list(d["sources"]), "onehot", g, fit, blend)
    return MultiProxyModel(list(d["sources"]), [part], dict(d.get("candidates", {})), structure_fit, 1.0 - blend)
