"""GPU check: measure NB201 architectures on this machine's NVIDIA GPU and rank-correlate them with the
published GPU tables. Runs only where a GPU exists; elsewhere it says why and exits 0.

For 50 architectures of the OneProxy sample (seeded), it measures with onnxruntime's CUDA and TensorRT
execution providers (when installed) and with trtexec (when on PATH or --trtexec), each at bs1 and bs32,
through the harness's own drivers and campaign (IO binding, the provider check, engine cache), then prints
the SRCC of each against the published columns of ../shared/data/oneproxy: Eagle's GTX 1080 Ti (fp32; the
MANIFEST warns it tracks Eagle's i7 CPU almost exactly), HW-NAS-Bench's edge GPU (Jetson TX2) and Eagle's
Jetson Nano fp16/fp32. The noise floor is the SRCC of the CUDA bs1 run against a second, interleaved run
of itself.

    python benchmarks/gpu_check.py [--n 50] [--seed 0] [--trtexec PATH] [--data ../shared/data]

Without a GPU, ``harness sim trtexec --install /tmp/t`` then ``--no-gpu-ok --trtexec /tmp/t/trtexec`` runs the whole script
against the stand-in trtexec (CPU numbers, a check of the script, not of any GPU).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

PUBLISHED = ["eagle_gtx1080ti_ms", "hwnb_edgegpu_ms", "eagle_jetson_nano_fp16_ms", "eagle_jetson_nano_fp32_ms"]


def gpu_present() -> str | None:
    """The GPU's name, or None (no NVIDIA driver / GPU)."""
    from harness.devices import hwprobe

    nv = hwprobe.load_nvml()
    if nv is None:
        return None
    try:
        return str(hwprobe.nvml_static(nv, 0).get("gpu_name"))
    except Exception:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trtexec", default=shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--no-gpu-ok", action="store_true",
                    help="run anyway (checks the script itself, e.g. with `harness sim trtexec`'s stand-in)")
    args = ap.parse_args()

    gpu = gpu_present() or ("none (--no-gpu-ok)" if args.no_gpu_ok else None)
    if gpu is None:
        print("no NVIDIA GPU here (NVML not available): nothing to check; run this on a GPU machine")
        return 0
    import numpy as np
    import onnxruntime as ort
    import pandas as pd
    from scipy.stats import spearmanr

    from harness.campaign import run_campaign
    from harness.devices.profile import parse_profile
    from harness.models.cache import ModelCache
    from harness.models.spaces import get_space
    from harness.results.store import Store

    table = pd.read_csv(args.data / "oneproxy" / "nb201_oneproxy_18dev_1999.csv.gz")
    rows = table.sample(n=args.n, random_state=args.seed)
    space = get_space("nb201")
    archs = space.parse_many(str(i) for i in rows.nb201_index)
    providers = [p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
                 if p in ort.get_available_providers()]
    runtimes: list[tuple[str, dict]] = [(p.removesuffix("ExecutionProvider").lower(),
                                         {"name": "onnxruntime", "execution_provider": p}) for p in providers]
    if Path(args.trtexec).exists():
        runtimes.append(("trtexec", {"name": "trtexec", "binary": args.trtexec}))
    print(f"GPU: {gpu}; onnxruntime {ort.__version__} providers {providers or 'none'}; "
          f"trtexec {'yes' if Path(args.trtexec).exists() else 'no'}; {len(archs)} NB201 architectures")
    if not runtimes:
        print("neither onnxruntime-gpu nor trtexec is installed: nothing to measure")
        return 0
    policy = {"warmup_runs": 20, "timed_runs": 100, "min_seconds": 0.0, "timeout_seconds": 600}
    measured: dict[str, pd.Series] = {}
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "gpu.db") as st:
        cache = ModelCache(Path(tmp) / "models")
        os.environ.setdefault("HARNESS_ENGINE_CACHE", str(Path(tmp) / "engines"))  # never the checkout's models/
        for label, runtime in runtimes:
            for bs in (int(b) for b in args.batches.split(",")):
                for precision in ("fp32", "fp16"):
                    name = f"{label}-bs{bs}-{precision}"
                    p = parse_profile({"name": name, "connection": {"kind": "local"}, "runtime": runtime,
                                       "policy": policy, "workload": {"batch_size": bs, "precision": precision}},
                                      f"<{name}>")
                    s = run_campaign(st, p, space, archs, cache=cache)
                    print(f"  {name}: {s.ok} measured, {s.failed} failed ({s.failures or ''}) in {s.elapsed_s:.0f} s")
                    m = st.measurements(name)
                    m = m[m.status == "ok"]
                    measured[name] = m.groupby("key").median_ms.last()
        # noise floor: CUDA (or the first runtime) bs1 again, as another device
        label, runtime = runtimes[0]
        again = parse_profile({"name": "again", "connection": {"kind": "local"}, "runtime": runtime,
                               "policy": policy}, "<again>")
        run_campaign(st, again, space, archs, cache=cache)
        m = st.measurements("again")
        measured["again"] = m[m.status == "ok"].groupby("key").median_ms.last()
    keyed = rows.set_index(rows.nb201_index.map(lambda i: space.parse(str(i)).key))
    first = f"{runtimes[0][0]}-bs1-fp32"
    both = measured[first].index.intersection(measured["again"].index)
    floor = spearmanr(measured[first][both], measured["again"][both]).statistic
    print(f"\nnoise floor: SRCC({first}, its repeat) = {floor:.3f} on {len(both)} architectures\n")
    header = f"{'measured':<24}" + "".join(f"{c.removesuffix('_ms'):>26}" for c in PUBLISHED)
    print(header)
    for name, series in measured.items():
        if name == "again":
            continue
        cells = []
        for col in PUBLISHED:
            pub = keyed[col].dropna()
            common = series.index.intersection(pub.index)
            r = spearmanr(series[common], pub[common]).statistic if len(common) > 2 else np.nan
            cells.append(f"{r:>20.3f} (n={len(common):>2})")
        print(f"{name:<24}" + "".join(cells))
    return 0


if __name__ == "__main__":
    from _cli import run

    run(main)
