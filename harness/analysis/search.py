"""``harness search``: the most accurate architectures under a latency budget on the target.

Latency per architecture is the target's measurement (or imported value) where the store has one, else its
saved predictor's prediction (``harness transfer`` / ``adapt`` / ``train``). ``verify`` measures the top
ones on the device through an ordinary campaign and says which held the budget. The OneProxy promise end
to end: one proxy, a few target measurements, the right architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analysis.transfer_loop import resolve_accuracy
from harness.analysis.workflow import Context, describe_predictor, predict
from harness.errors import HarnessError, ParameterError, did_you_mean
from harness.models.spaces import Arch


@dataclass
class SearchResult:
    target: str
    accuracy: str
    max_ms: float
    top: pd.DataFrame          # key columns, accuracy, latency_ms, source (measured | predicted), key
    n_candidates: int
    n_under: int
    predictor: str | None      # which saved predictor filled the gaps
    archs: list[Arch]          # of ``top``, in order
    sigma_log: float | None = None      # the predictor's leave-one-out error (log ms) behind ``p_under``
    confidence: float | None = None     # the probability of being under the budget that was required
    constant_output: int = 0            # candidates left out: their network's output is a constant
    not_positive: int = 0               # left out: the predictor put them at or below 0 ms (AdaProxy extrapolating)
    unanswerable: int = 0               # left out: a replay target's table has no value for them


def predictor_sigma(saved: dict | None) -> float | None:
    """A saved predictor's typical error on architectures it has not seen, as a standard deviation of
    log latency: the root of its leave-one-out mean squared error (``adapt``/``train``; the closed loop's
    ``loo_rms_log``, the sigma its own draws use). A loop saved before that was recorded: from its median absolute
    LOO error (a normal's median |x| is 0.6745 sigma), which heavy tails make too small: with Eagle's i7 table as
    the target and OneProxy's 1,999-architecture tables as sources (their other 13,000 gap-filled), --confidence
    0.9 kept 97.7 % truly under with it and 99.0 % with the RMS (3 seeds); benchmarks/search_confidence.py on the
    public tables: 99.07 % -> 99.29 %."""
    if saved is None:
        return None
    m = saved.get("metrics") or {}
    if isinstance(m.get("loo_mse_log"), (int, float)) and m["loo_mse_log"] > 0:
        return float(np.sqrt(m["loo_mse_log"]))
    rms = (m.get("round") or {}).get("loo_rms_log")
    if isinstance(rms, (int, float)) and rms > 0:
        return float(rms)
    pct = (m.get("round") or {}).get("loo_error_pct")
    if isinstance(pct, (int, float)) and pct > 0:
        return float(np.log1p(pct / 100.0) / 0.6745)
    return None


def search(ctx: Context, target: str, max_ms: float, accuracy: str | None = None, top: int = 10,
           confidence: float | None = None, answerable: set[str] | None = None) -> SearchResult:
    """``confidence``: list only architectures under the budget with at least this probability: measured
    ones when they are, predicted ones by their prediction and the predictor's own leave-one-out error
    (a prediction just under the budget is a coin flip). ``answerable``: the keys the target can measure, where
    that is known beforehand (a replay table's rows): the others are no candidates, as in `harness transfer`
    (verify found out by measuring, and a list of them all ended in an error)."""
    if confidence is not None and not 0.5 <= confidence < 1:
        raise ParameterError("confidence", f"confidence must be a probability in [0.5, 1), got {confidence}")
    if not max_ms > 0:
        raise ParameterError("max_ms", f"the latency budget must be a positive number of ms, got {max_ms}")
    if top < 1:
        raise ParameterError("top", f"top must be at least 1, got {top}")
    acc = resolve_accuracy(ctx, accuracy)
    archs, n_constant = ctx.worth_measuring([a for a in ctx.candidates() if a.key in acc.index])
    n_unanswerable = 0
    if answerable is not None:
        n_unanswerable = sum(a.key not in answerable for a in archs)
        archs = [a for a in archs if a.key in answerable]
        if not archs:
            raise HarnessError(f"{target}'s replay table has no value for any {ctx.space.name} architecture with "
                               f"{acc.name}; check connection.column")
    keys = [a.key for a in archs]
    have = ctx.store.latencies(ctx.space.name, [target])
    measured = pd.Series(have.latency_ms.to_numpy(), index=have.key).reindex(keys)
    saved = ctx.store.latest_predictor(ctx.space.name, target)
    n_not_positive = 0
    lat = measured.to_numpy(dtype=float, copy=True)
    source = np.where(np.isnan(lat), "predicted", "measured")
    gaps = np.isnan(lat)
    keep = np.ones(len(archs), dtype=bool)
    if gaps.any():
        if saved is None:
            if not len(have):
                typo = did_you_mean(target, ctx.devices_with_data())
                raise HarnessError(f"{target!r} has no {ctx.space.name} measurements and no predictor in "
                                   f"{ctx.store.path}" + (f"{typo}" if typo else
                                                          f"; run `harness transfer --target {target} --space "
                                                          f"{ctx.space.name}` first (or import its latencies)"))
            keep = ~gaps  # only what is measured: say so
        else:
            pred = predict(ctx, target, [a for a, g in zip(archs, gaps) if g])
            lat[gaps] = pred["predicted_ms"].to_numpy()
            bad = set(pred.attrs.get("not_positive", ()))  # a prediction below 0 ms says nothing about the budget
            keep = np.array([k not in bad for k in keys])
            n_not_positive = int((~keep).sum())
    if not keep.all():
        archs = [a for a, k in zip(archs, keep) if k]
        keys = [a.key for a in archs]
        lat, source, gaps = lat[keep], source[keep], gaps[keep]
    accs = acc.reindex(keys).to_numpy(dtype=float)
    predicted = source == "predicted"
    sigma = predictor_sigma(saved) if predicted.any() else None
    if confidence is not None and predicted.any() and sigma is None:
        assert saved is not None  # predictions come only from a saved predictor
        raise HarnessError(f"--confidence needs the predictor's leave-one-out error, and predictor #{saved['id']} "
                           f"of {target} records none; refit it (`harness transfer` or `harness adapt`) or drop "
                           "--confidence")
    p_under = (lat <= max_ms).astype(float)
    if sigma is not None:
        from scipy.stats import norm

        p_under[predicted] = norm.cdf((np.log(max_ms) - np.log(np.clip(lat[predicted], 1e-9, None))) / sigma)
    under = np.flatnonzero(p_under >= confidence if confidence is not None else lat <= max_ms)
    if not len(under):
        fastest = int(np.argmin(lat))
        sure = (f" with probability >= {confidence:g} (predictions carry a {sigma:.0%} typical error)"
                if confidence is not None else "")
        raise ParameterError("max_ms", f"no {ctx.space.name} architecture is under {max_ms:g} ms on {target}{sure}: "
                             f"the fastest is {lat[fastest]:.4g} ms ({source[fastest]}, {keys[fastest]}); raise the "
                             "budget" + (" or lower the confidence" if confidence is not None else ""))
    order = under[np.lexsort((lat[under], -accs[under]))][:top]
    rows = [{**archs[i].columns, acc.name: accs[i], "latency_ms": lat[i], "source": source[i],
             **({"p_under": float(p_under[i])} if sigma is not None else {})} for i in order]
    pred_name = None
    if saved is not None and gaps.any():
        pred_name = describe_predictor(saved)
    return SearchResult(target, str(acc.name), max_ms, pd.DataFrame(rows), len(keys), len(under), pred_name,
                        [archs[i] for i in order], sigma, confidence, n_constant, n_not_positive, n_unanswerable)


def verify(ctx: Context, result: SearchResult, n: int, measure: Callable[[list[Arch]], None]) -> pd.DataFrame:
    """Measure the top ``n`` (campaign; what is already measured is not measured again) and report which held."""
    if n < 1:
        raise ParameterError("verify", f"verify N must be at least 1, got {n}")
    chosen = result.archs[:n]
    todo = [a for a, s in zip(chosen, result.top.source) if s == "predicted"]
    if todo:
        measure(todo)
    have = ctx.store.latencies(ctx.space.name, [result.target])
    measured = pd.Series(have.latency_ms.to_numpy(), index=have.key)
    out = result.top.copy()  # the whole list: the top n verified, the rest as they were
    out["measured_ms"] = [float(measured.get(a.key, np.nan)) for a in result.archs]
    out["held"] = [None if np.isnan(m) else bool(m <= result.max_ms) for m in out.measured_ms]
    # measured now are those that got a value; the rest failed on the device (counted as measured before)
    got = sum(a.key in measured.index for a in todo)
    out.attrs.update(verified=len(chosen), newly_measured=got, failed=len(todo) - got)
    return out
