"""What does a dead convolution cost on each public device? (Why the predictors read two views of NB201.)

A convolution is dead when its output reaches the cell's output only through ``none`` edges (or its input is
cut off from the cell's input): a toolchain that prunes dead code never runs it, PyTorch eager runs it.
For every device of OneProxy's 1999-architecture table this fits log-latency on counts of live 1x1 / 3x3
convolutions, live skips and pools and dead 1x1 / 3x3 convolutions (least squares, all architectures) and
prints each dead convolution's cost relative to a live one: ~0 = the device's toolchain pruned it, ~1 = it
ran it. Devices in between (e.g. a dead conv at half the cost) are why the transfer fit gets both views and
weighs them per target (`harness.analysis.features.live_onehot`).

    python benchmarks/dead_code.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.features import live_onehot, onehot
from harness.models.spaces import get_space
from harness.models.spaces.nb201 import OPS

TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "oneproxy" / "nb201_oneproxy_18dev_1999.csv.gz"


def op_counts(encoded: np.ndarray, op: str) -> np.ndarray:
    """How many edges hold ``op`` (rows of NB201's 6 edges x 5 operations one-hot)."""
    return encoded.reshape(len(encoded), -1, len(OPS))[:, :, OPS.index(op)].sum(1)


def main() -> None:
    from _cli import parser, read_table  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--table", type=Path, default=TABLE, help="an NB201 table with arch_str and <device>_ms columns")
    args = ap.parse_args()
    space = get_space("nb201")
    df = read_table(args.table)
    archs = [space.parse(s) for s in df["arch_str"]]
    plain, live = onehot(space, archs), live_onehot(space, archs)
    dead = plain - live  # +1 where an operation sits on a dead edge (live writes it as none)
    cols = {"live 1x1": op_counts(live, "nor_conv_1x1"), "live 3x3": op_counts(live, "nor_conv_3x3"),
            "live skip": op_counts(live, "skip_connect"), "live pool": op_counts(live, "avg_pool_3x3"),
            "dead 1x1": op_counts(np.clip(dead, 0, None), "nor_conv_1x1"),
            "dead 3x3": op_counts(np.clip(dead, 0, None), "nor_conv_3x3")}
    print(f"{len(archs)} architectures; {int((cols['dead 3x3'] > 0).sum())} with a dead 3x3 convolution, "
          f"{int((cols['dead 1x1'] > 0).sum())} with a dead 1x1")
    x = np.column_stack([np.ones(len(archs)), *cols.values()])
    rows = []
    for c in [c for c in df.columns if c.endswith("_ms")]:
        y = df[c].to_numpy(float)
        ok = ~np.isnan(y)
        coef, *_ = np.linalg.lstsq(x[ok], np.log(y[ok]), rcond=None)
        b = dict(zip(cols, coef[1:]))
        rows.append({"device": c[:-3], "live 3x3": b["live 3x3"], "dead 3x3": b["dead 3x3"],
                     "dead/live 3x3": b["dead 3x3"] / b["live 3x3"], "live 1x1": b["live 1x1"],
                     "dead 1x1": b["dead 1x1"], "dead/live 1x1": b["dead 1x1"] / b["live 1x1"]})
    print("log-latency per operation (least squares); dead/live: a dead conv's cost as a share of a live one's")
    print(pd.DataFrame(rows).set_index("device").round(2).to_string())


if __name__ == "__main__":
    from _cli import run

    run(main)
