"""SRCC matrix speed: all device pairs over every _ms column of ../shared/data, and a synthetic
50-device x 15625-architecture table. Goal: under 2 s for the synthetic table.

    python benchmarks/srcc.py [--data ../shared/data]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import correlate, latencies
from harness.results.importer import import_table
from harness.results.store import Store


def timed(label: str, wide: pd.DataFrame, **kw) -> None:
    t = time.perf_counter()
    corr = correlate(wide, **kw)
    dt = time.perf_counter() - t
    print(f"{label}: {wide.shape[1]} devices x {wide.shape[0]} architectures, {len(corr.pairs)} pairs "
          f"-> {dt:.3f} s")


def main() -> None:
    from _cli import parser  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=None,
                    help="folder of the public tables (default ../shared/data; left out with a note when absent)")
    args = ap.parse_args()
    data = args.data or Path(__file__).resolve().parents[2] / "shared" / "data"
    files = sorted(p for p in data.glob("*/nb201_*.csv.gz"))
    if args.data is not None and not files:  # a path given and nothing there: it said nothing and timed less
        ap.error(f"--data {args.data}: no */nb201_*.csv.gz tables there")
    if not files:
        print(f"(no public tables in {data}: only the synthetic tables are timed)")
    if files:
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "h.db") as st:
            t = time.perf_counter()
            for f in files:
                import_table(st, f)
            print(f"imported {len(files)} NB201 files in {time.perf_counter() - t:.2f} s")
            wide = latencies(st, "nb201")
        timed("shared data, spearman", wide)
        timed("shared data, kendall", wide, method="kendall")
        timed("shared data, spearman + 200 bootstrap CIs", wide, n_boot=200)
    rng = np.random.default_rng(0)
    base = rng.lognormal(size=15625)
    synth = pd.DataFrame({f"dev{i:02d}": base * rng.lognormal(0, 0.3, 15625) for i in range(50)})
    timed("synthetic, spearman (goal < 2 s)", synth)
    holes = synth.copy()
    patterns = [rng.random(15625) < 0.05 * k for k in range(10)]
    for i, c in enumerate(holes.columns):  # 10 coverage patterns shared by 5 devices each
        holes.loc[patterns[i % 10], c] = np.nan
    timed("synthetic with 10 coverage patterns, spearman", holes)
    for c in holes.columns:  # worst case: every device covers a different subset
        holes.loc[rng.random(15625) < 0.02, c] = np.nan
    timed("synthetic, every device its own coverage (worst case), spearman", holes)

if __name__ == "__main__":
    from _cli import run

    run(main)
