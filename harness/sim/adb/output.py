"""TFLite ``benchmark_model``'s output as the virtual phone prints it: the current LiteRT format, exactly,
from real timings (``tensorflow/lite/tools/benchmark``). The driver's parser is
:mod:`harness.devices.adb_benchmark`; tests check that the two agree.
"""

from __future__ import annotations

import math


def g(x: float) -> str:
    """C++ ostream's default formatting of a double (``%g``, 6 significant digits)."""
    return f"{x:g}"


def stat_line(values_us: list[int]) -> str:
    """``StatWithPercentiles<int64_t>::OutputToStream`` (LiteRT's tflite/tools/benchmark)."""
    if not values_us:
        return "count=0 p5=0 median=0 p95=0"  # an empty int64 percentile is quiet_NaN() == 0
    n = len(values_us)
    ordered = sorted(values_us)
    pct = {p: ordered[n * p // 100] for p in (5, 50, 95)}
    tail = f" p5={pct[5]} median={pct[50]} p95={pct[95]}"
    lo, hi = ordered[0], ordered[-1]
    if lo == hi:
        return f"count={n} curr={values_us[-1]}" + ("(all same)" if n > 1 else "") + tail
    avg = sum(values_us) / n
    var = sum(v * v for v in values_us) / n - avg * avg
    std = int(math.sqrt(var)) if var > 0 else 0
    return (f"count={n} first={values_us[0]} curr={values_us[-1]} min={lo} max={hi} avg={g(avg)} std={std}"
            + tail)


def format_params(flags: dict[str, str], graph: str) -> list[str]:
    """``LogParams``: only the flags given on the command line are printed (verbose=false); Graph always."""
    labels = [("num_runs", "Min num runs"), ("min_secs", "Min runs duration (seconds)"),
              ("max_secs", "Max runs duration (seconds)"), ("num_threads", "Num threads"),
              ("warmup_runs", "Min warmup runs"), ("warmup_min_secs", "Min warmup runs duration (seconds)")]
    lines = ["Log parameter values verbosely: [0]"]
    for key, label in labels:
        if key in flags:
            v = flags[key]
            lines.append(f"{label}: [{g(float(v)) if 'secs' in key else int(v)}]")
    lines.append(f"Graph: [{graph}]")
    lines.append("Signature to run: []")
    for key, label in (("use_xnnpack", "Use xnnpack"), ("use_gpu", "Use gpu"), ("use_nnapi", "Use NNAPI")):
        if key in flags:
            lines.append(f"{label}: [{int(flags[key] in ('true', '1'))}]")
    if "num_threads" in flags:
        lines.append(f"#threads used for CPU inference: [{int(flags['num_threads'])}]")
    return lines


def format_results(*, init_us: int, model_size_bytes: int, phases: list[tuple[int, float, float, list[int]]],
                   mem_init_mb: float | None, mem_overall_mb: float | None, graph: str,
                   xnnpack: bool) -> list[str]:
    """The lines after the parameters: load, init, each phase, the summary and memory (LiteRT format)."""
    lines = [f"Loaded model {graph}"]
    if xnnpack:
        lines.append("Created TensorFlow Lite XNNPACK delegate for CPU.")
    lines.append(f"The input model file size (MB): {g(model_size_bytes / 1e6)}")
    lines.append(f"Initialized session in {g(init_us / 1e3)}ms.")
    for min_runs, min_secs, max_secs, values in phases:
        lines.append(f"Running benchmark for at least {min_runs} iterations and at least {g(min_secs)} seconds "
                     f"but terminate if exceeding {g(max_secs)} seconds.")
        lines.append(stat_line(values) + "\n")
    warm, reg = phases[0][3], phases[-1][3]
    warm_avg = g(sum(warm) / len(warm)) if warm else "nan"
    lines.append(f"Inference timings in us: Init: {init_us}, First inference: {warm[0] if warm else 0}, "
                 f"Warmup (avg): {warm_avg}, Inference (avg): {g(sum(reg) / len(reg)) if reg else 'nan'}")
    if mem_init_mb is not None and mem_overall_mb is not None:
        lines.append("Note: as the benchmark tool itself affects memory footprint, the following is only "
                     "APPROXIMATE to the actual memory footprint of the model at runtime. Take the information "
                     "at your discretion.")
        lines.append(f"Memory footprint delta from the start of the tool (MB): init={g(mem_init_mb)} "
                     f"overall={g(mem_overall_mb)}")
    return lines


def answer_lines(req: dict, resp: dict, *, graph: str, xnnpack: bool) -> list[str]:
    """The result lines benchmark_model prints for one benchmark worker request and its answer."""
    phases = [(req["warmup_runs"], req["warmup_min_secs"], req["max_secs"], resp["warmup_us"]),
              (req["num_runs"], req["min_secs"], req["max_secs"], resp["timed_us"])]
    return format_results(init_us=resp["init_us"], model_size_bytes=resp["model_size"], phases=phases,
                          mem_init_mb=resp.get("mem_init_mb"), mem_overall_mb=resp.get("mem_overall_mb"),
                          graph=graph, xnnpack=xnnpack)


def bench_request(flags: dict[str, str], graph: str) -> dict:
    """The benchmark worker request for benchmark_model's flags (its defaults where a flag is absent)."""
    xnnpack = flags.get("use_xnnpack", "true") in ("true", "1")
    return {"graph": graph, "threads": int(flags.get("num_threads", -1)), "delegate": "cpu" if xnnpack else "reference",
            "warmup_runs": int(flags.get("warmup_runs", 1)), "warmup_min_secs": float(flags.get("warmup_min_secs", 0.5)),
            "num_runs": int(flags.get("num_runs", 50)), "min_secs": float(flags.get("min_secs", 1.0)),
            "max_secs": float(flags.get("max_secs", 150.0))}
