"""Which K architectures to measure on a new target (``harness suggest``).

Strategies (compared by ``benchmarks/transfer.py --compare-strategies``; the best, ``diverse``, is the default):
* ``random``     - uniform without repeats;
* ``stratified`` - sort the candidates by the proxies' mean log-latency, cut into K equal-count bins,
                   take one at random from each: the samples span the latency range the ranking needs;
* ``diverse``    - greedy farthest-point selection in [one-hot, standardised proxy log-latency] space, from the
                   median-latency architecture (seed 0) or a random one (other seeds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:
    import numpy as np

STRATEGIES = ("diverse", "stratified", "random")
DEFAULT_STRATEGY = "diverse"  # best in benchmarks/transfer.py --compare-strategies (K=20)


def select(k: int, proxy_log: np.ndarray, onehot: np.ndarray, strategy: str = DEFAULT_STRATEGY,
           seed: int = 0) -> np.ndarray:
    """Indices (into the candidate rows) of k architectures to measure."""
    import numpy as np  # here, so the CLI can list STRATEGIES without loading numpy

    n = len(proxy_log)
    if strategy not in STRATEGIES:
        raise HarnessError(f"unknown sampling strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if not 0 < k <= n:
        raise HarnessError(f"cannot pick {k} architectures from {n} candidates")
    rng = np.random.default_rng(seed)
    score = np.nanmean(proxy_log, axis=1) if proxy_log.ndim == 2 else proxy_log
    if strategy == "random":
        return rng.choice(n, size=k, replace=False)
    if strategy == "stratified":
        order = np.argsort(score, kind="stable")
        return np.array([rng.choice(b) for b in np.array_split(order, k)])
    z = (score - np.nanmean(score)) / (np.nanstd(score) or 1.0)
    space = np.hstack([onehot, 2.0 * z[:, None]])
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
