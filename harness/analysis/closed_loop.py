"""The closed loop: measure on a new target only until its accuracy-latency Pareto front is settled.

Array level (no store, no device): :class:`Pool` holds every candidate architecture's source latencies,
one-hot and structure features and accuracy; :func:`first_batch` picks where to start and :func:`step`
does one round: adapt the multi-proxy predictor on what is measured, estimate its uncertainty, predict
the front, decide whether it is stable, and pick the next batch. ``harness transfer`` (measurement
through real campaigns, resume from the store) and ``benchmarks/closed_loop.py`` (replayed public
tables) run exactly this code.

Uncertainty. Two parts, both cheap at K <= 100: the jackknife spread of the fitted model (K refits, each
leaving one measured architecture out; their predictions of the left-out one are the honest leave-one-out
predictions reported as "LOO SRCC"), and the residual error those LOO predictions make, as independent
log-normal noise per architecture. ``n_draws`` joint draws of the whole space's latencies give each
architecture a probability of being on the front; the next batch is where that probability is least
certain (closest to 1/2), i.e. the architectures whose latency decides front membership. Until
``explore`` samples, though, batches continue the diverse order of the first batch: a loop that stops by
then has measured exactly what a fixed-K campaign of the same size measures, never less well chosen
(benchmarks/closed_loop.py: with uncertainty picks from sample 11 on, 6 of 36 runs that stopped at 20
had a lower HV ratio than fixed K = 20).

Stopping. The predicted front (measured latencies where known, predictions elsewhere) must be stable for
``stable_rounds`` consecutive rounds: Jaccard similarity with the previous round's front >= ``jaccard``
and relative hypervolume change < ``hv_change``; or the budget is spent.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from harness.analysis import sampling
from harness.analysis.transfer import MultiProxyModel, TransferError, fit_multiproxy
from harness.errors import HarnessError


MAX_MEMBERS = 16
PICKS = ("uncertain", "front", "mixed")
EXPLORE_BY = ("diverse", "uncertain")


class LoopError(HarnessError):
    """The closed loop cannot run as asked (budget, batch sizes, candidates); nothing was measured."""


@dataclass(frozen=True)
class LoopConfig:
    first_batch: int = 10
    batch: int = 5
    explore: int = 20  # batches follow the diverse order (a fixed-K campaign's picks) until this many samples
    budget: int = 50
    jaccard: float = 0.9
    hv_change: float = 0.005
    hv_target: float = 0.95  # the draws are pessimistic (independent noise per architecture): see benchmarks/closed_loop.py
    stable_rounds: int = 2
    n_draws: int = 32
    seed: int = 0
    # uncertain: P(front) closest to 1/2 | front: most likely front members first | mixed: half uncertain, half
    # the diverse order's next ones
    pick: str = "uncertain"
    # how the explore phase picks: the diverse order (a fixed-K campaign's picks) or where the predictor's
    # ensemble members disagree, spread out (sampling.select_uncertain, `suggest --strategy uncertain`)
    explore_by: str = "diverse"

    def validate(self, n_candidates: int) -> None:
        if self.first_batch < 3:
            raise LoopError(f"--first-batch must be at least 3 (a predictor needs 3 samples), got {self.first_batch}")
        if self.batch < 1:
            raise LoopError(f"--batch must be at least 1, got {self.batch}")
        if self.budget < self.first_batch:
            raise LoopError(f"--budget {self.budget} is smaller than the first batch ({self.first_batch}); raise "
                            f"--budget or lower --first-batch")
        if self.explore < 0:
            raise LoopError(f"--explore must be >= 0, got {self.explore}")
        if self.pick not in PICKS:
            raise LoopError(f"unknown pick {self.pick!r}; valid: {', '.join(PICKS)}")
        if self.explore_by not in EXPLORE_BY:
            raise LoopError(f"unknown --explore-by {self.explore_by!r}; valid: {', '.join(EXPLORE_BY)}")
        if self.first_batch > n_candidates:
            raise LoopError(f"the first batch ({self.first_batch}) is larger than the {n_candidates} candidates")


@dataclass
class Pool:
    """Every candidate architecture, as arrays aligned by row."""

    keys: list[str]
    source_ms: np.ndarray       # (N, S) source latencies, gaps already filled
    source_names: list[str]
    onehot: np.ndarray          # (N, d)
    structure: np.ndarray       # (N, f) one-hot + graph features (plain view), then the second view if any
    accuracy: np.ndarray        # (N,)
    plain_width: int | None = None  # structure columns of the plain view (None: one view only)
    graph_cols: list[tuple[int, int]] = field(default_factory=list)  # graph-feature-only column ranges

    def __post_init__(self) -> None:
        n = len(self.keys)
        for name in ("source_ms", "onehot", "structure", "accuracy"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Pool.{name} has {len(getattr(self, name))} rows, keys {n}")
        self.source_log = np.log(np.clip(self.source_ms, 1e-3, None))


@dataclass
class Round:
    """What one round decided (also what ``harness transfer`` prints and saves)."""

    round: int
    n_samples: int
    loo_srcc: float
    loo_error_pct: float          # median |LOO error| in percent of the latency
    front: list[int]              # pool rows of the predicted front
    front_prob: list[float]       # each member's probability of being on the front
    hv: float
    jaccard: float | None         # vs the previous round's front
    hv_change: float | None       # 1 - HV(last front) / HV(this front), both on this round's latencies
    expected_hv: float            # expected HV ratio of this front against the truth, over the draws
    expected_recall: float
    stable: bool
    stop: str | None              # "stable", "budget" or None
    next_batch: list[int] = field(default_factory=list)
    seconds: float = 0.0
    loo_rms_log: float | None = None  # root-mean-square LOO error in log ms: the sigma of its draws and of search

    @property
    def confidence(self) -> float:
        return float(np.mean(self.front_prob)) if self.front_prob else float("nan")

    def to_json(self) -> dict:
        return asdict(self)


def front_mask(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Vectorised :func:`harness.analysis.pareto.pareto_mask` (same definition, one sort)."""
    order = np.lexsort((-accuracy, latency))
    acc = accuracy[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(acc)[:-1]])
    mask = np.zeros(len(latency), dtype=bool)
    mask[order] = acc > best_before
    return mask


def front_hv(latency: np.ndarray, accuracy: np.ndarray, front: np.ndarray) -> float:
    """Hypervolume of the front in (latency / max latency, accuracy), reference (1, min accuracy)."""
    lat = latency[front] / latency.max()
    acc = accuracy[front]
    order = np.argsort(lat)
    lat, acc = lat[order], acc[order]
    edges = np.append(lat[1:], 1.0)
    return float(np.sum((edges - lat) * (acc - accuracy.min())))


def jaccard(a: list[int] | set[int], b: list[int] | set[int]) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def first_batch(pool: Pool, k: int, seed: int = 0) -> np.ndarray:
    """Deterministic for a seed, so an interrupted first campaign resumes the same batch."""
    return sampling.select(k, pool.source_log, pool.onehot, "diverse", seed)


def diverse_next(pool: Pool, taken: set[int], k: int, seed: int = 0) -> list[int]:
    """The next k architectures in the diverse order not yet taken. Greedy farthest-point selection is
    nested (its first n picks are the picks for n), so a loop exploring this way has measured exactly what a
    fixed-K campaign of the same size measures."""
    n = len(pool.keys)
    size = min(n, len(taken) + k)
    while True:
        order = first_batch(pool, size, seed)
        picks = [int(i) for i in order if int(i) not in taken][:k]
        if len(picks) == k or size == n:
            return picks
        size = min(n, 2 * size)


def _fit(pool: Pool, rows: np.ndarray, y_ms: np.ndarray) -> MultiProxyModel:
    return fit_multiproxy(pool.source_ms[rows], pool.onehot[rows], y_ms, pool.source_names,
                          structure=pool.structure[rows], plain_width=pool.plain_width, graph_cols=pool.graph_cols)


def _model_inputs(model: MultiProxyModel, pool: Pool, rows: np.ndarray | slice) -> tuple[np.ndarray, ...]:
    """What the model reads for these pool rows: its sources' latencies (in its column order), one-hot, structure."""
    cols = [pool.source_names.index(s) for s in model.sources]
    return pool.source_ms[rows][:, cols], pool.onehot[rows], pool.structure[rows]


def predict_log(model: MultiProxyModel, pool: Pool, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    return np.log(model.predict(*_model_inputs(model, pool, rows)))


def fit_with_uncertainty(pool: Pool, rows: np.ndarray, y_ms: np.ndarray) -> tuple[MultiProxyModel, np.ndarray,
                                                                                   np.ndarray, np.ndarray]:
    """The model on all measured rows, its point log-prediction of the pool, the jackknife deviation of each
    refit ((K, N), already scaled to the jackknife variance) and the K leave-one-out log-predictions."""
    model = _fit(pool, rows, y_ms)
    point = predict_log(model, pool)
    k = len(rows)
    members, loo = [], np.empty(k)
    if k >= 4:
        # every left-out fit gives its LOO prediction; a spread of up to MAX_MEMBERS of them also predict the
        # whole space for the jackknife spread (the cost of a round stays flat as K grows)
        full = set(np.linspace(0, k - 1, min(k, MAX_MEMBERS)).round().astype(int).tolist())
        for i in range(k):
            keep = np.arange(k) != i
            m = _fit(pool, rows[keep], y_ms[keep])
            loo[i] = predict_log(m, pool, rows[i:i + 1])[0]
            if i in full:
                members.append(predict_log(m, pool))
        members_arr = np.array(members)
        dev = (members_arr - members_arr.mean(axis=0)) * np.sqrt(k - 1)  # jackknife variance
    else:
        dev = np.zeros((1, len(point)))
        loo[:] = point[rows]
    return model, point, dev, loo


def step(pool: Pool, measured: dict[int, float], history: list[Round], cfg: LoopConfig,
         excluded: set[int] | frozenset[int] = frozenset()) -> tuple[Round, MultiProxyModel]:
    """One round on what is measured (pool row -> ms). ``excluded`` rows (failed on the device) are never
    picked again. Returns the round and the fitted model."""
    # hundreds of tiny SVDs: BLAS threads only contend (40x slower on a busy 2-core machine)
    with threadpool_limits(1):
        return _step(pool, measured, history, cfg, excluded)


def _step(pool: Pool, measured: dict[int, float], history: list[Round], cfg: LoopConfig,
          excluded: set[int] | frozenset[int]) -> tuple[Round, MultiProxyModel]:
    t0 = time.perf_counter()
    rows = np.array(sorted(measured), dtype=int)
    y = np.array([measured[i] for i in rows], dtype=float)
    if len(rows) < 3:
        raise TransferError(f"the target has {len(rows)} usable measurement(s); at least 3 are needed")
    model, point, dev, loo = fit_with_uncertainty(pool, rows, y)
    log_y = np.log(np.clip(y, 1e-3, None))
    resid = loo - log_y
    loo_srcc = float(spearmanr(loo, log_y).statistic) if len(rows) >= 4 and np.ptp(loo) > 0 else float("nan")
    sigma = float(np.sqrt(np.mean(resid ** 2))) if len(rows) >= 4 else 0.3

    acc = pool.accuracy
    lat = np.exp(point)
    lat[rows] = y
    front = np.flatnonzero(front_mask(lat, acc))
    hv = front_hv(lat, acc, front)

    # joint draws: a jackknife member's deviation + independent residual noise; measured rows are known.
    # Each draw is a plausible truth: how good would our front be if it were? (expected HV ratio, recall)
    rng = np.random.default_rng(cfg.seed + 7919 * len(rows))
    counts = np.zeros(len(acc))
    hv_ratios, recalls = [], []
    for _ in range(cfg.n_draws):
        j = rng.integers(len(dev))
        draw = point + dev[j] * rng.standard_normal() + sigma * rng.standard_normal(len(point))
        d = np.exp(draw)
        d[rows] = y
        fd = front_mask(d, acc)
        counts += fd
        ours = front[front_mask(d[front], acc[front])]
        true_hv = front_hv(d, acc, np.flatnonzero(fd))
        hv_ratios.append(front_hv(d, acc, ours) / true_hv if true_hv > 0 else 1.0)
        recalls.append(fd[front].sum() / fd.sum())
    prob = counts / cfg.n_draws
    exp_hv, exp_recall = float(np.mean(hv_ratios)), float(np.mean(recalls))

    prev = history[-1] if history else None
    jac = jaccard(front, prev.front) if prev else None
    # how much better is this round's front than the last one, both judged on this round's latencies
    if prev is not None:
        prev_front = np.asarray(prev.front, dtype=int)
        prev_kept = prev_front[front_mask(lat[prev_front], acc[prev_front])]
        hv_chg = 1.0 - front_hv(lat, acc, prev_kept) / hv if hv > 0 else 0.0
    else:
        hv_chg = None
    stable = bool(prev is not None and (jac >= cfg.jaccard or hv_chg < cfg.hv_change) and exp_hv >= cfg.hv_target)
    streak = 0
    for r in [*history, None]:
        ok = stable if r is None else r.stable
        streak = streak + 1 if ok else 0
    stop = "stable" if streak >= cfg.stable_rounds else ("budget" if len(rows) >= cfg.budget else None)

    nxt: list[int] = []
    if stop is None:
        k = min(cfg.batch, cfg.budget - len(rows))
        taken = set(rows.tolist()) | set(excluded)
        n_diverse = min(k, max(0, cfg.explore - len(rows)))
        if cfg.pick == "mixed":  # of the rest, the uncertain half rounded up
            n_diverse += (k - n_diverse) // 2
        if n_diverse and cfg.explore_by == "uncertain" and len(rows) >= sampling.MIN_FOR_UNCERTAIN:
            spread = model.disagreement(*_model_inputs(model, pool, slice(None)))
            nxt = sampling.select_uncertain(n_diverse, spread, pool.source_log, pool.onehot, np.array(sorted(taken)),
                                            cfg.seed).tolist()
        else:
            nxt = diverse_next(pool, taken, n_diverse, cfg.seed) if n_diverse else []
        if k > n_diverse:
            how = "uncertain" if cfg.pick == "mixed" else cfg.pick
            nxt += pick_next(prob, lat, front, taken | set(nxt), k - n_diverse, how)
    r = Round(len(history), len(rows), loo_srcc, float(100 * np.median(np.abs(np.expm1(resid)))),
              front.tolist(), prob[front].tolist(), hv, jac, hv_chg, exp_hv, exp_recall, stable, stop, nxt,
              time.perf_counter() - t0, sigma if len(rows) >= 4 else None)
    return r, model


def pick_next(prob: np.ndarray, lat: np.ndarray, front: np.ndarray, taken: set[int], k: int,
              how: str = "uncertain") -> list[int]:
    """The k unmeasured architectures whose front membership is least certain (p closest to 1/2); ties and
    a too-short list are filled with unmeasured predicted-front members, then the fastest remaining ones."""
    score = prob * (1.0 - prob) if how == "uncertain" else prob
    order = np.lexsort((lat, -prob, -score))
    picks = [int(i) for i in order if score[i] > 0 and int(i) not in taken][:k]
    if len(picks) < k:
        for i in sorted(front.tolist(), key=lambda i: lat[i]):
            if i not in taken and i not in picks:
                picks.append(i)
            if len(picks) == k:
                break
    if len(picks) < k:
        for i in np.argsort(lat):
            if int(i) not in taken and int(i) not in picks:
                picks.append(int(i))
            if len(picks) == k:
                break
    return picks


def simulate(pool: Pool, truth_ms: np.ndarray, cfg: LoopConfig) -> tuple[list[Round], MultiProxyModel]:
    """The whole loop with measurements looked up in ``truth_ms`` (NaN = the device fails); benchmarks
    and tests use it, ``harness transfer`` does the same with campaigns in between."""
    cfg.validate(len(pool.keys))
    measured: dict[int, float] = {}
    excluded: set[int] = set()
    batch = first_batch(pool, cfg.first_batch, cfg.seed).tolist()
    history: list[Round] = []
    while True:
        for i in batch:
            if np.isfinite(truth_ms[i]):
                measured[i] = float(truth_ms[i])
            else:
                excluded.add(i)
        r, model = step(pool, measured, history, cfg, excluded)
        history.append(r)
        if r.stop or not r.next_batch:
            return history, model
        batch = r.next_batch
