"""`harness demo`: the main job on this machine, with no hardware: measure, export, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from harness.cli.common import (DEFAULT_CACHE, DEFAULT_DEVICES, DEFAULT_STORE, CacheOpt, DevicesDirOpt, StoreOpt,
                                cli_errors, console, table_path, working)
from harness.cli.measure import run
from harness.paths import WORKSPACE

DEMO_DEVICES = ("local-onnx", "local-tflite")


@cli_errors
def demo(
    sample: Annotated[int, typer.Option(help="NAS-Bench-201 architectures to measure.")] = 20,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Sampling seed.")] = 0,
    out: Annotated[Path, typer.Option(callback=table_path, help="Where to write the latency table.")] = (
        WORKSPACE.results / "demo_nb201.csv"),
    store: StoreOpt = DEFAULT_STORE,
    devices_dir: DevicesDirOpt = DEFAULT_DEVICES,
    cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Measure NB201 architectures with onnxruntime and LiteRT on this CPU, export, and rank-correlate them."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from scipy.stats import spearmanr

        from harness.results.export import latency_table, write_table
        from harness.results.store import Store

    for device in DEMO_DEVICES:
        run(device, "nb201", sample=sample, seed=seed, all_archs=False, arch=None, arch_file=None,
            remeasure=False, max_failures=5, store=store, devices_dir=devices_dir, cache_dir=cache_dir)
    from harness.models.spaces import get_space

    mine = {a.columns["nb201_index"] for a in get_space("nb201").sample(sample, seed)}
    with Store(store) as st:
        df = latency_table(st, "nb201", list(DEMO_DEVICES))
    df = df[df.nb201_index.isin(mine)].reset_index(drop=True)  # this demo's architectures, not the store's others
    write_table(df, out)
    a, b = (f"{d}_ms" for d in DEMO_DEVICES)
    both = df[[a, b]].dropna()
    rho = spearmanr(both[a], both[b]).statistic
    console.print(f"wrote {escape(str(out))} ({len(df)} architectures)", highlight=False)
    console.print(f"SRCC({DEMO_DEVICES[0]}, {DEMO_DEVICES[1]}) = {rho:.4f} on {len(both)} architectures")
