"""The tidy wide table of ``../shared/data``: one row per architecture, key columns, ``<device>_ms``
(and ``<device>_mj``, energy per inference, for devices that measured it)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError, did_you_mean
from harness.models.spaces import Arch, get_space
from harness.paths import TABLE_SUFFIXES
from harness.results.atomic import atomic_path
from harness.results.store import Store


def latency_wide(store: Store, space: str, devices: list[str] | None = None,
                 degenerate: bool = True, graph: str | None = None) -> pd.DataFrame:
    """The one pivot of the store's latencies: rows are architecture keys, columns devices (``devices``' order,
    else sorted), values ms (NaN where missing); empty when the space has no data. Names a missing device.
    ``degenerate=False`` drops architectures whose network has an input-independent output (measured so, or so
    by construction: ``SearchSpace.constant_output``)."""
    long = store.latencies(space, devices, graph)
    if not degenerate:  # marked so when measured, or so by construction (an imported row of such a network)
        bad = set(long.key[long.degenerate.fillna(0).astype(int) == 1])
        from harness.models import files

        if space != files.SPACE:  # a model file of yours: only its measurement can say
            sp = get_space(space)
            keys = dict(zip(long.key, long.columns_json))  # once per architecture, not per (device, architecture)
            bad |= {k for k, c in keys.items() if k not in bad and sp.constant_output(Arch(space, k, json.loads(c)))}
        long = long[~long.key.isin(bad)]
    if devices:
        missing = sorted(set(devices) - set(long.device))
        if missing:
            have = sorted(set(store.latencies(space, graph=graph).device))
            raise HarnessError(f"no {space} latencies{f' of graph mode {graph}' if graph else ''} for "
                               f"{', '.join(missing)} in {store.path}{did_you_mean(missing[0], have)}; devices with "
                               f"{space} data: {', '.join(have) or '(none)'}")
    if long.empty:
        return pd.DataFrame(columns=list(devices or []), dtype=float)
    wide = long.pivot(index="key", columns="device", values="latency_ms")
    return wide[list(devices) if devices else sorted(wide.columns)]


def latency_table(store: Store, space: str, devices: list[str] | None = None, graph: str | None = None) -> pd.DataFrame:
    """Key columns of ``space`` then one ``<device>_ms`` column per device (``Store.latencies``: the median over
    rounds of each visit's reference-scaled median; imported values as imported); a
    measured device also gets ``<device>_graph`` (prune/keep), ``<device>_exporter`` (exporter version of
    the model), ``<device>_degenerate`` (1 when the model's output does not depend on its input),
    ``<device>_suspect`` (how many of the visits behind the latency were marked suspect: not alone, not steady),
    ``<device>_visits`` (how many rounds' visits the latency is the median of: fewer than the device's others after
    an interrupted multi-round campaign) and, where
    energy was measured, ``<device>_mj`` (millijoules per inference). Non-default workloads are their own
    devices: ``gpu@bs32.fp16_ms``. ``graph``: measured latencies of that graph mode only."""
    from harness.models import files

    keys = list(files.KEY_COLUMNS if space == files.SPACE else get_space(space).key_columns)
    wide = latency_wide(store, space, devices, graph=graph)
    if wide.empty:
        return pd.DataFrame(columns=keys)
    long = store.latencies(space, devices, graph)
    order = list(wide.columns)
    wide = wide.rename(columns=lambda d: f"{d}_ms")
    measured = long[long.origin == "measured"]
    energy = store.energies(space, devices)
    mj = energy.pivot(index="key", columns="device", values="energy_mj") if not energy.empty else pd.DataFrame()
    parts = []
    for d in order:
        parts.append(wide[[f"{d}_ms"]])
        rows = measured[measured.device == d].set_index("key")
        if not rows.empty:
            ident = pd.DataFrame({f"{d}_graph": rows.graph_mode.fillna("unrecorded"), f"{d}_exporter": rows.exporter_version,
                                  f"{d}_degenerate": rows.degenerate, f"{d}_suspect": rows.suspect,
                                  f"{d}_visits": rows.visits}).reindex(wide.index)
            parts.append(ident.astype({f"{d}_exporter": "Int64", f"{d}_degenerate": "Int64", f"{d}_suspect": "Int64",
                                       f"{d}_visits": "Int64"}))
        if d in mj.columns:
            parts.append(mj[[d]].rename(columns={d: f"{d}_mj"}).reindex(wide.index))
    cols = long.drop_duplicates("key").set_index("key")["columns_json"].map(json.loads)
    key_df = pd.DataFrame(list(cols.loc[wide.index]), index=wide.index)[keys]
    out = pd.concat([key_df, *parts], axis=1).reset_index(drop=True)
    return out.sort_values(keys[0], kind="stable").reset_index(drop=True)


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``) by the file name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if not name.endswith(TABLE_SUFFIXES):
        raise HarnessError(f"cannot tell the format of {path}: use .csv, .csv.gz or .parquet")
    with atomic_path(path) as tmp:  # a full disk or a kill leaves the previous file, never a truncated one
        if name.endswith(".parquet"):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, float_format="%.8g")
    return path
