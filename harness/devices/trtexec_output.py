"""TensorRT's ``trtexec``: its stdout and its ``--exportTimes`` JSON, parsed.

Formats (TensorRT's ``samples/common/sampleReporting.cpp``, ``sampleDevice.cpp``, ``trtexec.cpp``):

* ``&&&& RUNNING|PASSED|FAILED TensorRT.trtexec [TensorRT v8601] # <command>``: the outcome and the
  version tag (v + major, minor, patch: 8601 = 8.6.1, 100001 = 10.0.1);
* log lines ``[MM/DD/YYYY-HH:MM:SS] [I] ...`` (``[W]``, ``[E]`` ...), among them ``TensorRT version: 8.6.1``,
  the ``=== Device Information ===`` block (``Selected Device: NAME``, ``Compute Capability: 8.6``, ...),
  ``Warmup completed N queries over X ms``, ``Timing trace has N queries over X s`` and the
  ``=== Performance summary ===`` (``Latency: min = .. ms, max = .. ms, mean = .. ms, median = .. ms,
  percentile(90%) = .. ms ...``);
* ``--exportTimes``: a JSON array with one object per query *including the warm-up queries*, each with
  ``startEnqMs endEnqMs startH2dMs endH2dMs startComputeMs endComputeMs startD2hMs endD2hMs h2dMs computeMs
  d2hMs latencyMs endToEndMs``. trtexec counts a query as warm-up when its compute started before the
  ``--warmUp`` time; the same rule splits them here.

A recognised line whose number does not parse raises ParseError; it never becomes a zero.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ParseError

STATUS = re.compile(r"^&&&& (RUNNING|PASSED|FAILED|WAIVED) TensorRT\.trtexec(?: \[TensorRT v(\d+)\])? # ?(.*)$")
LOG = re.compile(r"^\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\] \[([VIWEF])\] ?(.*)$")
PERF = re.compile(r"^(Latency|End-to-End Host Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency): "
                  r"(.*)$")
PERF_ITEM = re.compile(r"^(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = (\S+) ms$")
DEVICE_KEYS = {"Selected Device": "gpu_name", "Selected Device ID": "gpu_index", "Selected Device UUID": "gpu_uuid",
               "Compute Capability": "compute_capability", "SMs": "sms", "Device Global Memory": "gpu_memory",
               "Memory Bus Width": "memory_bus", "Application Compute Clock Rate": "app_compute_clock",
               "Application Memory Clock Rate": "app_memory_clock", "Compute Clock Rate": "app_compute_clock",
               "Memory Clock Rate": "app_memory_clock"}
TIME_KEYS = ("startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs", "startD2hMs",
             "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs", "endToEndMs")


def _number(text: str, what: str, line: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ParseError(f"trtexec output: {what} is not a number in line {line!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise ParseError(f"trtexec output: {what} is {text!r} in line {line!r}")
    return value


def version_from_tag(tag: str) -> str:
    """``8601`` -> ``8.6.1``; ``100001`` -> ``10.0.1`` (NV_TENSORRT_VERSION's two encodings)."""
    n = int(tag)
    if n >= 100000:  # TensorRT 10+: major * 10000 + minor * 100 + patch
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


@dataclass
class TrtexecOutput:
    status: str | None = None  # PASSED / FAILED / None (no final line: killed or not trtexec)
    version_tag: str | None = None
    tensorrt_version: str | None = None
    device: dict[str, str] = field(default_factory=dict)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)  # "GPU Compute Time" -> {"median": ..}
    warmup_queries: int | None = None
    warmup_ms: float | None = None
    timed_queries: int | None = None
    throughput_qps: float | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "PASSED"


def parse_output(text: str) -> TrtexecOutput:
    out = TrtexecOutput()
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        m = STATUS.match(line)
        if m:
            if m.group(1) != "RUNNING" or out.status is None:
                out.status = m.group(1) if m.group(1) != "RUNNING" else None
            if m.group(2):
                out.version_tag = m.group(2)
                out.tensorrt_version = out.tensorrt_version or version_from_tag(m.group(2))
            continue
        m = LOG.match(line)
        if not m:
            continue
        level, body = m.groups()
        if level in "EF":
            out.errors.append(body)
        elif level == "W":
            out.warnings.append(body)
        _parse_body(out, body.strip(), line)
    return out


def _parse_body(out: TrtexecOutput, body: str, line: str) -> None:
    if body.startswith("TensorRT version: "):
        out.tensorrt_version = body.split(": ", 1)[1].strip()
        return
    key, sep, value = body.partition(": ")
    if sep and key in DEVICE_KEYS and DEVICE_KEYS[key] not in out.device:
        out.device[DEVICE_KEYS[key]] = value.strip()
        return
    m = re.match(r"^Warmup completed (\S+) queries over (\S+) ms$", body)
    if m:
        out.warmup_queries = int(_number(m.group(1), "warm-up queries", line))
        out.warmup_ms = _number(m.group(2), "warm-up time", line)
        return
    m = re.match(r"^Timing trace has (\S+) queries over (\S+) s$", body)
    if m:
        out.timed_queries = int(_number(m.group(1), "timed queries", line))
        return
    m = re.match(r"^Throughput: (\S+) qps$", body)
    if m:
        out.throughput_qps = _number(m.group(1), "throughput", line)
        return
    m = PERF.match(body)
    if m:
        stats: dict[str, float] = {}
        for item in m.group(2).split(", "):
            im = PERF_ITEM.match(item.strip())
            if not im:
                raise ParseError(f"trtexec output: cannot read {item!r} in line {line!r}")
            name = f"p{im.group(2)}" if im.group(2) else im.group(1)
            stats[name] = _number(im.group(3), f"{m.group(1)} {name}", line)
        out.summary[m.group(1)] = stats


def parse_times(text: str, warmup_ms: float,
                timed_queries: int | None = None) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(warm-up queries, timed queries) from an ``--exportTimes`` file, split as trtexec splits them: by start
    time against the warm-up, or, given trtexec's own count (``Timing trace has N queries``), its last N queries:
    the file's times are rounded (6 significant digits), so a query starting at the warm-up's end fell either
    side of it (a visit of 20 timed runs kept 21)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"trtexec --exportTimes file is not JSON: {e}") from None
    if not isinstance(data, list):
        raise ParseError("trtexec --exportTimes file: expected a JSON array of queries")
    queries: list[dict[str, float]] = []
    for i, q in enumerate(data):
        if not isinstance(q, dict) or not {"startComputeMs", "computeMs", "latencyMs"} <= set(q):
            raise ParseError(f"trtexec --exportTimes file: query {i} lacks startComputeMs/computeMs/latencyMs")
        row: dict[str, float] = {}
        for k in TIME_KEYS:
            if k in q:
                v = q[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ParseError(f"trtexec --exportTimes file: query {i} {k} is {v!r}")
                row[k] = float(v)
        if row["computeMs"] < 0 or row["latencyMs"] < 0:
            raise ParseError(f"trtexec --exportTimes file: query {i} has a negative time")
        queries.append(row)
    warm = [q for q in queries if q["startComputeMs"] < warmup_ms]
    timed = [q for q in queries if q["startComputeMs"] >= warmup_ms]
    if timed_queries and len(timed) != timed_queries and 0 < timed_queries <= len(queries):
        warm, timed = queries[:-timed_queries], queries[-timed_queries:]
    if not timed:
        raise ParseError(f"trtexec --exportTimes file has no query after the {warmup_ms:g} ms warm-up")
    return warm, timed


def conditions(out: TrtexecOutput) -> dict[str, Any]:
    """What a trtexec run says about the device, for the store's conditions."""
    return {"tensorrt": out.tensorrt_version, "tensorrt_tag": out.version_tag, **out.device}
