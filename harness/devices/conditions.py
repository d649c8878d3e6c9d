"""The one vocabulary of recorded conditions, for every driver.

``prepare()`` returns the campaign's static conditions and every ``RunResult`` carries dynamic ones before
and after the model. Whatever a driver can observe it records under these names and types (drivers may add
their own keys, e.g. the ADB driver's ``benchmark_model``); what it cannot observe it leaves out or sets to
None. The conformance suite checks every driver against this schema (:func:`check_conditions`).
"""

from __future__ import annotations

from typing import Any, TypedDict

PerCpu = dict[str, Any]  # "cpu0" -> value


class StaticConditions(TypedDict, total=False):
    runtime: str
    runtime_version: str
    threads: int
    device_model: str | None
    cpu_model: str | None
    cpu_count: int | None
    os: str | None
    kernel: str | None
    machine: str | None
    governors: dict[str, str] | None          # per CPU
    thermal_zones: dict[str, str]              # zone folder -> name used in temperatures_c


class DynamicConditions(TypedDict, total=False):
    time_unix: float
    cpu_freq_mhz: dict[str, float] | None      # per CPU, now
    governors: dict[str, str] | None          # per CPU, now (phones change them)
    temperatures_c: dict[str, float] | None   # thermal zone name (type, #2... when repeated) -> degrees C
    battery_temp_c: float | None
    loadavg_1m: float | None


# names drivers used before there was one schema -> the name to use
RENAMED = {"governor": "governors", "temperature_c": "temperatures_c"}

_TYPES: dict[str, tuple[type, ...]] = {
    "runtime": (str,), "runtime_version": (str,), "threads": (int,), "cpu_count": (int,),
    "governors": (dict,), "thermal_zones": (dict,), "time_unix": (float, int), "cpu_freq_mhz": (dict,),
    "temperatures_c": (dict,), "battery_temp_c": (float, int), "loadavg_1m": (float, int),
}


def check_conditions(conditions: dict[str, Any]) -> list[str]:
    """Problems with a conditions mapping against the schema ([] when it conforms)."""
    problems = [f"{old!r} is spelled {new!r}" for old, new in RENAMED.items() if old in conditions]
    for key, types in _TYPES.items():
        value = conditions.get(key)
        if value is not None and not isinstance(value, types):
            problems.append(f"{key} should be {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}")
    for key in ("cpu_freq_mhz", "temperatures_c"):
        for name, v in (conditions.get(key) or {}).items():
            if not isinstance(v, (int, float)):
                problems.append(f"{key}[{name!r}] should be a number, got {v!r}")
    return problems
