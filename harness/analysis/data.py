"""Latency and accuracy tables for analysis, measured and imported devices side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.results.export import latency_wide
from harness.results.store import Store, campaign_series


def latency_matrix(store: Store, space: str, devices: list[str] | None = None,
                   degenerate: bool = True) -> pd.DataFrame:
    """Rows: architecture keys; columns: devices; values: latency in ms (NaN where missing). Analysis needs
    data, so an empty space is an error here (the export writes an empty table instead).
    ``degenerate=False`` drops architectures whose network has an input-independent output (measured so, or so
    by construction: ``SearchSpace.constant_output``)."""
    from harness.models import files
    from harness.models.spaces import get_space

    if space != files.SPACE:
        get_space(space)  # a misspelt space is an unknown name ("did you mean nb201?"), not "measure something"
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


def arch_labels(store: Store, space: str) -> dict[str, str]:
    """Key -> how to name it on a screen (:attr:`Arch.label`: NB201's index, not its 90-character arch_str)."""
    from harness.models import files
    from harness.models.spaces import Arch, get_space

    order = files.KEY_COLUMNS if space == files.SPACE else list(get_space(space).key_columns)
    rows = store.db.execute("SELECT key, columns_json FROM architectures WHERE space = ?", (space,)).fetchall()
    out = {}
    for k, c in rows:  # stored with sorted keys: put the space's key columns first, as Arch.label expects
        cols = json.loads(c)
        out[k] = Arch(space, k, {**{n: cols[n] for n in order if n in cols}, **cols}).label
    return out


def policy_text(pol: dict, runtime: dict | None = None) -> str:
    """How a campaign's policy timed each model, in a few words (adaptive: its run range per visit and rounds;
    trtexec: its warm-up by time and fixed count, whatever warmup_runs and adaptive say)."""
    ad, rounds = pol.get("adaptive"), pol.get("rounds") or 1
    if (runtime or {}).get("name") == "trtexec":
        warm = ((runtime or {}).get("options") or {}).get("warmup_ms", 200)
        runs = (f"{warm:g} ms warm-up (trtexec --warmUp) + {pol.get('timed_runs')} timed runs"
                + (f", ≥ {pol['min_seconds']} s" if pol.get("min_seconds") else ""))
    elif ad:
        runs = (f"{pol.get('warmup_runs')} warm-up + {ad.get('min_runs')}-{ad.get('max_runs')} timed runs per visit "
                f"(adaptive, to a ±{100 * ad.get('target_rel_ci', 0):g} % CI)")
    else:
        runs = (f"{pol.get('warmup_runs')} warm-up + {pol.get('timed_runs')} timed runs"
                + (f", ≥ {pol['min_seconds']} s" if pol.get("min_seconds") else ""))
    return runs + (f", {rounds} rounds" if rounds > 1 else "")


def _gpu_measured(store: Store, campaign_id: int) -> str | None:
    """The GPU a campaign's measurements ran on, as the tool reported it per visit (trtexec names its device in
    each run's output, not before): the latest visit's ``gpu_name``."""
    row = store.db.execute("SELECT conditions_json FROM measurements WHERE campaign_id = ? AND status = 'ok' "
                           "ORDER BY id DESC LIMIT 1", (campaign_id,)).fetchone()
    before = (json.loads(row[0] or "{}") if row else {}).get("before") or {}
    return before.get("gpu_name") or (before.get("trtexec") or {}).get("gpu_name")


def device_facts(store: Store, space: str, devices: list[str]) -> pd.DataFrame:
    """Where each device's numbers come from, for the report: measured devices with their runtime and version,
    timing policy, machine and campaign dates; imported ones with their source file and import date."""
    rows = []
    camps = store.db.execute(
        """SELECT d.name, c.profile_json, c.conditions_json, c.started_at, c.finished_at, c.status, c.id
           FROM campaigns c JOIN devices d ON d.id = c.device_id WHERE c.space = ? ORDER BY c.id""",
        (space,)).fetchall()
    imports = store.db.execute("SELECT file, source, devices_json, imported_at FROM imports WHERE space = ? "
                               "AND state = 'done'",
                               (space,)).fetchall()
    for dev in devices:
        mine = [c for c in camps if campaign_series(c[0], c[1]) == dev]  # each workload's campaigns are its own series
        if mine:
            profile, cond = json.loads(mine[-1][1]), json.loads(mine[-1][2] or "{}")
            rt, pol = profile.get("runtime", {}), profile.get("policy", {})
            ends = [c[4] for c in mine if c[4]]
            rows.append({
                "device": dev, "origin": "measured",
                "runtime": f"{cond.get('runtime') or rt.get('name', '?')} {cond.get('runtime_version') or ''}".strip(),
                "threads": "–" if rt.get("name") == "trtexec" else rt.get("threads"),  # a GPU tool's: none
                # a replay device timed nothing: say what it answered from, not a timing policy it never ran
                "policy": (f"replayed from {Path(str(cond['replay_table'])).name}:{cond.get('replay_column')}"
                           + (f" (noise {cond['noise']:g})" if cond.get("noise") else "")
                           if cond.get("replay_table") else policy_text(pol, rt)),
                "machine": ("- (a published table)" if cond.get("replay_table") else
                            cond.get("device_model") or cond.get("cpu_model") or cond.get("machine")
                            or cond.get("gpu_name") or _gpu_measured(store, mine[-1][6]) or "?"),
                "campaigns": f"{len(mine)} ({', '.join(sorted({c[5] for c in mine}))})",
                "dates (UTC)": f"{mine[0][3][:16].replace('T', ' ')} – {(max(ends) if ends else 'running')[:16].replace('T', ' ')}",
            })
            continue
        src = [i for i in imports if dev in json.loads(i[2] or "{}")]
        rows.append({"device": dev, "origin": "imported",
                     "runtime": "as published", "threads": "–", "policy": "as published",
                     "machine": "", "campaigns": ", ".join(sorted({i[1] for i in src})) or "?",
                     "dates (UTC)": f"imported {src[-1][3][:10]}" if src else ""})
    return pd.DataFrame(rows)
