"""TFLite's ``benchmark_model`` over SSH: ARM Linux boards (Raspberry Pi, a Jetson's CPU) timed the way
their users time them, with the same command line and the same output parser as the ADB driver
(:mod:`harness.devices.adb_benchmark`).

Selected for an SSH profile with ``runtime.name: tflite`` and ``connection.benchmark_model`` (the binary's
path on the device). The SSH driver's connection, host-key checks, content-named pushes and reconnects
are reused; no Python runner is started on the device. Conditions are read from sysfs before and after
each model (CPU frequency, temperatures), like the runner reads them.
"""

from __future__ import annotations

import time
from typing import Any

from harness.devices import adb_benchmark
from harness.devices.driver import CheckReport, RunResult
from harness.devices.shell import SSHShell
from harness.devices.ssh import SSHDriver
from harness.errors import ConnectionLost, DeviceError, DriverError, DriverUnavailable

CPU = "/sys/devices/system/cpu"


class SSHBenchmarkModelDriver(SSHDriver):
    stops_adaptively = False  # benchmark_model times --num_runs (policy.timed_runs)
    def __init__(self, profile):
        super().__init__(profile)
        self.shell: SSHShell | None = None
        self.binary = profile.connection.benchmark_model

    def _read(self, path: str) -> str | None:
        try:
            return self.shell.read_text(path).strip()  # type: ignore[union-attr]
        except (OSError, DriverError):
            return None

    def _dynamic(self) -> dict[str, Any]:
        freq = {}
        for i in range(64):
            f = self._read(f"{CPU}/cpu{i}/cpufreq/scaling_cur_freq")
            if f is None:
                if i and self._read(f"{CPU}/cpu{i}/online") is None:
                    break
                continue
            if f.isdigit():
                freq[f"cpu{i}"] = int(f) / 1000.0
        temps = {}
        for z in range(16):
            t = self._read(f"/sys/class/thermal/thermal_zone{z}/temp")
            if t is None:
                break
            if t.lstrip("-").isdigit():
                temps[self._read(f"/sys/class/thermal/thermal_zone{z}/type") or f"zone{z}"] = int(t) / 1000.0
        return {"cpu_freq_mhz": freq or None, "temperatures_c": temps or None}

    def stability(self) -> dict[str, Any]:
        """No Python runner on the device to sample other processes: `devices check` says it cannot observe (it
        asked the runner channel this driver never opens, and crashed)."""
        return {}

    def state(self) -> dict[str, Any]:
        """Frequencies (with each CPU's hardware maximum: a min_freq_ratio gate was never observable without it)
        and temperatures read over the shell, for gating."""
        if self.shell is None:
            self._start()
        now = self._dynamic()
        top = {}
        for cpu in now.get("cpu_freq_mhz") or {}:
            f = self._read(f"{CPU}/{cpu}/cpufreq/cpuinfo_max_freq")
            if f and f.isdigit():
                top[cpu] = int(f) / 1000.0
        return {**now, "max_freq_mhz": top or None}

    def _start(self) -> None:  # connect, check the binary; no Python runner on the device
        self._open_session()
        self.shell = SSHShell(self.client, self.sftp, self.profile.name)
        found = self.shell.run(["test", "-x", self.binary], timeout=self.conn.connect_timeout_s + 20)
        if found.code != 0:
            raise DriverUnavailable(
                f"{self.profile.name}: connection.benchmark_model: no executable at {self.binary!r} on the device. "
                "Copy TFLite's benchmark_model for the board (e.g. linux_aarch64) there and chmod +x it, or fix "
                "the path.")
        # which build timed the models, as the ADB driver records it: an upgraded binary shows in the provenance
        summed = self.shell.run(["sha256sum", self.binary], timeout=60)
        sha = summed.stdout.split()[0] if summed.code == 0 and summed.stdout.split() else None
        model = self._read("/proc/device-tree/model")
        self.hello = {"conditions": {
            "device_model": model.rstrip("\x00") if model else None,
            "kernel": self.shell.run(["uname", "-r"], timeout=30).stdout.strip() or None,
            "machine": self.shell.run(["uname", "-m"], timeout=30).stdout.strip() or None,
            "governor": self._read(f"{CPU}/cpu0/cpufreq/scaling_governor"),
            "runtime": "tflite", "runtime_version": f"benchmark_model sha256:{sha[:16]}" if sha else "benchmark_model",
            "benchmark_model": self.binary,
            "threads": self.profile.runtime.threads, "delegate": self.profile.runtime.delegate}}

    def prepare(self) -> dict[str, Any]:
        def op() -> dict[str, Any]:
            if self.client is None or self.shell is None:
                self._start()
            return dict(self.hello["conditions"])

        return self._with_reconnect("connect", op)

    def check(self) -> CheckReport:
        try:
            facts = self.prepare()
        except DriverError as e:
            return CheckReport(False, None if e.before_contact else isinstance(e, DriverUnavailable), "tflite",
                               message=str(e))
        finally:
            self.cleanup()
        return CheckReport(True, True, "tflite", facts.get("runtime_version") or "benchmark_model",
                           details={"benchmark_model": self.binary, "device": facts.get("device_model")})

    def run(self, model_ref: str) -> RunResult:
        rt, pol = self.profile.runtime, self.profile.policy

        def op() -> RunResult:
            if self.client is None or self.shell is None:
                self._start()
            argv = adb_benchmark.command(self.binary, model_ref, threads=rt.threads, warmup_runs=pol.warmup_runs,
                                         num_runs=pol.timed_runs, min_secs=pol.min_seconds,
                                         max_secs=pol.timeout_seconds + 1, delegate=rt.delegate)
            before = self._dynamic()
            started = time.perf_counter()
            done = self.shell.run(argv, timeout=pol.timeout_seconds)  # type: ignore[union-attr]
            if done.code == -1 and not self._alive():  # paramiko's "no exit status": the board went away mid-run
                raise ConnectionLost(f"{self.profile.name}: the connection dropped while benchmark_model ran")
            after = {**self._dynamic(), "wall_s": round(time.perf_counter() - started, 4)}
            text = done.stdout + ("\n" + done.stderr if done.stderr else "")
            return adb_benchmark.run_result(text, done.code, where=self.profile.name, timed_runs=pol.timed_runs,
                                            before=before, after=after)

        try:
            return self._with_reconnect("run", op)
        except FileNotFoundError:
            raise DeviceError(f"{self.profile.name}: benchmark_model disappeared from {self.binary}") from None

    def cleanup(self) -> None:
        self.shell = None
        super().cleanup()
