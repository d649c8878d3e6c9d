"""Does the Pareto set found with the proxy hold on the target? (accuracy up, latency down)

* recall = |P_proxy ∩ P_target| / |P_target|
* hypervolume ratio = HV(P_proxy judged on target latencies) / HV(P_target), in (latency / max target
  latency over the compared architectures, accuracy) with reference point (1.0, min accuracy)
* latency regret per accuracy level: for each accuracy reached by the target front, the fastest target
  latency among proxy-front architectures reaching it, minus the best possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def pareto_mask(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """True for architectures no other one beats on both (lower latency and higher accuracy)."""
    order = np.lexsort((-accuracy, latency))  # by latency, ties: higher accuracy first
    mask = np.zeros(len(latency), dtype=bool)
    best = -np.inf
    for i in order:
        if accuracy[i] > best:
            mask[i] = True
            best = accuracy[i]
    return mask


def hypervolume(latency_norm: np.ndarray, accuracy: np.ndarray, ref: tuple[float, float]) -> float:
    """2-D hypervolume dominated by the points w.r.t. ref = (max latency, min accuracy)."""
    keep = (latency_norm <= ref[0]) & (accuracy >= ref[1])
    lat, acc = latency_norm[keep], accuracy[keep]
    front = pareto_mask(lat, acc)
    lat, acc = lat[front], acc[front]
    order = np.argsort(lat)
    lat, acc = lat[order], acc[order]
    edges = np.append(lat[1:], ref[0])
    return float(np.sum((edges - lat) * (acc - ref[1])))


@dataclass
class ParetoCheck:
    n_archs: int
    target_front: list[int]
    proxy_front: list[int]
    recall: float
    hv_ratio: float
    regret_ms_mean: float
    regret_ms_max: float
    regret_rel_mean: float
    per_level: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"n_archs": self.n_archs, "target_front_size": len(self.target_front),
                "proxy_front_size": len(self.proxy_front), "recall": self.recall, "hv_ratio": self.hv_ratio,
                "regret_ms_mean": self.regret_ms_mean, "regret_ms_max": self.regret_ms_max,
                "regret_rel_mean": self.regret_rel_mean}


def check(ranking_latency: np.ndarray, target_latency: np.ndarray, accuracy: np.ndarray) -> ParetoCheck:
    """The front found with ``ranking_latency`` (a proxy's, or predicted) judged on ``target_latency``."""
    target_front = np.flatnonzero(pareto_mask(target_latency, accuracy))
    found = np.flatnonzero(pareto_mask(ranking_latency, accuracy))
    norm = target_latency / target_latency.max()
    ref = (1.0, float(accuracy.min()))
    hv_t = hypervolume(norm[target_front], accuracy[target_front], ref)
    hv_p = hypervolume(norm[found], accuracy[found], ref)
    levels = []
    for i in target_front:
        reach = found[accuracy[found] >= accuracy[i]]
        best_found = float(target_latency[reach].min()) if len(reach) else float("nan")
        levels.append({"accuracy": float(accuracy[i]), "best_ms": float(target_latency[i]),
                       "proxy_front_ms": best_found, "regret_ms": best_found - float(target_latency[i])})
    regrets = np.array([lv["regret_ms"] for lv in levels])
    rel = regrets / np.array([lv["best_ms"] for lv in levels])
    finite = np.isfinite(regrets)
    return ParetoCheck(
        n_archs=len(target_latency), target_front=target_front.tolist(), proxy_front=found.tolist(),
        recall=len(set(found) & set(target_front)) / len(target_front),
        hv_ratio=hv_p / hv_t if hv_t > 0 else float("nan"),
        regret_ms_mean=float(regrets[finite].mean()) if finite.any() else float("nan"),
        regret_ms_max=float(regrets[finite].max()) if finite.any() else float("nan"),
        regret_rel_mean=float(rel[finite].mean()) if finite.any() else float("nan"),
        per_level=levels)
