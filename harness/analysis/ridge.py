"""Ridge regression with the penalty chosen by exact leave-one-out error (one SVD, all lambdas).

With 5-50 target samples there is no room for a validation split; the LOO residual of ridge has a
closed form (``r_i / (1 - h_ii)``), so every lambda is scored on every sample at the cost of one SVD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAMBDAS = np.logspace(-3, 3, 13)


@dataclass
class RidgeFit:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    lam: float
    loo_mse: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        # ((f - mean) / scale) @ coef + intercept, without materialising the standardised matrix (the closed
        # loop predicts the whole space dozens of times per round)
        w = self.coef / self.scale
        return np.asarray(features, dtype=float) @ w + (self.intercept - float(self.mean @ w))

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept, "lam": self.lam, "loo_mse": self.loo_mse}

    @classmethod
    def from_json(cls, d: dict) -> RidgeFit:
        return cls(np.asarray(d["mean"]), np.asarray(d["scale"]), np.asarray(d["coef"]), float(d["intercept"]),
                   float(d["lam"]), float(d["loo_mse"]))


def fit_ridge(features: np.ndarray, y: np.ndarray, lambdas: np.ndarray = LAMBDAS,
              weights: np.ndarray | None = None) -> RidgeFit:
    """Standardised ridge; lambda = argmin of the exact LOO mean squared error.

    ``weights`` (one per column, default 1) scale the standardised columns, i.e. divide that column's
    penalty by weight**2: a block weighted 0.1 is a correction the fit uses only when the data insist; a
    weight of 0 leaves the column out. (Scaling the raw column instead does nothing: it is standardised away.)
    """
    f = np.asarray(features, dtype=float)
    y = np.asarray(y, dtype=float)
    mean = f.mean(axis=0)
    scale = f.std(axis=0)
    scale[scale == 0] = 1.0
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        if w.shape != scale.shape or (w < 0).any():
            raise ValueError(f"weights must be {scale.shape[0]} non-negative numbers, got shape {w.shape}")
        scale = scale / np.where(w > 0, w, 1.0)
    z = (f - mean) / scale
    if weights is not None:
        z[:, w == 0] = 0.0
    y_mean = float(y.mean())
    yc = y - y_mean
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uy = u.T @ yc
    best: RidgeFit | None = None
    for lam in lambdas:
        shrink = s / (s ** 2 + lam)
        coef = vt.T @ (shrink * uy)
        hat = (u ** 2 * (s ** 2 / (s ** 2 + lam))).sum(axis=1) + 1.0 / len(y)
        loo = (yc - z @ coef) / np.clip(1.0 - hat, 1e-6, None)
        mse = float(np.mean(loo ** 2))
        if best is None or mse < best.loo_mse:
            best = RidgeFit(mean, scale, coef, y_mean, float(lam), mse)
    assert best is not None
    return best
