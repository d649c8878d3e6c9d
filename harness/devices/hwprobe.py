"""GPU, Jetson and energy readings: NVML, Jetson sysfs, RAPL powercap, battery.

Standalone (standard library; ``pynvml`` from nvidia-ml-py only if installed) because it runs where the
models run: next to ``runner.py`` locally, copied beside it on SSH devices. Every reader takes a root
folder (``/`` on a device, a recorded sysfs tree in tests) or an NVML module (pynvml, or the fake
``harness.sim.nvml`` in tests); a missing file or an unsupported call means the fact is absent.

Energy meters run the model back to back in a pass of their own after the timed runs
(``measure(invoke, min_s)`` -> millijoules per inference and how they were read): cumulative counters
where the hardware has them (NVML total energy on Volta and later, RAPL ``energy_uj`` with wrap-around),
else power sampled every 10 ms on a thread and integrated (NVML power, the Jetson INA3221 rails, a phone's
battery current x voltage, marked coarse). A counter is read between two of its own steps: NVML's moves
every 100 ms (read on an H200, driver 580), so a window read at arbitrary times is off by up to a step at
each end (0 or twice the energy of a 100 ms window).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

# NVML clock event reasons (nvml.h): 0x2 = clocks set by the user (nvidia-smi -lgc / -ac), i.e. locked
REASONS = {0x1: "gpu_idle", 0x2: "user_defined_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
           0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
           0x100: "display_clock"}


def _read(root: str, path: str) -> str | None:
    try:
        with open(os.path.join(root, path.lstrip("/"))) as f:
            return f.read().strip().rstrip("\x00")
    except (OSError, UnicodeDecodeError):
        return None


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def load_nvml():
    """pynvml, initialised, or None (not installed, no driver, no GPU)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # NVMLError_NotSupported and friends: the fact is absent on this GPU
        return None


def _text(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def nvml_static(nvml, index: int = 0) -> dict[str, Any]:
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    cuda = _try(nvml.nvmlSystemGetCudaDriverVersion)
    return {"gpu_name": _text(_try(lambda: nvml.nvmlDeviceGetName(h))),
            "gpu_uuid": _text(_try(lambda: nvml.nvmlDeviceGetUUID(h))),
            "nvidia_driver": _text(_try(nvml.nvmlSystemGetDriverVersion)),
            "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None,
            "persistence_mode": _try(lambda: bool(nvml.nvmlDeviceGetPersistenceMode(h))),
            "max_sm_clock_mhz": _try(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)),
            "max_mem_clock_mhz": _try(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM))}


def nvml_dynamic(nvml, index: int = 0) -> dict[str, Any]:
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    util = _try(lambda: nvml.nvmlDeviceGetUtilizationRates(h))
    reasons = _try(lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(h))
    if reasons is None:
        reasons = _try(lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(h))
    power = _try(lambda: nvml.nvmlDeviceGetPowerUsage(h))
    return {"sm_clock_mhz": _try(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
            "mem_clock_mhz": _try(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)),
            "app_sm_clock_mhz": _try(lambda: nvml.nvmlDeviceGetApplicationsClock(h, nvml.NVML_CLOCK_SM)),
            "gpu_temperature_c": _try(lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            "gpu_power_w": power / 1000.0 if isinstance(power, (int, float)) else None,
            "gpu_util_pct": getattr(util, "gpu", None), "mem_util_pct": getattr(util, "memory", None),
            "clock_event_reasons": [n for bit, n in REASONS.items() if reasons & bit] if isinstance(reasons, int)
            else None,
            "clocks_locked": bool(reasons & 0x2) if isinstance(reasons, int) else None}


# --- Jetson -------------------------------------------------------------------------------------

JETSON_GPU = ("/sys/devices/gpu.0/devfreq/57000000.gpu", "/sys/devices/17000000.gv11b/devfreq/17000000.gv11b",
              "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b", "/sys/devices/gpu.0/devfreq/17000000.gp10b")
EMC_RATE = ("/sys/kernel/debug/bpmp/debug/clk/emc/rate", "/sys/kernel/debug/clk/emc/clk_rate")


def _reader(root: str | Callable[[str], str | None]) -> Callable[[str], str | None]:
    """Files under a root folder (this machine's, or a recorded tree), or a device's own reader (trtexec over SSH
    reads a Jetson's files through the connection: no Python on the device)."""
    return root if callable(root) else (lambda path: _read(root, path))


def is_jetson(root: str | Callable[[str], str | None] = "/") -> bool:
    rd = _reader(root)
    return rd("/etc/nv_tegra_release") is not None or "jetson" in (rd("/proc/device-tree/model") or "").lower()


def jetson_power_mode(root: str | Callable[[str], str | None] = "/") -> dict[str, Any]:
    """nvpmodel's current mode: its status file (``pmode:0000``) and the mode's name from /etc/nvpmodel.conf."""
    rd = _reader(root)
    status = rd("/var/lib/nvpmodel/status") or ""
    mode = _int(status.split(":", 1)[1]) if status.startswith("pmode:") else None
    name = None
    for line in (rd("/etc/nvpmodel.conf") or "").splitlines():
        line = line.strip()
        if line.startswith("< POWER_MODEL") and f"ID={mode}" in line.replace(" ", "").split("NAME=")[0]:
            name = line.split("NAME=", 1)[1].rstrip(">").strip() if "NAME=" in line else None
    return {"power_mode_id": mode, "power_mode": name}


def jetson_conditions(root: str | Callable[[str], str | None] = "/") -> dict[str, Any] | None:
    rd = _reader(root)
    if not is_jetson(rd):
        return None
    gpu = next((g for g in JETSON_GPU if rd(f"{g}/cur_freq") is not None), None)
    gpu_cur = _int(rd(f"{gpu}/cur_freq")) if gpu else None
    gpu_min = _int(rd(f"{gpu}/min_freq")) if gpu else None
    gpu_max = _int(rd(f"{gpu}/max_freq")) if gpu else None
    cpu_min = _int(rd("/sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq"))
    cpu_max = _int(rd("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq"))
    emc = next((_int(rd(p)) for p in EMC_RATE if rd(p) is not None), None)
    # jetson_clocks pins every clock at its maximum: min == max for the GPU and the CPUs
    clocks_on = (gpu_min == gpu_max and cpu_min == cpu_max) if None not in (gpu_min, gpu_max, cpu_min, cpu_max) \
        else None
    return {"jetson_model": rd("/proc/device-tree/model"), **jetson_power_mode(rd),
            "jetson_clocks": clocks_on, "gpu_freq_mhz": gpu_cur / 1e6 if gpu_cur else None,
            "gpu_max_freq_mhz": gpu_max / 1e6 if gpu_max else None, "emc_freq_mhz": emc / 1e6 if emc else None}


def ina_rails(root: str = "/") -> dict[str, Callable[[], float | None]]:
    """Jetson INA3221 rails -> a reader of their power in mW (Nano/TX2 iio layout, Xavier/Orin hwmon)."""
    rails: dict[str, Callable[[], float | None]] = {}
    base = os.path.join(root, "sys/bus/i2c/drivers")
    for drv in ("ina3221x", "ina3221"):
        d = os.path.join(base, drv)
        if not os.path.isdir(d):
            continue
        for dev in sorted(os.listdir(d)):
            path = os.path.join(d, dev)
            for iio in sorted(p for p in _ls(path) if p.startswith("iio:device")):
                for ch in range(3):
                    name = _read(path, f"{iio}/rail_name_{ch}")
                    if name:
                        rails[name] = (lambda p=os.path.join(path, iio, f"in_power{ch}_input"):
                                       _float(_read("/", p)))
            hw = os.path.join(path, "hwmon")
            for mon in sorted(_ls(hw)):
                for ch in range(1, 4):
                    name = _read(os.path.join(hw, mon), f"in{ch}_label")
                    if name and "sum" not in name.lower():
                        rails[name] = (lambda m=os.path.join(hw, mon), c=ch: _mul(
                            _float(_read(m, f"in{c}_input")), _float(_read(m, f"curr{c}_input")), 1e-3))
    return rails


def _ls(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _mul(a: float | None, b: float | None, k: float) -> float | None:
    return a * b * k if a is not None and b is not None else None


# --- energy -------------------------------------------------------------------------------------

class CounterMeter:
    """A cumulative energy counter read before and after (exact to the counter's resolution)."""

    def __init__(self, method: str, read_mj: Callable[[], float | None], wrap_mj: float | None = None):
        self.method, self.read_mj, self.wrap_mj = method, read_mj, wrap_mj
        self.t0: float | None = None

    def start(self) -> None:
        self.t0 = self.read_mj()

    def stop(self, n: int) -> float | None:
        t1 = self.read_mj()
        if self.t0 is None or t1 is None or n < 1:
            return None
        return self._per(t1 - self.t0, n)

    def _per(self, delta: float, n: float) -> float | None:
        if delta < 0 and self.wrap_mj:
            delta += self.wrap_mj
        return delta / n if delta >= 0 and n > 0 else None

    def measure(self, invoke: Callable[[], Any], min_s: float, poll_s: float = 0.001,
                max_s: float | None = None) -> tuple[float | None, dict[str, Any]]:
        """mJ per inference between the counter's first and last step seen while the model runs back to back
        for at least ``min_s``. A thread notes when the counter moves; each inference counts by the share of
        its own time that lies between those two moments (an inference as long as a step, or longer, is
        neither dropped nor counted whole). None, with why, when the counter moved fewer than twice within
        ``max_s`` (default ``2 min_s + 1``) or went backwards."""
        max_s = max_s if max_s is not None else 2 * min_s + 1.0
        steps: list[tuple[float, float]] = []
        stop = threading.Event()

        def poll() -> None:
            last = None
            while not stop.is_set():
                v = self.read_mj()
                if v is not None:
                    if last is not None and v != last:  # the first reading is where the counter stood, not a step
                        steps.append((time.perf_counter(), v))
                    last = v
                stop.wait(poll_s)

        thread = threading.Thread(target=poll, daemon=True)
        spans: list[tuple[float, float]] = []
        t0 = time.perf_counter()
        thread.start()
        try:
            while True:
                s = time.perf_counter()
                invoke()
                e = time.perf_counter()
                spans.append((s, e))
                if len(steps) >= 2 and steps[-1][0] - steps[0][0] >= min_s:
                    break
                if e - t0 > max_s:
                    break
        finally:
            stop.set()
            thread.join(timeout=5.0)  # a read that hangs must not hold the visit: the daemon thread is left
        seen = list(steps)
        facts: dict[str, Any] = {"runs": len(spans), "steps": max(len(seen) - 1, 0)}
        if len(seen) < 2:
            return None, {**facts, "why": f"the counter moved {len(seen)} time(s) in {max_s:g} s"}
        (ta, ea), (tb, eb) = seen[0], seen[-1]
        n = sum(max(0.0, min(e, tb) - max(s, ta)) / (e - s) for s, e in spans if e > s)
        facts.update(window_s=round(tb - ta, 4), runs=round(n, 3))
        per = self._per(eb - ea, n)
        if per is None:
            why = "the counter went backwards (a reset)" if eb < ea else "no inference ran between two steps"
            return None, {**facts, "why": why}
        return per, facts


class PowerMeter:
    """Power sampled every ``period_s`` on a thread and integrated (trapezoids) over the timed runs."""

    def __init__(self, method: str, read_mw: Callable[[], float | None], period_s: float = 0.01):
        self.method, self.read_mw, self.period_s = method, read_mw, period_s
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while True:
            p = self.read_mw()
            if p is not None:
                self._samples.append((time.perf_counter(), p))
            if self._stop.wait(self.period_s):
                break

    def start(self) -> None:
        self._samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self, n: int) -> float | None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        p = self.read_mw()
        if p is not None:
            self._samples.append((time.perf_counter(), p))
        s = self._samples
        if len(s) < 2 or n < 1:
            return None
        energy_mj = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(s, s[1:]))  # mW * s = mJ
        return energy_mj / n

    def measure(self, invoke: Callable[[], Any], min_s: float) -> tuple[float | None, dict[str, Any]]:
        """mJ per inference, the power integrated while the model runs back to back for ``min_s``."""
        self.start()
        t0, n = time.perf_counter(), 0
        while n == 0 or time.perf_counter() - t0 < min_s:
            invoke()
            n += 1
        window = time.perf_counter() - t0
        per = self.stop(n)
        facts: dict[str, Any] = {"runs": n, "window_s": round(window, 4), "samples": len(self._samples)}
        return per, facts if per is not None else {**facts, "why": "fewer than two power readings"}


def rapl_meter(root: str = "/") -> CounterMeter | None:
    """The package domains of /sys/class/powercap (intel-rapl:N), summed; µJ counters with wrap-around."""
    base = "sys/class/powercap"
    domains = sorted(d for d in _ls(os.path.join(root, base)) if d.count(":") == 1 and d.startswith("intel-rapl"))
    domains = [d for d in domains if _read(root, f"{base}/{d}/energy_uj") is not None]
    if not domains:
        return None
    ranges = {d: _int(_read(root, f"{base}/{d}/max_energy_range_uj")) for d in domains}
    last: dict[str, int] = {}
    total_uj = [0.0]

    def read() -> float | None:
        """Energy since the first read, each package unwrapped on its own (one may wrap while another does not)."""
        vals = {d: _int(_read(root, f"{base}/{d}/energy_uj")) for d in domains}
        if None in vals.values():
            return None
        for d, v in vals.items():
            if d in last:
                delta = v - last[d]  # type: ignore[operator]
                if delta < 0 and ranges[d]:
                    delta += ranges[d]  # type: ignore[operator]
                total_uj[0] += max(delta, 0)
            last[d] = v  # type: ignore[assignment]
        return total_uj[0] / 1000.0

    return CounterMeter("rapl", read)


def nvml_meter(nvml, index: int = 0) -> CounterMeter | PowerMeter | None:
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    if _try(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h)) is not None:
        return CounterMeter("nvml-energy", lambda: _try(lambda: float(nvml.nvmlDeviceGetTotalEnergyConsumption(h))))
    if _try(lambda: nvml.nvmlDeviceGetPowerUsage(h)) is not None:  # pre-Volta: integrate the power reading
        return PowerMeter("nvml-power", lambda: _try(lambda: float(nvml.nvmlDeviceGetPowerUsage(h))))
    return None


def jetson_meter(root: str = "/") -> PowerMeter | None:
    rails = ina_rails(root)
    total = next((r for n, r in rails.items() if "IN" in n.upper() and ("5V" in n.upper() or "VDD_IN" in n.upper())),
                 None)
    if total is None:
        return None
    return PowerMeter("jetson-ina", total)


def battery_meter(root: str = "/") -> PowerMeter | None:
    """A phone's battery current x voltage (µA x µV): coarse (the gauge updates slowly, the screen counts)."""
    base = "sys/class/power_supply/battery"
    if _read(root, f"{base}/current_now") is None or _read(root, f"{base}/voltage_now") is None:
        return None

    def read_mw() -> float | None:
        p = _mul(_float(_read(root, f"{base}/current_now")), _float(_read(root, f"{base}/voltage_now")), 1e-9)
        return abs(p) if p is not None else None  # discharge current is negative on some phones

    return PowerMeter("battery-coarse", read_mw)


def energy_meter(method: str, root: str = "/", nvml=None, index: int = 0, gpu: bool = True):
    """The meter for ``method`` (nvml, rapl, jetson_ina, battery, auto: the first the device has), or None.
    ``auto`` for a model that does not run on an NVIDIA GPU (``gpu`` False) skips NVML: on a GPU box it gave a CPU
    model the idle GPU's power times the CPU's latency."""
    order = (["nvml"] if gpu else []) + ["jetson_ina", "rapl", "battery"] if method == "auto" else [method]
    for m in order:
        meter = None
        if m == "nvml":
            nv = nvml if nvml is not None else load_nvml()
            meter = nvml_meter(nv, index) if nv is not None else None
        elif m == "jetson_ina":
            meter = jetson_meter(root)
        elif m == "rapl":
            meter = rapl_meter(root)
        elif m == "battery":
            meter = battery_meter(root)
        if meter is not None:
            return meter
    return None
