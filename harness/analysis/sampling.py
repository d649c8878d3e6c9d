"""Which K architectures to measure on a new target (``harness suggest``).

Strategies (compared by ``benchmarks/transfer.py --compare-strategies``; the best, ``diverse``, is the default):
* ``random``     - uniform without repeats;
* ``stratified`` - sort the candidates by the proxies' mean log-latency, cut into K equal-count bins,
                   take one at random from each: the samples span the latency range the ranking needs;
* ``diverse``    - greedy farthest-point selection in [one-hot, standardised proxy log-latency] space, from the
                   median-latency architecture (seed 0) or a random one (other seeds);
* ``uncertain``  - sequential (:func:`select_uncertain`): once the target has a few measurements, where the
                   predictor's ensemble disagrees most, spread out like ``diverse``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:
    import numpy as np

STRATEGIES = ("diverse", "stratified", "random")
DEFAULT_STRATEGY = "diverse"  # best in benchmarks/transfer.py --compare-strategies (K=20)
# needs the target's first measurements (a predictor to disagree with itself): see select_uncertain
SEQUENTIAL = ("uncertain",)
MIN_FOR_UNCERTAIN = 5


def select(k: int, proxy_log: np.ndarray, onehot: np.ndarray, strategy: str = DEFAULT_STRATEGY,
           seed: int = 0) -> np.ndarray:
    """Indices (into the candidate rows) of k architectures to measure."""
    import numpy as np  # here, so the CLI can list STRATEGIES without loading numpy

    n = len(proxy_log)
    if strategy not in STRATEGIES:
        more = f" ({', '.join(SEQUENTIAL)} picks the next ones for a target with measurements)" \
            if strategy in SEQUENTIAL else ""
        raise HarnessError(f"unknown sampling strategy {strategy!r} here; valid: {', '.join(STRATEGIES)}{more}")
    if not 0 < k <= n:
        raise HarnessError(f"cannot pick {k} architectures from {n} candidates")
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return rng.choice(n, size=k, replace=False)
    if strategy == "stratified":
        order = np.argsort(_mean_log(proxy_log), kind="stable")
        return np.array([rng.choice(b) for b in np.array_split(order, k)])
    space, z = _diverse_space(proxy_log, onehot)
    # seed 0 starts at the median latency; other seeds at a random architecture, so that seeds are different
    # draws (benchmarks/transfer.py averages over them: one draw's SRCC moves by +-0.03 with its start)
    picks = [int(np.argmin(np.abs(z))) if seed == 0 else int(rng.integers(n))]
    dist = np.linalg.norm(space - space[picks[0]], axis=1)
    for _ in range(k - 1):
        dist[picks] = -1
        nxt = int(np.argmax(dist + rng.random(n) * 1e-9))
        picks.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(space - space[nxt], axis=1))
    return np.array(picks)


def _mean_log(proxy_log: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.nanmean(proxy_log, axis=1) if proxy_log.ndim == 2 else proxy_log


def _diverse_space(proxy_log: np.ndarray, onehot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[one-hot, 2 x standardised mean proxy log-latency]: where ``diverse`` spreads its picks."""
    import numpy as np

    score = _mean_log(proxy_log)
    z = (score - np.nanmean(score)) / (np.nanstd(score) or 1.0)
    return np.hstack([onehot, 2.0 * z[:, None]]), z


def select_uncertain(k: int, spread: np.ndarray, proxy_log: np.ndarray, onehot: np.ndarray,
                     measured: np.ndarray, seed: int = 0) -> np.ndarray:
    """The next k candidates to measure on a target that already has some measurements (rows ``measured``):
    greedily the largest ``spread`` (how much the predictor's ensemble members disagree, in log-latency) times
    the distance to everything measured or picked, in ``diverse``'s space. Disagreement alone piles picks
    into one corner; distance alone ignores what the predictor already knows.
    benchmarks/transfer.py --strategy uncertain (10 diverse, then rounds of 5; K = 20, 10 draws): NB201
    mean / worst 0.957 / 0.843 -> 0.960 / 0.871 (edge GPU) before the ensemble's edge-activity model, with it 0.959 /
    0.877 -> 0.959 / 0.859 (no better); FBNet no better; at K = 50 no better than diverse."""
    import numpy as np

    n = len(spread)
    measured = np.asarray(measured, dtype=int)
    if not 0 < k <= n - len(measured):
        raise HarnessError(f"cannot pick {k} more architectures from {n - len(measured)} unmeasured candidates")
    if len(measured) == 0:
        raise HarnessError("uncertain sampling starts from the target's first measurements; pick those with diverse")
    space, _ = _diverse_space(proxy_log, onehot)
    dist = np.full(n, np.inf)
    for r in measured:
        dist = np.minimum(dist, np.linalg.norm(space - space[r], axis=1))
    taken = np.zeros(n, dtype=bool)
    taken[measured] = True
    jitter = np.random.default_rng(seed).random(n) * 1e-9
    picks = []
    for _ in range(k):
        score = np.where(taken, -np.inf, np.asarray(spread, dtype=float) * dist + jitter)
        nxt = int(np.argmax(score))
        picks.append(nxt)
        taken[nxt] = True
        dist = np.minimum(dist, np.linalg.norm(space - space[nxt], axis=1))
    return np.array(picks)
