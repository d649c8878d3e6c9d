"""The notebook API: every analysis as a function of a store (object or path) returning a DataFrame."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from harness.analysis.correlation import DEFAULT_MIN_OVERLAP, correlate
from harness.analysis.data import device_facts, device_origins, latency_matrix
from harness.analysis.proxy import rank_proxies
from harness.analysis.report import build_report
from harness.errors import ParameterError
from harness.results.store import Store, open_store

StoreLike = Store | str | os.PathLike


def _check(ci: int = 0, confidence: float = 0.95, seed: int = 0, min_overlap: int = DEFAULT_MIN_OVERLAP) -> None:
    """The numeric arguments the CLI checks as flags (ci=-1 was a numpy 'negative dimensions' error here)."""
    if isinstance(ci, bool) or not isinstance(ci, int) or not 0 <= ci <= 100_000:
        raise ParameterError("ci", f"ci is a number of bootstrap resamples, 0 to 100000; got {ci!r}")
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ParameterError("confidence", f"confidence is a level between 0 and 1 (0.95); got {confidence!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError("seed", f"seed is a whole number >= 0; got {seed!r}")
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, int) or min_overlap < 2:
        raise ParameterError("min_overlap", f"min_overlap is a number of common architectures >= 2; got "
                                            f"{min_overlap!r}")


def _names(devices: Sequence[str] | str | None) -> list[str] | None:
    """A device list as given; one name as a plain string is that device (a string is a sequence of letters:
    `devices="hwnb_raspi4"` asked for devices h, w, n, ...)."""
    if devices is None:
        return None
    return [devices] if isinstance(devices, str) else list(devices)


@contextmanager
def _open(store: StoreLike):
    if isinstance(store, Store):
        yield store
    else:
        with open_store(store, write=False) as st:
            yield st


def latencies(store: StoreLike, space: str = "nb201", devices: Sequence[str] | None = None,
              degenerate: bool = True) -> pd.DataFrame:
    """Wide latency table: index = architecture key, one column per device (ms). ``degenerate=False`` leaves
    out architectures whose network has a constant output (e.g. an all-'none' NB201 cell): marked so when
    measured, or so by construction (``SearchSpace.constant_output``) for imported rows."""
    with _open(store) as st:
        return latency_matrix(st, space, _names(devices) or None, degenerate)


def srcc(store: StoreLike, space: str = "nb201", devices: Sequence[str] | None = None, method: str = "spearman",
         ci: int = 0, confidence: float = 0.95, seed: int = 0, min_overlap: int = DEFAULT_MIN_OVERLAP) -> pd.DataFrame:
    """All device pairs: device_a, device_b, srcc, n_common_archs, low_overlap (fewer than ``min_overlap``
    common architectures: the CLI masks such pairs, an SRCC of 1.0 on 3 architectures says little), method (+ ci_low,
    ci_high with ``ci`` resamples; for pairs with a measured device they also resample its runs and rounds, named in
    noise_resampled, exactly as `harness srcc --ci --json`)."""
    _check(ci, confidence, seed, min_overlap)
    with _open(store) as st:
        wide = latencies(st, space, devices)
        pairs = correlate(wide, method=method, n_boot=ci, confidence=confidence, seed=seed).pairs
        if ci and method == "spearman":  # as `harness srcc --ci`: measured devices' runs are resampled too
            from harness.measure.confidence import with_run_noise

            pairs = with_run_noise(st, space, wide, pairs, ci, seed, confidence)
    return pairs.assign(low_overlap=pairs.n_common_archs < min_overlap, method=method)


def srcc_matrix(store: StoreLike, space: str = "nb201", devices: Sequence[str] | None = None,
                method: str = "spearman", min_overlap: int = DEFAULT_MIN_OVERLAP) -> pd.DataFrame:
    """Devices x devices SRCC (1.0 on the diagonal), NaN where a pair shares fewer than ``min_overlap``
    architectures: masked as `harness srcc` masks them (an SRCC of 1.0 on 3 architectures says little)."""
    _check(min_overlap=min_overlap)
    return correlate(latencies(store, space, devices), method=method).matrix(min_overlap)


def proxies(store: StoreLike, targets: Sequence[str], space: str = "nb201",
            candidates: Sequence[str] | None = None, method: str = "spearman", ci: int = 0,
            seed: int = 0, min_overlap: int = DEFAULT_MIN_OVERLAP) -> pd.DataFrame:
    """Candidate proxies ranked by mean SRCC to the targets (worst target and CIs alongside); a pair on fewer
    than ``min_overlap`` common architectures counts as unknown (NaN), as in ``srcc``."""
    _check(ci, seed=seed, min_overlap=min_overlap)
    return rank_proxies(latencies(store, space), _names(targets) or [], _names(candidates), method=method,
                        n_boot=ci, seed=seed, min_common=min_overlap)


def report(store: StoreLike, out: str | Path, space: str = "nb201", devices: Sequence[str] | None = None,
           pairs: Sequence[tuple[str, str]] | None = None, png_dir: str | Path | None = None,
           method: str = "spearman", min_overlap: int = DEFAULT_MIN_OVERLAP) -> Path:
    """The HTML report of `harness report` (heat map, scatter ``pairs``, distributions, timelines, where each
    device's numbers come from), written to ``out`` (figures also as PNG into ``png_dir``); returns its path."""
    _check(min_overlap=min_overlap)
    with _open(store) as st:
        wide = latency_matrix(st, space, _names(devices) or None)
        origins = device_origins(st, space)
        facts = device_facts(st, space, list(wide.columns))
        source = str(st.path)
        measured = st.measurements(space=space)
        checks = st.sentinel_series(space=space)  # a report is of one space: its sentinels only
        energy = st.energies(space, list(wide.columns))
    missing = sorted({d for p in pairs or [] for d in p} - set(wide.columns))
    if missing:
        raise ParameterError("pairs", f"scatter pair(s) name device(s) without {space} data: {', '.join(missing)}")
    empty = [f"{a}:{b}" for a, b in pairs or [] if not ((wide[a] > 0) & (wide[b] > 0)).any()]
    if empty:  # matplotlib would fail on an empty log-scaled plot
        raise ParameterError("pairs", f"scatter pair(s) {', '.join(empty)} share no {space} architecture: nothing "
                                      "to plot; pick pairs with common architectures (`harness srcc` lists them)")
    if devices:
        measured = measured[measured["device"].isin(_names(devices))]
    checks = checks[checks["device"].isin(list(wide.columns))]
    corr = correlate(wide, method=method)
    label = "SRCC" if method == "spearman" else "Kendall tau"
    return build_report(wide, corr, space, origins, pairs, label, min_overlap=min_overlap, facts=facts,
                        source=source, measurements=measured, sentinel_checks=checks, energy=energy).write(out, png_dir)
