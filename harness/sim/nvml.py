"""A fake NVML with pynvml's names, for testing GPU condition and energy readers without a GPU.

Only the calls harness uses, with pynvml's constants; unsupported queries raise ``NVMLError`` as the real
library does on GPUs without them (energy counters before Volta, application clocks on GeForce).
The state is plain attributes a test sets; ``energy_mj`` grows with ``power_mw`` while time passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801  (pynvml's name)
    pass


@dataclass
class Utilization:
    gpu: int
    memory: int


@dataclass
class FakeGPU:
    name: str = "NVIDIA GeForce GTX 1080 Ti"
    uuid: str = "GPU-5f1c0b5e-0d1e-4a1f-9c7c-0123456789ab"
    sm_clock: int = 1480
    mem_clock: int = 5505
    max_sm_clock: int = 1911
    max_mem_clock: int = 5505
    app_sm_clock: int | None = None  # GeForce: not supported
    temperature: int = 41
    power_mw: int = 62_000
    util: tuple[int, int] = (0, 0)
    persistence: int = 1
    reasons: int = 0x1  # idle
    energy_counter: bool = True  # Volta and later
    # the counter moves in steps: every 100 ms on an H200 (driver 580.159, read with harness's probe); 0 = smooth
    energy_period_s: float = 0.1
    _energy_mj: float = 1_000_000.0
    _t: float = field(default_factory=time.perf_counter)
    _t0: float = field(default_factory=time.perf_counter)
    _step: int = -1
    _shown: float = 0.0

    def energy(self) -> float:
        """The counter as NVML shows it: the energy accumulated up to the last step of the counter."""
        now = time.perf_counter()
        self._energy_mj += (now - self._t) * self.power_mw  # mW * s = mJ
        self._t = now
        if not self.energy_period_s:
            return self._energy_mj
        step = int((now - self._t0) // self.energy_period_s)
        if step != self._step:  # a new step: the value at its start, held until the next one
            since_step = (now - self._t0) - step * self.energy_period_s
            self._step, self._shown = step, self._energy_mj - since_step * self.power_mw
        return self._shown


class FakeNVML:
    """Module-like: ``fake.nvmlDeviceGetName(handle)`` and so on."""

    NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGPU] | None = None, driver: str = "535.104.05", cuda: int = 12020):
        self.gpus = gpus if gpus is not None else [FakeGPU()]
        self.driver, self.cuda = driver, cuda
        self.initialised = False

    def nvmlInit(self) -> None:  # noqa: N802
        self.initialised = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.initialised = False

    def _gpu(self, h: int) -> FakeGPU:
        if not self.initialised:
            raise NVMLError("Uninitialized")
        return self.gpus[h]

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        if not 0 <= i < len(self.gpus):
            raise NVMLError("Invalid Argument")
        return i

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        return self.cuda

    def nvmlDeviceGetName(self, h): return self._gpu(h).name  # noqa: E704,N802
    def nvmlDeviceGetUUID(self, h): return self._gpu(h).uuid  # noqa: E704,N802
    def nvmlDeviceGetPersistenceMode(self, h): return self._gpu(h).persistence  # noqa: E704,N802
    def nvmlDeviceGetTemperature(self, h, sensor): return self._gpu(h).temperature  # noqa: E704,N802
    def nvmlDeviceGetPowerUsage(self, h): return self._gpu(h).power_mw  # noqa: E704,N802
    def nvmlDeviceGetCurrentClocksEventReasons(self, h): return self._gpu(h).reasons  # noqa: E704,N802

    def nvmlDeviceGetUtilizationRates(self, h):  # noqa: N802
        return Utilization(*self._gpu(h).util)

    def nvmlDeviceGetClockInfo(self, h, kind):  # noqa: N802
        g = self._gpu(h)
        return g.sm_clock if kind in (NVML_CLOCK_SM, NVML_CLOCK_GRAPHICS) else g.mem_clock

    def nvmlDeviceGetMaxClockInfo(self, h, kind):  # noqa: N802
        g = self._gpu(h)
        return g.max_sm_clock if kind in (NVML_CLOCK_SM, NVML_CLOCK_GRAPHICS) else g.max_mem_clock

    def nvmlDeviceGetApplicationsClock(self, h, kind):  # noqa: N802
        g = self._gpu(h)
        if g.app_sm_clock is None:
            raise NVMLError_NotSupported("Not Supported")
        return g.app_sm_clock if kind in (NVML_CLOCK_SM, NVML_CLOCK_GRAPHICS) else g.mem_clock

    def nvmlDeviceGetTotalEnergyConsumption(self, h):  # noqa: N802
        g = self._gpu(h)
        if not g.energy_counter:
            raise NVMLError_NotSupported("Not Supported")
        return int(g.energy())
