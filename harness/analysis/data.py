"""Latency and accuracy tables for analysis, measured and imported devices side by side."""

from __future__ import annotations

import json

import pandas as pd

from harness.errors import HarnessError
from harness.results.store import Store


def latency_matrix(store: Store, space: str, devices: list[str] | None = None,
                   degenerate: bool = True) -> pd.DataFrame:
    """Rows: architecture keys; columns: devices; values: latency in ms (NaN where missing).
    ``degenerate=False`` drops architectures whose measured model has an input-independent output."""
    long = store.latencies(space, devices)
    if not degenerate:
        bad = set(long.key[long.degenerate.fillna(0).astype(int) == 1])
        long = long[~long.key.isin(bad)]
    if devices:
        missing = sorted(set(devices) - set(long.device))
        if missing:
            have = sorted(set(store.latencies(space).device))
            raise HarnessError(f"no {space} latencies for {', '.join(missing)}; devices with {space} data: "
                               f"{', '.join(have) or '(none)'}")
    if long.empty:
        raise HarnessError(f"no {space} latencies in {store.path}; run `harness measure` or `harness import`")
    wide = long.pivot(index="key", columns="device", values="latency_ms")
    return wide[devices] if devices else wide


def device_origins(store: Store, space: str) -> dict[str, str]:
    long = store.latencies(space)
    return dict(zip(long.device, long.origin))


def arch_columns(store: Store, space: str) -> pd.DataFrame:
    """Key columns (e.g. nb201_index, arch_str) per architecture key."""
    rows = store.db.execute("SELECT key, columns_json FROM architectures WHERE space = ?", (space,)).fetchall()
    return pd.DataFrame([json.loads(c) for _, c in rows], index=[k for k, _ in rows])
