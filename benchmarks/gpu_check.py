"""GPU check: measure NB201 architectures on this machine's NVIDIA GPU and rank-correlate them with the
published GPU tables. Runs only where a GPU exists; elsewhere it says why and exits 0.

For ``--n`` architectures of the OneProxy sample (seeded), it measures with onnxruntime's CUDA and TensorRT
execution providers (when installed; the CUDA one also with CUDA graphs, ``cudagraph-*``, unless
--no-cuda-graph) and with trtexec (when on PATH or --trtexec), each at the given batch sizes in fp32 and fp16
(every runtime's bs1 fp32 first), through the harness's own drivers and campaign (IO binding, the provider check, the
engine cache, NVML conditions; ``--energy nvml`` meters energy per inference), then prints the SRCC of each
against the published columns of ../shared/data/oneproxy: Eagle's GTX 1080 Ti (fp32; the MANIFEST warns it
tracks Eagle's i7 CPU almost exactly), HW-NAS-Bench's edge GPU (Jetson TX2) and Eagle's Jetson Nano
fp16/fp32. Each architecture is visited ``--rounds`` times in shuffled rounds; the noise floor is the SRCC
of each configuration's first visits against its second (interleaved: the same campaign, other rounds).

    python benchmarks/gpu_check.py [--n 50] [--seed 0] [--trtexec PATH] [--data ../shared/data] [--out DIR]

``--out DIR`` keeps the store (``gpu.db``), every configuration's per-architecture medians
(``gpu_latency.csv``) and the printed table (``gpu_check.txt``). ``--budget-s`` starts no configuration
after that many seconds (the rest are listed as skipped). Without a GPU, ``harness sim trtexec --install
/tmp/t`` then ``--no-gpu-ok --trtexec /tmp/t/trtexec`` runs the whole script against the stand-in trtexec
(CPU numbers, a check of the script, not of any GPU); ``--providers CPUExecutionProvider`` likewise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="architectures of the OneProxy sample to measure")
    ap.add_argument("--seed", type=int, default=0, help="which architectures (pandas sample seed)")
    ap.add_argument("--trtexec", default=shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec",
                    help="trtexec binary (measured when it exists)")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                    help="folder of the public tables (oneproxy/nb201_oneproxy_18dev_1999.csv.gz)")
    ap.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    ap.add_argument("--precisions", default="fp32,fp16", help="precisions, comma-separated")
    ap.add_argument("--rounds", type=int, default=2, help="visits per architecture (>= 2 gives the noise floor)")
    ap.add_argument("--providers", default="CUDAExecutionProvider,TensorrtExecutionProvider",
                    help="onnxruntime providers to measure with, those installed")
    ap.add_argument("--no-cuda-graph", action="store_true",
                    help="leave out the CUDA provider with CUDA graphs (enable_cuda_graph: 1)")
    ap.add_argument("--energy", default="off", help="policy.energy of every configuration (nvml on a GPU; trtexec "
                    "meters none and runs with off)")
    ap.add_argument("--budget-s", type=float, default=None, help="start no configuration after this many seconds")
    ap.add_argument("--out", type=Path, default=None, help="keep the store, the medians and the table here")
    ap.add_argument("--no-gpu-ok", action="store_true",
                    help="run anyway (checks the script itself, e.g. with `harness sim trtexec`'s stand-in)")
    args = ap.parse_args()

    if args.out and (Path(args.out) / "gpu.db").exists():  # a second run would mix its visits with the first's
        print(f"{args.out} holds gpu.db from an earlier run: give a new --out folder (or remove that one)")
        return 2
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

    t_start = time.perf_counter()
    table = pd.read_csv(args.data / "oneproxy" / "nb201_oneproxy_18dev_1999.csv.gz")
    rows = table.sample(n=args.n, random_state=args.seed)
    space = get_space("nb201")
    archs = space.parse_many(str(i) for i in rows.nb201_index)
    providers = [p for p in args.providers.split(",") if p in ort.get_available_providers()]
    runtimes: list[tuple[str, dict]] = [(p.removesuffix("ExecutionProvider").lower(),
                                         {"name": "onnxruntime", "execution_provider": p}) for p in providers]
    if "CUDAExecutionProvider" in providers and not args.no_cuda_graph:  # one launch per inference: steadier
        runtimes.insert(1, ("cudagraph", {"name": "onnxruntime", "execution_provider": "CUDAExecutionProvider",
                                          "provider_options": {"enable_cuda_graph": "1"}}))
    if Path(args.trtexec).exists():
        runtimes.append(("trtexec", {"name": "trtexec", "binary": args.trtexec}))
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"GPU: {gpu}; onnxruntime {ort.__version__} providers {providers or 'none'} "
        f"(available: {', '.join(ort.get_available_providers())}); "
        f"trtexec {'yes' if Path(args.trtexec).exists() else 'no'}; {len(archs)} NB201 architectures, "
        f"{args.rounds} visits each")
    if not runtimes:
        say("neither onnxruntime-gpu nor trtexec is installed: nothing to measure")
        return 0
    policy = {"warmup_runs": 20, "timed_runs": 100, "min_seconds": 0.0, "timeout_seconds": 600,
              "rounds": args.rounds, "energy": args.energy}
    measured: dict[str, pd.Series] = {}
    floors: dict[str, tuple[float, int, float, float]] = {}
    energy: dict[str, float] = {}
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Store(work / "gpu.db") as st:
        cache = ModelCache(Path(tmp) / "models")
        os.environ.setdefault("HARNESS_ENGINE_CACHE", str(Path(tmp) / "engines"))  # never the checkout's models/
        # batch and precision outermost: every runtime's bs1 fp32 first, so a budget cut leaves comparable columns
        plan = [(label, runtime, bs, precision) for bs in (int(b) for b in args.batches.split(","))
                for precision in args.precisions.split(",") for label, runtime in runtimes]
        for label, runtime, bs, precision in plan:
            name = f"{label}-bs{bs}-{precision}"
            if args.budget_s is not None and time.perf_counter() - t_start > args.budget_s:
                say(f"  {name}: skipped (past --budget-s {args.budget_s:.0f})")
                continue
            energy_here = "off" if runtime["name"] == "trtexec" else args.energy  # trtexec meters no energy
            p = parse_profile({"name": name, "connection": {"kind": "local"}, "runtime": runtime,
                               "policy": {**policy, "energy": energy_here},
                               "workload": {"batch_size": bs, "precision": precision}}, f"<{name}>")
            s = run_campaign(st, p, space, archs, cache=cache)
            m = st.measurements(name)
            fails = m[m.status != "ok"]
            why = "; ".join(sorted({f"{k}: {str(msg)[:160]}" for k, msg in
                                    zip(fails.failure_kind, fails.failure_message)}))
            m = m[m.status == "ok"]
            failed = f", {s.failed} failed ({why})" if s.failed else ""
            say(f"  {name}: {s.ok} measured{failed} in {s.elapsed_s:.0f} s; "
                f"median {m.median_ms.median():.3f} ms, init {m.init_ms.median():.0f} ms per visit")
            if m.energy_mj.notna().any():
                energy[name] = float(m.energy_mj.median())
            measured[name] = m.groupby("key").median_ms.median()
            visit = m.groupby("key").cumcount()  # store order: the rounds' order
            first = m[visit == 0].set_index("key").median_ms
            second = m[visit == 1].set_index("key").median_ms
            both = first.index.intersection(second.index)
            if len(both) > 2:
                diff = float(((second[both] / first[both]) - 1).abs().median())
                ci = pd.read_sql_query(
                    "SELECT (m.ci_high_ms - m.ci_low_ms) / 2 / m.median_ms AS rel FROM measurements m "
                    "JOIN devices d ON d.id = m.device_id WHERE d.name = ? AND m.status = 'ok'", st.db,
                    params=(name,))
                within = float(ci.rel.median())
                floors[name] = (float(spearmanr(first[both], second[both]).statistic), len(both), diff, within)
    keyed = rows.set_index(rows.nb201_index.map(lambda i: space.parse(str(i)).key))
    say("\nnoise floor (SRCC of each configuration's first visits against its second):")
    for name, (r, n, diff, within) in floors.items():
        say(f"  {name:<24} {r:.3f} on {n} architectures; the two visits differ by a median {diff:.1%}, each "
            f"visit's own 95 % CI of its median +-{within:.1%}")
    if energy:
        say("\nenergy per inference (median over architectures, policy.energy " + args.energy + "):")
        for name, mj in energy.items():
            say(f"  {name:<24} {mj:.3f} mJ")
    say("\nSRCC against the published tables:")
    say(f"{'measured':<24}" + "".join(f"{c.removesuffix('_ms'):>26}" for c in PUBLISHED))
    for name, series in measured.items():
        cells = []
        for col in PUBLISHED:
            pub = keyed[col].dropna()
            common = series.index.intersection(pub.index)
            r = spearmanr(series[common], pub[common]).statistic if len(common) > 2 else np.nan
            cells.append(f"{r:>18.3f} (n={len(common):>3})")
        say(f"{name:<24}" + "".join(cells))
    names = list(measured)
    if len(names) > 1:
        say("\nSRCC between configurations:")
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                common = measured[a].index.intersection(measured[b].index)
                if len(common) > 2:
                    say(f"  {a} vs {b}: {spearmanr(measured[a][common], measured[b][common]).statistic:.3f}")
    if args.out:
        frame = pd.DataFrame(measured)
        frame.insert(0, "nb201_index", [int(keyed.nb201_index.get(k, -1)) for k in frame.index])
        frame.to_csv(work / "gpu_latency.csv", index_label="key")
        (work / "gpu_check.txt").write_text("\n".join(lines) + "\n")
        print(f"\nkept in {work}: gpu.db, gpu_latency.csv, gpu_check.txt")
    return 0


if __name__ == "__main__":
    from _cli import run

    run(main)
