"""Conditions of this Linux/macOS host, read where the OS exposes them (pyperf's metadata idea).

Static facts (CPU model, kernel) are read once per campaign; dynamic ones (frequency, temperature,
load) before and after every model, because thermal drift is what flips rankings.
Every probe is best-effort: a missing file means the fact is absent, not an error.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

_CPU = Path("/sys/devices/system/cpu")
_THERMAL = Path("/sys/class/thermal")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_model() -> str | None:
    text = _read(Path("/proc/cpuinfo")) or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Model"):
            return value.strip()
    return platform.processor() or None


def governors() -> dict[str, str]:
    out = {}
    for d in sorted(_CPU.glob("cpu[0-9]*")):
        g = _read(d / "cpufreq" / "scaling_governor")
        if g:
            out[d.name] = g
    return out


def frequencies_mhz() -> dict[str, float]:
    out = {}
    for d in sorted(_CPU.glob("cpu[0-9]*")):
        f = _read(d / "cpufreq" / "scaling_cur_freq")
        if f and f.isdigit():
            out[d.name] = int(f) / 1000.0
    if not out:  # virtual machines often hide cpufreq; /proc/cpuinfo still has a nominal MHz
        mhz = [line.split(":")[1].strip() for line in (_read(Path("/proc/cpuinfo")) or "").splitlines()
               if line.startswith("cpu MHz")]
        out = {f"cpu{i}": float(v) for i, v in enumerate(mhz)}
    return out


def temperatures_c() -> dict[str, float]:
    out = {}
    for z in sorted(_THERMAL.glob("thermal_zone*")):
        t = _read(z / "temp")
        if t and t.lstrip("-").isdigit():
            out[_read(z / "type") or z.name] = int(t) / 1000.0
    return out


def static_conditions() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "governor": governors() or None,
    }


def dynamic_conditions() -> dict[str, Any]:
    out: dict[str, Any] = {"cpu_freq_mhz": frequencies_mhz() or None, "temperature_c": temperatures_c() or None}
    try:
        out["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        out["loadavg_1m"] = None
    return out
