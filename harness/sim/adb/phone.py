"""Who the virtual phone says it is: ``getprop`` values and plausible ``/sys`` and ``/proc`` files.

Presets mirror the OneProxy paper's phones (CPU clusters, SoC, Android version); any other name gives a
generic arm64 phone with that ``ro.product.model``. Temperatures warm up while models run and cool down
between them, and the current CPU frequency sits at the maximum while a benchmark runs, so the driver's
before/after conditions show plausible, changing values.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cluster:
    cpus: int
    min_khz: int
    max_khz: int
    part: str  # /proc/cpuinfo "CPU part"


@dataclass(frozen=True)
class Identity:
    model: str
    manufacturer: str
    device: str
    soc: str
    platform: str
    android: str
    sdk: int
    clusters: tuple[Cluster, ...]
    kernel: str = "4.14.190-perf+"

    @property
    def cpu_count(self) -> int:
        return sum(c.cpus for c in self.clusters)


PRESETS: dict[str, Identity] = {
    "s5e": Identity("SM-T720", "samsung", "gts5lwifi", "SM6150", "sm6150", "11", 30,
                    (Cluster(6, 300000, 1708800, "0xd05"), Cluster(2, 300000, 2016000, "0xd0b"))),
    "pixel3": Identity("Pixel 3", "Google", "blueline", "SDM845", "sdm845", "12", 31,
                       (Cluster(4, 300000, 1766400, "0x803"), Cluster(4, 825600, 2803200, "0x802"))),
    "pixel4": Identity("Pixel 4", "Google", "flame", "SM8150", "msmnile", "13", 33,
                       (Cluster(4, 300000, 1785600, "0xd05"), Cluster(3, 710400, 2419200, "0xd0d"),
                        Cluster(1, 825600, 2841600, "0xd0d"))),
    "virtual": Identity("Harness Virtual Phone", "harness", "virtual", "VIRT1", "virtual", "14", 34,
                        (Cluster(4, 300000, 1800000, "0xd05"), Cluster(4, 300000, 2400000, "0xd0b"))),
}


def identity(name: str | None) -> Identity:
    """A preset by name, or a generic phone whose model is ``name``."""
    if not name:
        return PRESETS["virtual"]
    if name in PRESETS:
        return PRESETS[name]
    base = PRESETS["virtual"]
    return Identity(name, base.manufacturer, base.device, base.soc, base.platform, base.android, base.sdk,
                    base.clusters, base.kernel)


@dataclass
class Thermal:
    """A toy thermal model: +0.8 °C per busy second up to 20 °C over ambient, decaying when idle."""

    ambient_c: float = 27.0
    heat_c: float = 0.0
    busy_since: float | None = None
    last: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _update(self) -> None:
        now = time.monotonic()
        dt, self.last = now - self.last, now
        if self.busy_since is not None:
            self.heat_c = min(20.0, self.heat_c + 0.8 * dt)
        else:
            self.heat_c *= 0.5 ** (dt / 30.0)

    def busy(self, on: bool) -> None:
        with self.lock:
            self._update()
            self.busy_since = time.monotonic() if on else None

    def celsius(self, offset: float = 0.0) -> float:
        with self.lock:
            self._update()
            return self.ambient_c + offset + self.heat_c


ZONES = ("cpu-0-0-usr", "cpu-1-0-usr", "gpuss-0-usr", "battery", "xo-therm", "skin-therm")


def properties(ident: Identity, serial: str) -> dict[str, str]:
    return {
        "ro.product.model": ident.model,
        "ro.product.manufacturer": ident.manufacturer,
        "ro.product.brand": ident.manufacturer.lower(),
        "ro.product.device": ident.device,
        "ro.product.name": ident.device,
        "ro.product.cpu.abi": "arm64-v8a",
        "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
        "ro.soc.manufacturer": "Qualcomm" if ident.soc.startswith("S") else "harness",
        "ro.soc.model": ident.soc,
        "ro.board.platform": ident.platform,
        "ro.hardware": ident.platform,
        "ro.build.version.release": ident.android,
        "ro.build.version.sdk": str(ident.sdk),
        "ro.build.type": "user",
        "ro.build.fingerprint": f"{ident.manufacturer.lower()}/{ident.device}/{ident.device}:{ident.android}/"
                                f"HARNESS.{ident.sdk}/1:user/release-keys",
        "ro.serialno": serial,
        # says what it is: a campaign's conditions (and the report's "machine") must not pass it off as the phone
        "ro.harness.virtual_phone": "1",
        "ro.debuggable": "0",
        "sys.boot_completed": "1",
    }


def virtual_files(ident: Identity, thermal: Thermal, busy: threading.Event) -> dict:
    """Device path -> callable giving the file's content (read each time, so values change)."""
    files: dict = {}
    cpu = "/sys/devices/system/cpu"
    n = ident.cpu_count
    files[f"{cpu}/online"] = files[f"{cpu}/possible"] = files[f"{cpu}/present"] = lambda: f"0-{n - 1}\n"
    index = 0
    for cl in ident.clusters:
        first = index
        for _ in range(cl.cpus):
            d = f"{cpu}/cpu{index}/cpufreq"
            files[f"{d}/scaling_governor"] = lambda: "schedutil\n"
            files[f"{d}/scaling_available_governors"] = lambda: "conservative powersave performance schedutil\n"
            files[f"{d}/cpuinfo_min_freq"] = files[f"{d}/scaling_min_freq"] = lambda c=cl: f"{c.min_khz}\n"
            files[f"{d}/cpuinfo_max_freq"] = files[f"{d}/scaling_max_freq"] = lambda c=cl: f"{c.max_khz}\n"
            files[f"{d}/scaling_cur_freq"] = lambda c=cl: f"{c.max_khz if busy.is_set() else c.min_khz * 2}\n"
            files[f"{d}/related_cpus"] = lambda a=first, b=first + cl.cpus - 1: " ".join(
                str(i) for i in range(a, b + 1)) + "\n"
            index += 1
    for i, zone in enumerate(ZONES):
        z = f"/sys/class/thermal/thermal_zone{i}"
        files[f"{z}/type"] = lambda t=zone: f"{t}\n"
        files[f"{z}/temp"] = lambda off=i * 1.5: f"{int(thermal.celsius(off) * 1000)}\n"
    bat = "/sys/class/power_supply/battery"
    files[f"{bat}/temp"] = lambda: f"{int(thermal.celsius(-1.0) * 10)}\n"  # tenths of a degree
    files[f"{bat}/capacity"] = lambda: "87\n"
    # µA (negative: discharging, as many phones report) and µV; more current while a model runs
    files[f"{bat}/current_now"] = lambda: "-1250000\n" if busy.is_set() else "-310000\n"
    files[f"{bat}/voltage_now"] = lambda: "3870000\n"
    files[f"{bat}/status"] = lambda: "Discharging\n"
    files["/proc/cpuinfo"] = lambda: _cpuinfo(ident)
    files["/proc/version"] = lambda: f"Linux version {ident.kernel} (harness@virtual-phone) #1 SMP PREEMPT\n"
    files["/proc/loadavg"] = lambda: ("1.02 0.80 0.61 2/1234 4321\n" if busy.is_set() else
                                      "0.12 0.30 0.41 1/1230 4321\n")
    files["/proc/meminfo"] = lambda: "MemTotal:        3738360 kB\nMemFree:          512344 kB\n" \
                                     "MemAvailable:    1623452 kB\n"
    return files


def _cpuinfo(ident: Identity) -> str:
    out, i = [], 0
    for cl in ident.clusters:
        for _ in range(cl.cpus):
            out.append(f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 "
                       f"crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x51\n"
                       f"CPU architecture: 8\nCPU variant\t: 0xd\nCPU part\t: {cl.part}\nCPU revision\t: 14\n")
            i += 1
    return "\n".join(out) + f"\nHardware\t: Qualcomm Technologies, Inc {ident.soc}\n"
