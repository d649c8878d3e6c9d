"""`harness models`: the model files harness measures, written out for the user's own tools.

What is measured must be the model a deployment would run; a researcher checks that by opening the very file
(Netron), timing it with the vendor's tool (benchmark_model, trtexec, AI Hub) or diffing it against a converter's.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from harness.cli.common import (DEFAULT_CACHE, DEFAULT_DEVICES, CacheOpt, DevicesDirOpt, cli_errors, console, esc,
                                names_list, print_table)
from harness.cli.measure import ArchFileOpt, ArchOpt
from harness.errors import HarnessError
from harness.paths import WORKSPACE

DEFAULT_DEVICES_WRITTEN = ["local-onnx", "local-tflite"]
MAX_STEM = 48  # a file name part; NB201's 90-character arch_str becomes its index


def file_stem(space: str, arch, workload: str, graph: str) -> str:
    """``nb201-77-prune``, ``fbnet-<key>-keep-bs8.fp16``: the architecture's label (its index where the space
    numbers them), made safe for any file system, shortened with a hash of the key when long."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", arch.label).strip("_.") or "arch"
    if len(label) > MAX_STEM:
        label = f"{label[:32]}-{hashlib.sha256(arch.key.encode()).hexdigest()[:10]}"
    return "-".join(p for p in (space, label, graph, workload) if p)


@cli_errors
def models(
    device: Annotated[Optional[list[str]], typer.Option(
        "--device", "-d", callback=names_list,
        help="Write what a campaign on these profiles pushes: their runtime's format, graph mode and workload "
             "(repeat or comma-separate); default: local-onnx and local-tflite (ONNX and TFLite, fp32, bs1).")] = None,
    space: Annotated[str, typer.Option(help="Search space.")] = "nb201",
    sample: Annotated[Optional[int], typer.Option(help="N architectures sampled as `measure --sample` does.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of --sample.")] = 0,
    all_archs: Annotated[bool, typer.Option("--all", help="Every architecture of the space.")] = False,
    arch: ArchOpt = None,
    arch_file: ArchFileOpt = None,
    graph: Annotated[Optional[str], typer.Option(
        help="prune or keep, overriding the profiles' graph mode (see `measure --help`).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch size instead of the profiles'.")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="Input HEIGHTxWIDTH, e.g. 64x64.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32, fp16 or int8 instead of the profiles'.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder to write the files and their list (models.csv) into.")] = (
        WORKSPACE.root / "models" / "files"),
    devices_dir: DevicesDirOpt = DEFAULT_DEVICES,
    cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Write the model files harness measures (ONNX, TFLite) for architectures of a space.

    The same bytes a campaign on each --device pushes (the exported-model cache serves them), named
    SPACE-ARCH-GRAPH[-WORKLOAD].onnx|.tflite, with models.csv listing each file's architecture, device, format,
    graph mode, workload, SHA-256, the digest the store records with each measurement of it (model_digest) and
    whether its output is constant. Open them in Netron or time them with your
    own tools (benchmark_model, trtexec) to check what harness measures.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    import pandas as pd

    from harness.campaign import artifact_for
    from harness.cli.measure import choose_targets, parse_shape
    from harness.devices.registry import ProfileRegistry
    from harness.models.cache import ModelCache, sha256_file
    from harness.models.passes import check_mode
    from harness.results.atomic import atomic_path
    from harness.results.export import write_table

    registry = ProfileRegistry(devices_dir)
    profiles = []
    for name in device or DEFAULT_DEVICES_WRITTEN:
        p = registry.get(name).with_workload("the command line", batch_size=batch_size,
                                             input_shape=parse_shape(input_shape), precision=precision)
        if graph is not None:
            p = p.model_copy(update={"graph": check_mode(graph)})
        profiles.append(p)
    sp, archs = choose_targets(profiles, space, None, sample=sample, seed=seed, all_archs=all_archs, arch=arch,
                               arch_file=arch_file)
    for p in profiles:  # as `measure` refuses them: files at another resolution than the key's match no measurement
        if p.workload.input_shape is not None and getattr(sp, "resolution_in_key", False):
            raise HarnessError(f"--input-shape: space {sp.name} has the resolution in its architecture keys (each "
                               "architecture is built at its own); leave out --input-shape")
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file; name a folder to write the model files into")
    out.mkdir(parents=True, exist_ok=True)
    cache = ModelCache(cache_dir)
    # export everything first (into the cache) and check the names, then write: a clash or a failed export
    # leaves the folder as it was
    planned: list[tuple[str, Any, dict]] = []
    names: dict[str, str] = {}
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[what]}"), console=console, transient=True)
    with progress:
        task = progress.add_task("exporting", total=len(archs) * len(profiles), what="")
        for p in profiles:
            for a in archs:
                progress.update(task, what=esc(f"{p.name}: {a.label}"))
                art = artifact_for(cache, sp, a, p)
                name = file_stem(sp.name, a, p.workload.label(), art.graph_mode) + art.path.suffix
                if names.setdefault(name, art.digest) != art.digest:
                    raise HarnessError(f"{name}: two of the profiles export different files under one name (they "
                                       "differ in what the name does not say, e.g. int8 calibration); write them "
                                       "into separate --out folders")
                planned.append((name, art, {"file": name, "space": sp.name, **a.columns, "device": p.name,
                                            "format": art.format, "graph": art.graph_mode,
                                            "workload": p.workload.label() or "bs1", "model_digest": art.digest,
                                            "bytes": art.path.stat().st_size, "degenerate": int(bool(art.degenerate))}))
                progress.advance(task)
        progress.update(task, description="writing", completed=0, what="")
        rows, written, listing = [], set(), out / "models.csv"
        try:
            for name, art, row in planned:
                if name not in written:
                    with atomic_path(out / name) as tmp:  # a full disk or a kill leaves no half model behind
                        shutil.copyfile(art.path, tmp)
                    written.add(name)
                rows.append({**row, "sha256": sha256_file(out / name)})
                progress.advance(task)
        finally:  # interrupted: the list still names every file that is there
            if rows:
                write_table(_with_earlier(listing, out, pd.DataFrame(rows)), listing)
    _print_summary(rows, out, listing)


def _with_earlier(listing: Path, out: Path, rows):
    """This run's rows, after the rows of earlier runs into the same folder whose files are still there and were
    not written again: models.csv lists the folder, not the last command (it listed only arch 0 beside 77's files)."""
    import pandas as pd

    if not listing.is_file():
        return rows
    try:
        old = pd.read_csv(listing, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError):
        return rows  # not ours any more: replaced by this run's list
    if "file" not in old.columns:
        return rows
    keep = old[~old.file.isin(set(rows.file)) & old.file.map(lambda f: (out / str(f)).is_file())]
    return pd.concat([keep, rows], ignore_index=True) if len(keep) else rows


def _print_summary(rows: list[dict], out: Path, listing: Path) -> None:
    from rich.table import Table

    shown = rows[:20]
    table = Table(title=f"model files in {esc(out)}")
    for col in ("file", "device", "MB", "sha256"):
        table.add_column(col, justify="right" if col == "MB" else "left", overflow="fold")
    for r in shown:
        table.add_row(esc(r["file"]), esc(r["device"]), f"{r['bytes'] / 1e6:.2f}", r["sha256"][:12])
    print_table(table)
    files = len({r["file"] for r in rows})
    more = f" (the first {len(shown)} shown)" if len(rows) > len(shown) else ""
    degenerate = sum(r["degenerate"] for r in rows)
    console.print(f"wrote {files} file(s) for {len(rows)} architecture/device pair(s){more}; the list with "
                  f"architectures and hashes: {esc(listing)}"
                  + (f"; {degenerate} with a constant output (no operators: what a converter makes of them)"
                     if degenerate else ""), highlight=False)
