"""TFLite's ``benchmark_model``: the command line the ADB driver runs, and the parser of its output.

The parser reads every line format that ``benchmark_model`` has printed across TFLite/LiteRT versions
(``tensorflow/lite/tools/benchmark/benchmark_model.cc`` and ``benchmark_tflite_model.cc``):

* with or without the ``INFO: `` / ``WARN: `` / ``ERROR: `` prefix of ``tools/logging.h`` (TF >= 2.4);
* ``Loaded model PATH``, ``Graph: [PATH]``, ``Num threads: [N]``, ``The input model file size (MB): X``;
* ``Initialized session in X ms.`` (old builds: no period);
* ``Running benchmark for at least N iterations and at least S seconds[ but terminate if exceeding M
  seconds].``, one per phase (warm-up, then the timed runs), each followed by its statistics line:
  ``count=N first=F curr=C min=A max=B avg=X std=S`` (+ ``p5= median= p95=`` in LiteRT),
  ``count=N curr=C(all same)``, ``count=0``, and the pre-2019 ``curr=C count=N min=... std=...``;
* ``Inference timings in us: Init: X, First inference: Y, Warmup (avg): Z, Inference (avg): W`` and the
  old ``Average inference timings in us: Warmup: Z, Init: X, no stats: W``;
* memory: ``Memory footprint delta from the start of the tool (MB): init=X overall=Y``, the older
  ``Peak memory footprint (MB): init=X overall=Y``, ``Overall peak memory footprint (MB) via periodic
  monitoring: X`` and the ``- VmRSS : N MB`` block.

A recognised line whose number does not parse raises :class:`~harness.errors.ParseError`; it never
becomes a zero. ``benchmark_model`` prints statistics of its runs, never each run: there is no flag
for per-run latencies, so :class:`BenchmarkOutput` carries the statistics and the driver stores them
as such (see ``adb.py``).

The virtual phone's formatter, which prints the current LiteRT format, is :mod:`harness.sim.adb.output`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from harness.devices.driver import RunResult
from harness.errors import DeviceError, MeasurementTimeout, ParseError

PREFIX = re.compile(r"^(INFO|WARN|WARNING|ERROR|VERBOSE|FATAL): ")
RUNNING = re.compile(r"^Running benchmark for at least (\S+) iterations and at least (\S+) seconds"
                     r"(?: but terminate if exceeding (\S+) seconds)?\.?$")
INIT = re.compile(r"^Initialized session in (\S+?) ?ms\.?$")
TIMINGS = re.compile(r"^(Average inference timings|Inference timings) in us: (.*)$")
STAT_START = re.compile(r"^(count|curr)=")
SIMPLE = {
    "Loaded model ": "loaded_model",
    "Graph: ": "graph",
    "Num threads: ": "num_threads",
    "#threads used for CPU inference: ": "cpu_threads",
    "The input model file size (MB): ": "model_size_mb",
    "Overall peak memory footprint (MB) via periodic monitoring: ": "peak_memory_mb",
}
MEMORY = re.compile(r"^(Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                    r"init=(\S+) overall=(\S+)$")
RSS = re.compile(r"^[-+] (VmRSS|RssAnnon|RssFile \+ RssShmem)\s*: (\S+) MB$")
TIMING_KEYS = {"Init": "init_us", "First inference": "first_us", "Warmup (avg)": "warmup_avg_us",
               "Warmup": "warmup_avg_us", "Inference (avg)": "inference_avg_us", "Inference": "inference_avg_us",
               "no stats": "inference_avg_us"}


def _number(text: str, what: str, line: str, *, allow_nan: bool = False, signed: bool = False) -> float:
    """A finite number; negative only where ``signed`` (memory deltas): a time or count never is."""
    try:
        value = float(text)
    except ValueError:
        raise ParseError(f"benchmark_model output: {what} is not a number in line {line[:300]!r}") from None
    if math.isinf(value) or (math.isnan(value) and not allow_nan) or (value < 0 and not signed):
        raise ParseError(f"benchmark_model output: {what} is {text[:40]!r} in line {line[:300]!r}")
    return value


@dataclass
class Stat:
    """One ``count=...`` line: benchmark_model's statistics of a phase, in microseconds."""

    count: int
    first_us: float | None = None
    curr_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    all_same: bool = False

    @classmethod
    def parse(cls, line: str) -> Stat:
        values: dict[str, str] = {}
        all_same = False
        for token in line.replace("(all same)", "(all_same)").split():
            key, sep, value = token.partition("=")
            if not sep:
                raise ParseError(f"benchmark_model output: unexpected {token!r} in statistics line {line!r}")
            if value.endswith("(all_same)"):
                value, all_same = value[: -len("(all_same)")], True
            values[key] = value
        if "count" not in values:
            raise ParseError(f"benchmark_model output: statistics line without count: {line!r}")
        count = _number(values.pop("count"), "count", line)
        if count != int(count) or count < 0:
            raise ParseError(f"benchmark_model output: count is not a run count in {line!r}")
        nums = {k: _number(v, k, line) for k, v in values.items()}
        stat = cls(int(count), first_us=nums.get("first"), curr_us=nums.get("curr"), min_us=nums.get("min"),
                   max_us=nums.get("max"), avg_us=nums.get("avg"), std_us=nums.get("std"),
                   p5_us=nums.get("p5"), median_us=nums.get("median"), p95_us=nums.get("p95"), all_same=all_same)
        if stat.count == 0:
            return stat
        if stat.curr_us is None:
            raise ParseError(f"benchmark_model output: statistics line without curr=: {line!r}")
        if all_same or stat.count == 1:  # "count=N curr=C(all same)": every run took C
            for name in ("first_us", "min_us", "max_us", "avg_us"):
                if getattr(stat, name) is None:
                    setattr(stat, name, stat.curr_us)
            stat.std_us = 0.0 if stat.std_us is None else stat.std_us
        missing = [k for k in ("min_us", "max_us", "avg_us", "std_us") if getattr(stat, k) is None]
        if missing:
            raise ParseError(f"benchmark_model output: statistics line lacks {', '.join(missing)}: {line!r}")
        return stat

    def as_ms(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {"count": self.count}
        for name in ("first", "curr", "min", "max", "avg", "std", "p5", "median", "p95"):
            v = getattr(self, f"{name}_us")
            out[f"{name}_ms"] = None if v is None else v / 1e3
        return out


@dataclass
class Phase:
    min_runs: int
    min_secs: float
    max_secs: float | None
    stat: Stat | None = None


@dataclass
class BenchmarkOutput:
    """Everything a benchmark_model run printed that the driver uses or records."""

    phases: list[Phase] = field(default_factory=list)
    init_ms: float | None = None
    timings_us: dict[str, float | None] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    memory_mb: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def warmup(self) -> Phase | None:
        return self.phases[0] if len(self.phases) >= 2 else None

    @property
    def regular(self) -> Phase | None:
        return self.phases[-1] if self.phases else None

    def timed_stat(self) -> Stat:
        """The statistics of the timed runs; a parse error when the output has none."""
        reg = self.regular
        if reg is None or reg.stat is None or reg.stat.count < 1:
            raise ParseError("benchmark_model output has no statistics of timed runs "
                             "(no 'Running benchmark ...' phase followed by a 'count=N ...' line)")
        return reg.stat

    def init(self) -> float:
        """Interpreter initialisation in ms, from 'Initialized session' or the 'Init:' timing."""
        if self.init_ms is not None:
            return self.init_ms
        if self.timings_us.get("init_us") is not None:
            return float(self.timings_us["init_us"]) / 1e3  # type: ignore[arg-type]
        raise ParseError("benchmark_model output has no initialisation time ('Initialized session in X ms')")


def parse_output(text: str) -> BenchmarkOutput:
    """Parse benchmark_model's combined stdout/stderr (``\\r\\n`` tolerated)."""
    out = BenchmarkOutput()
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        m = PREFIX.match(line)
        level = m.group(1) if m else None
        body = line[m.end():] if m else line
        if level in ("ERROR", "FATAL"):
            out.errors.append(body)
        elif level in ("WARN", "WARNING"):
            out.warnings.append(body)
        _parse_line(out, body, line)
    return out


def _parse_line(out: BenchmarkOutput, body: str, line: str) -> None:
    if m := RUNNING.match(body):
        runs = _number(m.group(1), "iteration count", line)
        out.phases.append(Phase(int(runs), _number(m.group(2), "seconds", line),
                                None if m.group(3) is None else _number(m.group(3), "seconds", line)))
        return
    if STAT_START.match(body):
        if not out.phases or out.phases[-1].stat is not None:
            raise ParseError(f"benchmark_model output: statistics line outside a benchmark phase: {line!r}")
        out.phases[-1].stat = Stat.parse(body)
        return
    if m := INIT.match(body):
        out.init_ms = _number(m.group(1), "initialisation time", line)
        return
    if body.startswith("Initialized session in"):
        raise ParseError(f"benchmark_model output: unreadable initialisation line {line!r}")
    if m := TIMINGS.match(body):
        for part in m.group(2).split(","):
            label, sep, value = part.strip().rpartition(": ")
            if not sep:
                raise ParseError(f"benchmark_model output: unreadable timing {part!r} in line {line!r}")
            key = TIMING_KEYS.get(label)
            if key is None:
                continue
            v = _number(value, label, line, allow_nan=key == "warmup_avg_us")
            out.timings_us[key] = None if math.isnan(v) else v
        if "inference_avg_us" not in out.timings_us:
            raise ParseError(f"benchmark_model output: timings line without the inference average: {line!r}")
        return
    if m := MEMORY.match(body):
        kind = "delta" if body.startswith("Memory") else "peak"
        out.memory_mb[f"{kind}_init"] = _number(m.group(2), "memory", line, signed=kind == "delta")
        out.memory_mb[f"{kind}_overall"] = _number(m.group(3), "memory", line, signed=kind == "delta")
        return
    if m := RSS.match(body):
        out.memory_mb[m.group(1).lower().replace(" + ", "_")] = _number(m.group(2), "memory", line)
        return
    for prefix, key in SIMPLE.items():
        if body.startswith(prefix):
            value = body[len(prefix):].strip()
            if key in ("num_threads", "cpu_threads", "graph"):
                value = value[1:-1] if value.startswith("[") and value.endswith("]") else value
            if key in ("model_size_mb", "peak_memory_mb", "num_threads", "cpu_threads"):
                out.info[key] = _number(value, key, line)
            else:
                out.info[key] = value
            return


# --- the command line --------------------------------------------------------------------------

@dataclass
class BenchmarkRunResult(RunResult):
    """A benchmark_model measurement: ``timed_ms`` is the binary's mean; ``statistics`` its own figures (ms)."""

    statistics: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float | None]:
        s = self.statistics
        median = s.get("median_ms") if s.get("median_ms") is not None else s["avg_ms"]
        # benchmark_model prints std=0 for a single run: one run has no spread (None, as harness's own runs)
        std = s["std_ms"] if (self.n_runs or 0) > 1 else None
        return {"median_ms": median, "mean_ms": s["avg_ms"], "std_ms": std, "min_ms": s["min_ms"],
                "p90_ms": None}  # benchmark_model prints p95, not p90


def run_result(text: str, rc: int, *, where: str, timed_runs: int, before: dict[str, Any],
               after: dict[str, Any]) -> BenchmarkRunResult:
    """One benchmark_model run's output as a RunResult (shared by the ADB and SSH drivers): a failing
    binary is DeviceError, too few timed runs MeasurementTimeout, unreadable numbers ParseError."""
    out = parse_output(text)
    if rc != 0:
        errors = "; ".join(out.errors[-3:]) or text.strip()[-300:]
        raise DeviceError(f"benchmark_model failed on {where} (exit {rc}): {errors}", detail=text[-4000:])
    if out.errors and any("delegate" in e.lower() for e in out.errors):
        # benchmark_model went on without the delegate asked for: a CPU latency under the delegate's name
        raise DeviceError(f"benchmark_model on {where} reported {'; '.join(out.errors[-3:])} and went on without "
                          "it: the latency would be the CPU's, so none is stored; check runtime.delegate on this "
                          "device", detail=text[-4000:])
    timed = out.timed_stat()
    if timed.count < timed_runs:
        raise MeasurementTimeout(f"benchmark_model stopped after {timed.count} of {timed_runs} timed runs "
                                 f"(its --max_secs)")
    warm = out.warmup.stat if out.warmup else None
    stats = timed.as_ms()
    if not stats["avg_ms"] or stats["avg_ms"] <= 0:  # type: ignore[operator]
        raise ParseError(f"benchmark_model reports an average of {timed.avg_us} us over {timed.count} runs; "
                         "a latency must be above 0 (below the tool's 1 us resolution?)")
    after = {**after, "benchmark_model": {
        "timed": stats,
        "warmup": warm.as_ms() if warm else None,
        "timings_us": out.timings_us,
        "memory_mb": out.memory_mb,
        "model_size_mb": out.info.get("model_size_mb"),
        "per_run_latencies": False,
        "timed_ms_holds": "benchmark_model's mean of the timed runs",
        "median_is": "benchmark_model's median" if timed.median_us is not None else "benchmark_model's mean",
        "warnings": out.warnings[-5:],
    }}
    if out.errors:  # exit 0 all the same: the visit is kept, marked suspect with them (campaign.judge)
        after["tool_errors"] = out.errors[-5:]
    return BenchmarkRunResult(timed_ms=[stats["avg_ms"]], warmup_ms=[], init_ms=out.init(),  # type: ignore
                              conditions_before=before, conditions_after=after, per_run=False,
                              n_runs=timed.count, statistics=stats)


DELEGATE_FLAGS = {"cpu": [], "xnnpack": ["--use_xnnpack=true"], "reference": ["--use_xnnpack=false"],
                  "gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"], "hexagon": ["--use_hexagon=true"]}


def command(binary: str, graph: str, *, threads: int, warmup_runs: int, num_runs: int, min_secs: float,
            max_secs: float, delegate: str = "cpu", taskset: str | None = None) -> list[str]:
    """argv of one benchmark_model run (the caller quotes it for the device shell).

    ``--warmup_min_secs=0`` makes the warm-up exactly ``warmup_runs`` runs (the default is 0.5 s);
    ``--max_secs`` is set above the driver's own timeout so that the binary never cuts the timed runs short.
    """
    argv = [binary, f"--graph={graph}", f"--num_threads={threads}", f"--warmup_runs={warmup_runs}",
            "--warmup_min_secs=0", f"--num_runs={num_runs}", f"--min_secs={min_secs:g}",
            f"--max_secs={max_secs:g}", *DELEGATE_FLAGS[delegate]]
    return ["taskset", taskset, *argv] if taskset else argv
