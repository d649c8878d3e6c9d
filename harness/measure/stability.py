"""What endangers stable timing on a device, like ``pyperf system show``: facts in, warnings out.

Facts come from the device (the runner's ``stability`` op for local and SSH devices; ADB reads and
``dumpsys`` for phones); this module only judges them, so the rules are tested without a device.
"""

from __future__ import annotations

import re
from typing import Any

BUSY_PROCESS_SHARE = 0.10  # another process using 10 % of a CPU is worth naming
MAX_STEAL = 0.02


def warnings(facts: dict[str, Any]) -> list[str]:
    out = []
    gov = facts.get("governors") or {}
    bad = sorted({g for g in gov.values() if g != "performance"})
    if bad:
        how = ("on a rooted phone: `adb shell su -c 'for g in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; "
               "do echo performance > $g; done'`; unrooted phones cannot change it" if facts.get("kind") == "adb"
               else "set it with `cpupower frequency-set -g performance`, as root")
        out.append(f"CPU frequency governor is {', '.join(bad)}, not performance: frequency follows load ({how})")
    if facts.get("turbo") is True:
        out.append("turbo/boost is on: the clock depends on temperature and on the other cores' load")
    cpus = facts.get("cpu_count") or 1
    la = facts.get("loadavg_1m")
    if la is not None and la > 0.5 * cpus:
        out.append(f"load average {la:.2f} on {cpus} CPU(s): other work competes for the CPUs")
    for p in facts.get("busy_processes") or []:
        out.append(f"process {p['pid']} ({p['name']}) is using {p['cpu_share']:.0%} of a CPU")
    steal = facts.get("steal_share")
    if steal is not None and steal > MAX_STEAL:
        out.append(f"the hypervisor steals {steal:.0%} of the CPU time (a shared virtual machine)")
    if facts.get("isolated_cpus") == "" and cpus > 1 and facts.get("kind") in ("local", "ssh"):
        out.append("no isolated CPUs (isolcpus): the scheduler may put other work on the timing core")
    # phones
    level = facts.get("battery_level")
    if level is not None and level < 30:
        out.append(f"battery at {level} %: phones throttle when the battery is low")
    bt = facts.get("battery_temp_c")
    if bt is not None and bt > 38:
        out.append(f"battery temperature {bt:.1f} C: the phone may throttle; let it cool")
    if facts.get("charging") is True:
        out.append("the phone is charging: charging heats it and changes its power policy")
    if facts.get("screen_on") is True:
        out.append("the screen is on: the display and UI compete for the CPU and the thermal budget")
    status = facts.get("thermal_status")
    if status not in (None, 0):
        out.append(f"thermal status {status} (0 = none): the phone is already throttling")
    return out


def parse_dumpsys_battery(text: str) -> dict[str, Any]:
    """``dumpsys battery``: level, temperature (tenths of a degree) and whether any charger is on."""
    out: dict[str, Any] = {}
    if m := re.search(r"^\s*level:\s*(\d+)", text, re.M):
        out["battery_level"] = int(m.group(1))
    if m := re.search(r"^\s*temperature:\s*(-?\d+)", text, re.M):
        out["battery_temp_c"] = int(m.group(1)) / 10
    powered = re.findall(r"^\s*(?:AC|USB|Wireless|Dock) powered:\s*(true|false)", text, re.M)
    if powered:
        out["charging"] = "true" in powered
    return out


def parse_dumpsys_power(text: str) -> dict[str, Any]:
    if m := re.search(r"Display Power: state=(\w+)", text):
        return {"screen_on": m.group(1) == "ON"}
    if m := re.search(r"mWakefulness=(\w+)", text):
        return {"screen_on": m.group(1) == "Awake"}
    return {}


def parse_dumpsys_thermal(text: str) -> dict[str, Any]:
    if m := re.search(r"Thermal Status:\s*(\d+)", text):
        return {"thermal_status": int(m.group(1))}
    return {}
