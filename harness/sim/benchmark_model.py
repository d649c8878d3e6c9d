"""A stand-in TFLite ``benchmark_model`` for Linux hosts (Raspberry Pi / Jetson CPU tests over SSH).

The same program as the virtual phone's: flags read as the real binary reads them, the model timed for
real with LiteRT (``harness.sim.adb.bench``: both phases follow ``BenchmarkModel::Run``), the output
printed in the current LiteRT format (``harness.sim.adb.output``).
GPU/NNAPI/Hexagon delegates fail as on a board without them.

    python -m harness.sim.benchmark_model --graph=m.tflite --num_threads=1 --num_runs=10
"""

from __future__ import annotations

import os
import re
import sys

from harness.sim.adb import output as adb_output
from harness.sim.adb.bench import bench
from harness.sim.adb.shell import BOOL_FLAGS, FLOAT_FLAGS, INT_FLAGS, STR_FLAGS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    info = lambda s: print(f"INFO: {s}", flush=True)  # noqa: E731
    error = lambda s: print(f"ERROR: {s}", file=sys.stderr, flush=True)  # noqa: E731
    info("STARTING!")
    flags, unconsumed = {}, []
    for a in argv:
        m = re.fullmatch(r"--([A-Za-z0-9_]+)=(.*)", a, re.S)
        if not m or m.group(1) not in INT_FLAGS | FLOAT_FLAGS | BOOL_FLAGS | STR_FLAGS:
            unconsumed.append(a)
            continue
        flags[m.group(1)] = m.group(2)
    if unconsumed:
        print(f"WARN: Unconsumed cmdline flags: {' '.join(unconsumed)}")
    graph = flags.get("graph", "")
    for line in adb_output.format_params(flags, graph):
        info(line)
    if not graph:
        error("Please specify the name of your TF Lite input file with --graph")
        error("Benchmarking failed.")
        return 1
    for key, name in (("use_gpu", "GPU"), ("use_nnapi", "NNAPI"), ("use_hexagon", "Hexagon")):
        if flags.get(key) in ("true", "1"):
            error(f"Failed to apply {name} delegate (this board has only a CPU).")
            error("Benchmarking failed.")
            return 1
    if not os.path.isfile(graph):
        error(f"Could not open '{graph}'.")
        error(f"Failed to mmap model {graph}")
        error("Benchmarking failed.")
        return 1
    xnnpack = flags.get("use_xnnpack", "true") in ("true", "1")
    req = adb_output.bench_request(flags, graph)
    try:
        resp = bench(req)
    except Exception as e:  # what LiteRT says about a model it cannot load
        error(str(e))
        error(f"Failed to mmap model {graph}")
        error("Benchmarking failed.")
        return 1
    for line in adb_output.answer_lines(req, resp, graph=graph, xnnpack=xnnpack):
        info(line)
    return 0


def install(folder: str, python: str | None = None) -> str:
    """Write an executable ``benchmark_model`` into ``folder`` that runs this stand-in."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "benchmark_model")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(path, "w") as f:
        f.write(f"#!{python or sys.executable} -P\nimport sys\nsys.path.insert(0, {root!r})\n"
                "from harness.sim.benchmark_model import main\nsys.exit(main())\n")
    os.chmod(path, 0o755)
    return path


if __name__ == "__main__":
    sys.exit(main())
