"""Latency and accuracy tables for analysis, measured and imported devices side by side."""

from __future__ import annotations

import json

import pandas as pd

from harness.errors import HarnessError
from harness.results.export import latency_wide
from harness.results.store import Store


def latency_matrix(store: Store, space: str, devices: list[str] | None = None,
                   degenerate: bool = True) -> pd.DataFrame:
    """Rows: architecture keys; columns: devices; values: latency in ms (NaN where missing). Analysis needs
    data, so an empty space is an error here (the export writes an empty table instead).
    ``degenerate=False`` drops architectures whose measured model has an input-independent output."""
    wide = latency_wide(store, space, devices, degenerate)
    if wide.empty:
        raise HarnessError(f"no {space} latencies in {store.path}; run `harness measure` or `harness import`")
    return wide


def device_origins(store: Store, space: str) -> dict[str, str]:
    long = store.latencies(space)
    return dict(zip(long.device, long.origin))


def arch_columns(store: Store, space: str) -> pd.DataFrame:
    """Key columns (e.g. nb201_index, arch_str) per architecture key."""
    rows = store.db.execute("SELECT key, columns_json FROM architectures WHERE space = ?", (space,)).fetchall()
    return pd.DataFrame([json.loads(c) for _, c in rows], index=[k for k, _ in rows])
