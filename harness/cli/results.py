"""`harness export` and `harness campaigns`: get results out of the store."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from harness.cli.common import (DEFAULT_STORE, StoreOpt, cli_errors, console, err, esc, names_list, print_table,
                                table_path, table_width, working)
from harness.errors import HarnessError


def _one_space(st, space: str | None, devices: list[str] | None = None) -> str:
    """--space, else the store's only space, else the only one the named devices have data in (`export --device
    local-onnx` refused a store that also held FBNet tables local-onnx never measured)."""
    if space:
        return space
    spaces = st.spaces()
    if len(spaces) == 1:
        return spaces[0]
    real = [s for s in spaces if s != "file"]  # measured model files are their own table: `--space file`
    if len(real) == 1:
        return real[0]
    if devices:
        theirs = [s for s in real if set(devices) & set(st.latencies(s).device)]
        if len(theirs) == 1:
            return theirs[0]
    raise HarnessError(f"{st.path} holds {len(spaces)} spaces ({', '.join(spaces) or 'none'}); pick one with --space")


@cli_errors
def export(
    out: Annotated[Path, typer.Option("--out", "-o", callback=table_path,
                                      help="Output file: .csv, .csv.gz or .parquet.")],
    device: Annotated[Optional[list[str]], typer.Option(
        callback=names_list, help="Only these devices (repeat or comma-separate); default all.")] = None,
    space: Annotated[Optional[str], typer.Option(help=(
        "Search space; default: the only one in the store, or the one the --device devices have data in."))] = None,
    ci: Annotated[int, typer.Option("--ci", min=0, max=10_000, help=(
        "Add <device>_ci_low_ms / <device>_ci_high_ms: 95% CI of each measured model's latency from N "
        "bootstrap resamples of its runs and rounds (0 = none): the noise within the stored campaigns, "
        "not a machine's speed from one week to the next."))] = 0,
    drift_correct: Annotated[bool, typer.Option(
        "--drift-correct", help="Add <device>_drift_corrected_ms: latencies with the sentinels' recorded drift "
                                "divided out (devices measured with sentinels; a model, so labelled apart).")] = False,
    graph: Annotated[Optional[str], typer.Option(
        help="Only measurements of this graph mode (prune or keep): a device measured in both otherwise gets "
             "each architecture's latest, whichever mode (see <device>_graph).")] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Write the tidy latency table: one row per architecture, key columns, a <device>_ms column each (the median
    over rounds of each visit's reference-scaled median: see README, Paired reference)."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness.models import files
        from harness.models.cache import EXPORTER_VERSION
        from harness.results.export import latency_table, write_table
        from harness.results.store import open_store

    if graph is not None:
        from harness.models.passes import check_mode

        graph = check_mode(graph)
    with open_store(store, write=False) as st:
        sp = _one_space(st, space, device)
        df = latency_table(st, sp, device or None, graph)
        # each row's architecture key, read once for --ci, --drift-correct and the accuracy columns
        row_keys = _row_keys(st, sp, df) if (ci or drift_correct or sp != files.SPACE) and len(df) else []
        accuracy = _accuracy_columns(st, sp, row_keys) if sp != files.SPACE else None
        if ci:
            from harness.measure.confidence import measured_only, model_ci, noise_draws

            added = 0
            for d in measured_only(st, [c[:-3] for c in df.columns if c.endswith("_ms")]):
                draws = noise_draws(st, sp, d, ci, graph=graph)
                if draws.empty:
                    continue
                bounds = model_ci(draws)
                df[f"{d}_ci_low_ms"] = [bounds.ci_low_ms.get(k) for k in row_keys]
                df[f"{d}_ci_high_ms"] = [bounds.ci_high_ms.get(k) for k in row_keys]
                added += 1
            if not added:  # as --drift-correct says it: the flag asked for columns that cannot exist
                err.print("[yellow]note:[/] --ci added no column: no device here was measured with harness (an "
                          "imported table keeps one value per architecture, no runs to resample)", highlight=False)
        if drift_correct:
            from harness.measure.sentinels import corrected_latencies

            corrected = 0
            for d in [c[:-3] for c in df.columns if c.endswith("_ms") and "_ci_" not in c]:
                fixed = corrected_latencies(st, sp, d)
                if not fixed.empty:
                    df[f"{d}_drift_corrected_ms"] = [fixed.get(k) for k in row_keys]
                    corrected += 1
            if not corrected:  # the flag asked for columns that cannot exist: say so, not nothing
                err.print("[yellow]note:[/] --drift-correct added no column: no device here was measured with "
                          "sentinels (policy.sentinels), whose recorded drift it divides out", highlight=False)
    if len(df) == 0:  # an empty file that exits 0 reads as success in a script
        raise HarnessError(f"{store} has no latencies in space {sp!r}"
                           + (f" for {', '.join(device)}" if device else "")
                           + "; nothing written (see `harness campaigns`, or measure / import first)")
    if accuracy is not None:  # an export -> import round trip lost the accuracies the store held
        import pandas as pd

        df = pd.concat([df, accuracy], axis=1)
    write_table(df, out)
    devices = [c[:-3] for c in df.columns
               if c.endswith("_ms") and not c.endswith(("_ci_low_ms", "_ci_high_ms", "_drift_corrected_ms"))]
    what = "model file(s)" if sp == "file" else "architectures"
    console.print(esc(f"wrote {out}: {len(df)} {what} × {len(devices)} device(s) ({', '.join(devices)})"),
                  highlight=False)
    for d in devices:
        if f"{d}_exporter" not in df.columns:
            continue
        stale = int((df[f"{d}_exporter"].notna() & (df[f"{d}_exporter"] < EXPORTER_VERSION)).sum())
        modes = sorted(df[f"{d}_graph"].dropna().unique())
        if stale:
            console.print(f"  [yellow]stale:[/] {esc(d)}: {stale} latencies are of models from an older exporter "
                          + esc(f"(column {d}_exporter < {EXPORTER_VERSION}); re-measure them with `harness measure "
                                f"-d {d} ... --remeasure-stale`"), highlight=False)
        if len(modes) > 1:
            console.print(f"  [yellow]mixed:[/] {esc(d)} has latencies of both graph modes ({', '.join(modes)}); see "
                          f"column {esc(d)}_graph, or export one mode with --graph prune (or keep)", highlight=False)
        suspect = int((df[f"{d}_suspect"].fillna(0) > 0).sum())
        if suspect:  # only the column said it, even when every latency rested on suspect visits
            console.print(f"  [yellow]suspect:[/] {esc(d)}: {suspect} latencies rest on visits measured while the "
                          f"device was not alone or not steady (column {esc(d)}_suspect > 0); `harness campaigns` "
                          "says more", highlight=False)
        visits = df[f"{d}_visits"].dropna()
        short = int((visits < visits.max()).sum()) if len(visits) else 0
        if short:  # an interrupted multi-round campaign: their medians rest on 1-2 rounds of 3, without a word before
            console.print(f"  [yellow]partial:[/] {esc(d)}: {short} latencies rest on fewer visits than the others "
                          f"(column {esc(d)}_visits < {int(visits.max())}: an interrupted campaign?); rerun its "
                          "`harness measure` command to complete them", highlight=False)


def _row_keys(st, space: str, df) -> list:
    """The architecture key of each exported row (the table holds the space's key columns, not the key)."""
    from harness.models.spaces import get_space

    keys = get_space(space).key_columns
    lat = st.latencies(space).drop_duplicates("key")
    key_of = {tuple(json.loads(c)[k] for k in keys): key for key, c in zip(lat.key, lat.columns_json)}
    return [key_of.get(tuple(r)) for r in df[list(keys)].itertuples(index=False)]


def _accuracy_columns(st, space: str, row_keys: list):
    """The store's accuracy metrics (``acc_*``, imported) of the exported rows, as columns, or None."""
    if not row_keys:
        return None
    metrics = st.arch_metrics(space, "accuracy")
    if metrics.empty:
        return None
    acc = metrics.reindex(row_keys).reset_index(drop=True)
    acc = acc.loc[:, acc.notna().any()]
    return acc if acc.shape[1] else None


@cli_errors
def campaigns(store: StoreOpt = DEFAULT_STORE) -> None:
    """List the campaigns in the store with their status and counts.

    Stale: measurements of models from an older exporter; re-measure them with `harness measure ...
    --remeasure-stale`."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness.models.cache import EXPORTER_VERSION
        from harness.results.store import open_store

    with open_store(store, write=False) as st:
        df = st.campaigns(EXPORTER_VERSION)
        imported = st.devices().query("origin == 'imported'") if df.empty else None
    if df.empty:
        held = (f" (it holds {len(imported)} imported device(s), which srcc, report and adapt read; imports are "
                "not campaigns)" if imported is not None and len(imported) else "")
        console.print(f"no campaigns in {esc(store)} yet{held}; start one with harness measure --device NAME "
                      "--sample 20", highlight=False)
        return
    show_stale = bool(df.stale.sum())
    # the wide form (per-run column, the year) where it fits as drawn: a fixed 96-column cut dropped the device and
    # space columns of long device names at 96-115 columns
    table, notes, device_stats = _campaigns_table(df, store, True, show_stale)
    if console.width < 96 or table_width(table) > console.width:
        table, notes, device_stats = _campaigns_table(df, store, False, show_stale)
    print_table(table)
    for note in notes:  # below the table, so long messages wrap at any terminal width
        console.print(note, highlight=False)
    if device_stats:
        console.print("  runs*: timed runs per model as the device reported them (statistics, not each run)",
                      highlight=False)
    if df.suspect.sum():
        console.print(f"[yellow]suspect:[/] {int(df.suspect.sum())} visit(s) were measured while other processes, "
                      "hypervisor steal or a sentinel out of band said the device was not alone or not steady "
                      "(the reason is in the store's `suspect` column). A campaign's count stays as it was; which "
                      "latencies still rest on such visits, export's <device>_suspect says: measure those again on "
                      "a quiet device (`harness measure --arch-file` with their keys, `--remeasure`).", highlight=False)
    if show_stale:
        console.print(f"[yellow]{int(df.stale.sum())} measurement(s) are stale[/]: their models came from an "
                      f"exporter older than v{EXPORTER_VERSION}. They stay in the store; `harness measure ... "
                      "--remeasure-stale` measures them again.")


_STATUS = {"finished": "[green]{}[/]", "failed": "[red]{}[/]", "interrupted": "[yellow]{}[/]",
           "abandoned": "[yellow]{}[/]", "running": "[cyan]{}[/]"}


def _text(value: object) -> str:
    """A cell from a DataFrame as text: SQL NULL arrives as None or NaN, neither of which rich can render."""
    return value if isinstance(value, str) else ""


def _campaigns_table(df, store, wide: bool, show_stale: bool):
    """The campaigns table (``wide``: per-run column and the year), the notes below it, whether a device reported
    statistics only."""
    dated = console.width >= 72  # below 72 the start time goes: with it the device and space columns went blank
    table = Table(title=f"campaigns in {esc(store)}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("#", justify="right", no_wrap=True)
    # names fold only past 24 characters ("local-on"/"nx" at 80 columns while others had room)
    table.add_column("device", overflow="fold", min_width=min(max(len(str(d)) for d in df.device), 24))
    table.add_column("space", overflow="fold")
    show_failed = wide or bool(df.failed.sum())
    show_suspect = bool(df.suspect.sum())  # visits measured while the device was not alone: see `suspect`
    cols = ("status", "ok/planned" if wide else "ok/plan", *(("failed",) if show_failed else ()),
            *(("suspect",) if show_suspect else ()), *(("stale",) if show_stale else ()),
            *(("runs/model", "per-run") if wide else ("runs",)), *(("started UTC",) if dated else ()))
    for col in cols:
        table.add_column(col, no_wrap=True, justify="left" if col in ("status", "per-run", "started UTC") else "right")
    notes, device_stats = [], False
    for r in df.itertuples():
        space = r.space + (f" ({r.graph_mode})" if isinstance(r.graph_mode, str) and r.graph_mode != "prune" else "")
        n = r.runs_per_model  # NULL arrives as None or NaN
        runs = f"{n:.3g}" if isinstance(n, (int, float)) and n == n else ""  # adaptive repeats: a mean, 8.62
        per_run = {1: "yes", 0: "no (device statistics)"}.get(r.per_run, "")
        if r.per_run == 0 and not wide:  # the device reported statistics, not each run (benchmark_model)
            runs, device_stats = runs + "*", True
        table.add_row(str(r.id), esc(r.device), esc(space), _STATUS.get(r.status, "{}").format(r.status),
                      f"{r.ok}/{r.planned}", *((str(r.failed) if r.failed else "",) if show_failed else ()),
                      *((f"[yellow]{r.suspect}[/]" if r.suspect else "",) if show_suspect else ()),
                      *((f"[yellow]{r.stale}[/]" if r.stale else "",) if show_stale else ()),
                      *((runs, per_run) if wide else (runs,)),
                      *((_text(r.started_at)[0 if wide else 5:16].replace("T", " "),) if dated else ()))
        if _text(r.message):
            notes.append(f"  #{r.id} {r.status}: {esc(_text(r.message))}")
    return table, notes, device_stats


@cli_errors
def backup(
    dest: Annotated[Path, typer.Argument(help="File to write the copy to (replaced if it exists).")],
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Copy the store safely, even while campaigns write to it.

    A plain `cp` of a store being written misses what is still in its -wal file (or, copied with it, can give
    a damaged file); this uses SQLite's online backup. Example: harness backup backups/results-$(date +%F).db
    """
    from harness.results.store import open_store

    with open_store(store, write=False) as st, working(f"copying {store}"):
        size = st.backup(dest)
    console.print(f"wrote {esc(str(dest))} ({size / 1e6:.1f} MB): a consistent copy of {esc(str(store))}",
                  highlight=False)
