"""ADB driver: Android phones over TCP (``adb tcpip``) or USB, timed with TFLite's ``benchmark_model``.

Talks ADB itself through ``adb-shell`` (no adb server needed), authenticating with the standard
``~/.android/adbkey`` (created 0600 on first use, only when a phone asks) or the profile's key. For each
campaign it pushes ``benchmark_model`` when missing or changed (its sha256 is recorded); for each model it
pushes the .tflite under its content name (skipped when already there with the same size and hash), reads
the phone's conditions, runs ``[taskset MASK] benchmark_model --graph=... --num_threads=... --warmup_runs=...
--num_runs=... --min_secs=...`` and parses its output (:mod:`adb_benchmark`). Every argument reaching the
phone's shell goes through ``shlex.quote``; every connect and command has a timeout.

Errors: a dropped connection is :class:`ConnectionLost` (the campaign stops, finished results stay), a
phone that does not answer in time is :class:`MeasurementTimeout` (the connection is reset and re-opened
for the next model), a failing ``benchmark_model`` is :class:`DeviceError`, unreadable output is
:class:`ParseError`.

Per-run latencies: ``benchmark_model`` prints statistics of its runs (count, first, curr, min, max, avg,
std, and p5/median/p95 in LiteRT builds), never each run, and has no flag to do so. The driver does not
invent runs: :class:`BenchmarkRunResult` stores the binary's mean as the single value in ``timed_ms``,
reports the binary's own statistics as the measurement's summary (median = its median where printed,
else its mean) and keeps every printed statistic under ``conditions_after["benchmark_model"]``.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import stat as st
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from adb_shell import exceptions as adb_errors
from adb_shell.adb_device import AdbDevice
from adb_shell.auth.keygen import write_public_keyfile
from adb_shell.auth.sign_cryptography import CryptographySigner
from adb_shell.transport.base_transport import BaseTransport
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.devices import adb_benchmark
from harness.devices.adb_benchmark import BenchmarkRunResult  # noqa: F401  (re-exported: drivers' result type)
from harness.devices.driver import CheckReport, Driver, RunResult
from harness.devices.profile import VIRTUAL_SERIAL, ADBConnection, Profile
from harness.devices.runner import zone_names
from harness.devices.upload import upload_if_changed
from harness.errors import ConnectionLost, DeviceError, DriverError, DriverUnavailable, MeasurementTimeout
from harness.models.cache import Artifact, sha256_file

RC_MARK = "__harness_rc="
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CPU_DIR, THERMAL_DIR, BATTERY_TEMP = "/sys/devices/system/cpu", "/sys/class/thermal", \
    "/sys/class/power_supply/battery/temp"
BATTERY_CURRENT = "/sys/class/power_supply/battery/current_now"
BATTERY_VOLTAGE = "/sys/class/power_supply/battery/voltage_now"
T = TypeVar("T")


# --- transport and keys ------------------------------------------------------------------

class _LinkDown(Exception):
    """The TCP connection to the phone closed or reset."""


class _TcpTransport(BaseTransport):
    """adb-shell's TCP transport, except that a closed socket is an error (theirs retries until a timeout)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.sock: socket.socket | None = None

    def connect(self, transport_timeout_s: float | None) -> None:
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=transport_timeout_s)
        except TimeoutError:
            raise adb_errors.TcpTimeoutException(f"connecting to {self.host}:{self.port} timed out") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _socket(self, timeout: float | None) -> socket.socket:
        if self.sock is None:
            raise _LinkDown("not connected")
        self.sock.settimeout(timeout)
        return self.sock

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        try:
            data = self._socket(transport_timeout_s).recv(numbytes)
        except TimeoutError:
            raise adb_errors.TcpTimeoutException(f"no data from {self.host}:{self.port} "
                                                 f"within {transport_timeout_s} s") from None
        except OSError as e:
            raise _LinkDown(str(e)) from None
        if not data:
            raise _LinkDown("connection closed by the phone")
        return data

    def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
        try:
            self._socket(transport_timeout_s).sendall(data)
        except TimeoutError:
            raise adb_errors.TcpTimeoutException(f"sending to {self.host}:{self.port} timed out") from None
        except OSError as e:
            raise _LinkDown(str(e)) from None
        return len(data)


class KeyFileError(DeviceError):
    """The ADB key file cannot be read or created."""


def ensure_key(path: Path) -> None:
    """Create an ADB RSA key pair at ``path`` (private key 0600, ``.pub`` beside it) unless it exists."""
    pub = path.with_name(path.name + ".pub")
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    if not pub.exists():
        write_public_keyfile(str(path), str(pub))  # adb-shell's android_pubkey encoder


class _KeySigner:
    """Loads (creating if needed) the key only when a phone asks for authentication."""

    def __init__(self, path: Path):
        self.path = path
        self.asked = False  # set when the phone rejected the signature and we offered the public key
        self._signer: CryptographySigner | None = None

    def _load(self) -> CryptographySigner:
        if self._signer is None:
            try:
                ensure_key(self.path)
                self._signer = CryptographySigner(str(self.path))
            except (OSError, ValueError, TypeError) as e:
                raise KeyFileError(f"cannot use the ADB key {self.path}: {e}") from None
        return self._signer

    def Sign(self, data: bytes) -> bytes:  # noqa: N802 (adb-shell's signer interface)
        return self._load().Sign(data)

    def GetPublicKey(self) -> bytes:  # noqa: N802
        return self._load().GetPublicKey()


def _model_name(model: str | None, virtual: bool) -> str | None:
    """The phone's model; the virtual phone (``ro.harness.virtual_phone``) says so even when it plays a real one."""
    if virtual and "virtual phone" not in str(model).lower():
        return f"{model or 'unknown model'} (harness virtual phone)"
    return model


def _celsius(raw: float, tenths: bool = False) -> float:
    """Thermal zones report millidegrees on most phones, degrees or tenths on some."""
    if tenths:
        return raw / 10.0
    return raw / 1000.0 if abs(raw) >= 1000 else raw / 10.0 if abs(raw) >= 200 else raw


# --- the driver ----------------------------------------------------------------------------

class ADBDriver(Driver):
    kind = "adb"
    per_run_timings = False  # benchmark_model prints statistics of its runs, never each run

    def __init__(self, profile: Profile):
        super().__init__(profile)
        assert isinstance(profile.connection, ADBConnection)
        self.conn: ADBConnection = profile.connection
        self.workdir = self.conn.workdir.rstrip("/") or "/"
        self._device: AdbDevice | None = None
        self._signer = _KeySigner(Path(os.path.expanduser(self.conn.key_file)))
        self._was_connected = False
        self._static: dict[str, Any] | None = None
        self._binary: str | None = None
        self._pushed: dict[str, str] = {}  # remote path -> sha256 verified in this session
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._cpus: list[str] = []
        self._zones: dict[str, str] = {}
        self._stale_run = False  # a timed-out benchmark_model may still be running on the phone

    @property
    def serial(self) -> str:
        return self.conn.serial

    # --- connection ----------------------------------------------------------------------
    def _open_device(self) -> AdbDevice:
        timeout = self.conn.connect_timeout_s
        if self.conn.transport == "usb":
            try:
                from adb_shell.adb_device import AdbDeviceUsb

                return AdbDeviceUsb(serial=self.conn.serial, default_transport_timeout_s=timeout, banner="harness")
            except (adb_errors.InvalidTransportError, ImportError):
                raise DeviceError("USB needs the libusb1 package and the system's libusb-1.0: "
                                  "pip install 'adb-shell[usb]', or use `adb tcpip 5555` and transport: tcp") from None
            except adb_errors.UsbDeviceNotFoundError:
                raise DeviceError(f"no USB device with serial {self.conn.serial!r}: is it plugged in, "
                                  "with USB debugging on?") from None
        host, _, port = self.conn.serial.rpartition(":")
        if not host or not port.isdigit():
            host, port = self.conn.serial, "5555"
        return AdbDevice(_TcpTransport(host, int(port)), timeout, banner="harness")

    def _ensure(self) -> AdbDevice:
        if self._device is not None:
            return self._device
        timeout = self.conn.connect_timeout_s
        device = self._open_device()
        self._signer.asked = False

        def asked(_: object) -> None:
            self._signer.asked = True

        try:
            device.connect(rsa_keys=[self._signer], transport_timeout_s=timeout, auth_timeout_s=timeout,
                           read_timeout_s=timeout, auth_callback=asked)
        except KeyFileError:
            device.close()
            raise
        except Exception as e:  # noqa: BLE001  adb-shell, socket and USB errors alike
            device.close()
            raise self._connect_error(e) from None
        self._device = device
        self._was_connected = True
        return device

    def _connect_error(self, e: Exception) -> DriverError:
        pub = f"{self._signer.path}.pub"
        if self._signer.asked or isinstance(e, adb_errors.DeviceAuthError):
            return DeviceError(
                f"{self.serial} did not accept this computer's ADB key ({pub}): unlock the phone and tap "
                "'Allow' on 'Allow USB debugging?' (tick 'Always allow from this computer'), then retry. If no "
                "prompt appears, use 'Revoke USB debugging authorisations' in Developer options and reconnect.")
        if isinstance(e, (adb_errors.TcpTimeoutException, adb_errors.AdbTimeoutError)):
            msg = f"no ADB answer from {self.serial} within {self.conn.connect_timeout_s:g} s"
        elif isinstance(e, (adb_errors.InvalidCommandError, adb_errors.InvalidResponseError,
                            adb_errors.InvalidChecksumError)):
            msg = f"{self.serial} answered, but not as an ADB device ({e})"
        else:
            msg = f"cannot reach {self.serial}: {e}"
        hint = (" Is the phone on the same network, with USB debugging on and `adb tcpip 5555` done since its "
                "last reboot?") if self.conn.transport == "tcp" else ""
        if self.serial == VIRTUAL_SERIAL:
            hint = (" Serial 'virtual' is a phone the harness CLI serves for the command; from Python, wrap the "
                    "profile in harness.sim.adb.server.serving(profile).")
        if self._was_connected:
            return ConnectionLost(f"lost the phone {self.serial}: reconnecting failed: {msg}")
        return DeviceError(msg + "." + hint)

    def _disconnect(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            try:
                device.close()
            except Exception:  # noqa: BLE001  closing a broken connection must not raise
                pass

    def _call(self, what: str, timeout: float, fn: Callable[[AdbDevice], T]) -> T:
        """Run one adb-shell operation, mapping its failures to the driver's typed errors."""
        device = self._ensure()
        try:
            return fn(device)
        except (adb_errors.TcpTimeoutException, adb_errors.AdbTimeoutError):
            self._disconnect()  # a fresh connection for the next command; run() pkills a leftover binary
            raise MeasurementTimeout(f"{what}: no answer from {self.serial} within {timeout:g} s") from None
        except (_LinkDown, adb_errors.UsbReadFailedError, adb_errors.UsbWriteFailedError,
                adb_errors.AdbConnectionError) as e:
            self._disconnect()
            raise ConnectionLost(f"lost the connection to {self.serial} during {what}: {e}") from None
        except (adb_errors.InvalidResponseError, adb_errors.InvalidChecksumError, adb_errors.InvalidCommandError,
                struct.error) as e:
            self._disconnect()
            raise ConnectionLost(f"{self.serial} broke the ADB protocol during {what}: {e}") from None
        except (adb_errors.PushFailedError, adb_errors.AdbCommandFailureException) as e:
            self._disconnect()
            reason = e.args[0] if e.args else e
            reason = bytes(reason).decode(errors="replace") if isinstance(reason, (bytes, bytearray)) else str(reason)
            raise DeviceError(f"{what} failed on {self.serial}: {reason}") from None

    def shell(self, argv: list[str], *, timeout: float, what: str = "", cwd: str | None = None) -> tuple[int, str]:
        """Run argv in the phone's shell, every argument quoted; returns (exit status, stdout+stderr)."""
        cmd = shlex.join(argv)
        if cwd is not None:
            cmd = f"cd {shlex.quote(cwd)} && {cmd}"
        script = f"{cmd}; echo {RC_MARK}$?"
        raw = self._call(what or argv[0], timeout, lambda d: d.shell(
            script, transport_timeout_s=timeout, read_timeout_s=timeout, timeout_s=timeout, decode=False))
        text = bytes(raw).decode("utf-8", errors="replace").replace("\r\n", "\n")
        at = text.rfind(RC_MARK)
        m = re.match(r"(\d+)\s*$", text[at + len(RC_MARK):]) if at >= 0 else None
        if m is None:
            raise DeviceError(f"{what or argv[0]}: the phone's shell ended without an exit status",
                              detail=text[-2000:])
        return int(m.group(1)), text[:at]

    def _check(self, argv: list[str], *, timeout: float | None = None, what: str = "") -> str:
        rc, out = self.shell(argv, timeout=timeout or self.conn.connect_timeout_s, what=what)
        if rc != 0:
            raise DeviceError(f"`{shlex.join(argv)}` failed on {self.serial} (exit {rc}): {out.strip()[-500:]}")
        return out

    # --- files -----------------------------------------------------------------------------
    def _local_hash(self, path: Path) -> str:
        s = path.stat()
        key = (str(path), s.st_size, s.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    def _remote_sha256(self, remote: str) -> str | None:
        rc, out = self.shell(["sha256sum", remote], timeout=self.conn.connect_timeout_s, what="sha256sum")
        m = re.match(r"([0-9a-f]{64})\s", out.strip() + " ")
        return m.group(1) if rc == 0 and m else None

    def _remote_stat(self, remote: str) -> tuple[int, int]:
        mode, size, _ = self._call(f"stat {remote}", self.conn.connect_timeout_s,
                                   lambda d: d.stat(remote, transport_timeout_s=self.conn.connect_timeout_s,
                                                    read_timeout_s=self.conn.connect_timeout_s))
        return mode, size

    def _install(self, local: Path, remote: str, sha: str, mode: int) -> bool:
        """Put ``local`` at ``remote`` unless the same content is already there; returns True if pushed."""
        if self._pushed.get(remote) == sha:
            return False
        timeout = max(self.profile.policy.timeout_seconds, self.conn.connect_timeout_s)

        def size(path: str) -> int | None:
            rmode, rsize = self._remote_stat(path)
            return rsize if st.S_ISREG(rmode) else None

        def push(src: Path, dst: str) -> None:
            self._call(f"pushing {src.name} to {remote}", timeout, lambda d: d.push(
                str(src), dst, st_mode=st.S_IFREG | mode, mtime=int(src.stat().st_mtime),
                transport_timeout_s=timeout, read_timeout_s=timeout))

        def move(src: str, dst: str) -> None:
            self._check(["mv", "-f", src, dst], what="mv")
            if mode & 0o111:
                self._check(["chmod", f"{mode:o}", dst], what="chmod")

        copied = upload_if_changed(local, remote, local_sha256=lambda: sha, remote_size=size,
                                   remote_sha256=self._remote_sha256, copy=push, rename=move)
        self._pushed[remote] = sha
        return copied

    def _install_binary(self) -> tuple[str, str, str]:
        """(remote path, sha256, source) of the benchmark_model the campaign runs."""
        remote = f"{self.workdir}/benchmark_model"
        local = self.conn.benchmark_model
        if local is not None:
            path = Path(os.path.expanduser(local))
            if not path.is_file():
                raise DeviceError(f"benchmark_model not found at {path} (connection.benchmark_model in profile "
                                  f"{self.profile.name})")
            sha = self._local_hash(path)
            self._install(path, remote, sha, 0o755)
            return remote, sha, str(path)
        rmode, _ = self._remote_stat(remote)
        if not (st.S_ISREG(rmode) and rmode & 0o111):
            raise DeviceError(f"no benchmark_model on {self.serial}: set connection.benchmark_model in profile "
                              f"{self.profile.name} to the local path of TFLite's benchmark_model for "
                              f"android_aarch64 (see the README, 'Measuring an Android phone'), or push one "
                              f"to {remote}")
        sha = self._remote_sha256(remote)
        if sha is None:
            raise DeviceError(f"cannot hash {remote} on {self.serial} (no sha256sum?)")
        return remote, sha, "already on the device"

    # --- conditions --------------------------------------------------------------------------
    def _props(self) -> dict[str, str]:
        out = self._check(["getprop"], what="getprop")
        return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", out, re.M))

    def _ls(self, folder: str, pattern: str) -> list[str]:
        rc, out = self.shell(["ls", folder], timeout=self.conn.connect_timeout_s, what="ls")
        names = [n for n in out.split() if re.fullmatch(pattern, n)] if rc == 0 else []
        return sorted(names, key=lambda n: int(re.sub(r"\D", "", n) or 0))

    def _read_files(self, paths: list[str]) -> dict[str, str]:
        """path -> first line, for those that exist and are readable (one command for all)."""
        if not paths:
            return {}
        _, out = self.shell(["grep", "-s", "-H", ".", *paths], timeout=self.conn.connect_timeout_s,
                            what="reading conditions")
        wanted, found = set(paths), {}
        for line in out.splitlines():
            for sep in (m.start() for m in re.finditer(":", line)):
                if line[:sep] in wanted:
                    found.setdefault(line[:sep], line[sep + 1:].strip())
                    break
        return found

    def _topology(self) -> None:
        self._cpus = self._ls(CPU_DIR, r"cpu\d+")
        zones = self._ls(THERMAL_DIR, r"thermal_zone\d+")
        types = self._read_files([f"{THERMAL_DIR}/{z}/type" for z in zones])
        self._zones = zone_names([(z, types.get(f"{THERMAL_DIR}/{z}/type")) for z in zones])

    def conditions(self) -> dict[str, Any]:
        """CPU frequencies and governors, battery and thermal-zone temperatures, right now."""
        files = [f"{CPU_DIR}/{c}/cpufreq/{f}" for c in self._cpus for f in ("scaling_cur_freq", "scaling_governor")]
        files += [BATTERY_TEMP, BATTERY_CURRENT, BATTERY_VOLTAGE] + [f"{THERMAL_DIR}/{z}/temp" for z in self._zones]
        values = self._read_files(files)
        out: dict[str, Any] = {"time_unix": round(time.time(), 3), "cpu_freq_mhz": {}, "governors": {},
                               "temperatures_c": {}}
        for c in self._cpus:
            f = values.get(f"{CPU_DIR}/{c}/cpufreq/scaling_cur_freq", "")
            if f.isdigit():
                out["cpu_freq_mhz"][c] = int(f) / 1000.0
            g = values.get(f"{CPU_DIR}/{c}/cpufreq/scaling_governor")
            if g:
                out["governors"][c] = g
        if re.fullmatch(r"-?\d+", values.get(BATTERY_TEMP, "")):
            out["battery_temp_c"] = _celsius(int(values[BATTERY_TEMP]), tenths=True)
        cur, volt = values.get(BATTERY_CURRENT, ""), values.get(BATTERY_VOLTAGE, "")
        if re.fullmatch(r"-?\d+", cur) and re.fullmatch(r"\d+", volt):
            out["battery_power_mw"] = abs(int(cur) * int(volt)) / 1e9  # µA x µV = pW
        for z, name in self._zones.items():
            v = values.get(f"{THERMAL_DIR}/{z}/temp", "")
            if re.fullmatch(r"-?\d+", v):
                out["temperatures_c"][name] = _celsius(int(v))
        return out

    # --- Driver interface ------------------------------------------------------------------
    def check(self) -> CheckReport:
        try:
            cond = self.prepare()
        except DriverError as e:
            return CheckReport(False, self._was_connected, "tflite", message=str(e))
        finally:
            self.cleanup()
        details = {k: cond.get(k) for k in ("device_model", "soc", "android_version", "abi", "cpu_count",
                                            "benchmark_model_sha256", "workdir", "transport")}
        return CheckReport(True, True, "tflite", cond["runtime_version"], details=details)

    def prepare(self) -> dict[str, Any]:
        if self._static is not None and self._device is not None:
            return dict(self._static)
        rt = self.profile.runtime
        if rt.name != "tflite":
            raise DeviceError(f"the ADB driver runs TFLite's benchmark_model: profile {self.profile.name} must "
                              f"use runtime.name: tflite (has {rt.name})")
        if not self.workdir.startswith("/"):
            raise DeviceError(f"connection.workdir must be an absolute path on the phone (got {self.workdir!r})")
        self._ensure()
        props = self._props()
        virtual = props.get("ro.harness.virtual_phone") == "1"
        self._check(["mkdir", "-p", self.workdir], what="mkdir")
        self._binary, sha, source = self._install_binary()
        self._topology()
        rc, kernel = self.shell(["uname", "-r"], timeout=self.conn.connect_timeout_s, what="uname")
        freqs = self._read_files([f"{CPU_DIR}/{c}/cpufreq/{f}" for c in self._cpus
                                  for f in ("cpuinfo_min_freq", "cpuinfo_max_freq", "scaling_governor")])

        def per_cpu(name: str, scale: float | None) -> dict[str, Any]:
            out = {}
            for c in self._cpus:
                v = freqs.get(f"{CPU_DIR}/{c}/cpufreq/{name}")
                if v is not None:
                    out[c] = (int(v) / scale if v.isdigit() else None) if scale else v
            return out

        self._static = {
            "runtime": "tflite",
            "runtime_version": f"benchmark_model sha256:{sha[:16]}",
            "threads": rt.threads,
            "delegate": rt.delegate,
            "execution_provider": None,
            "benchmark_model": self._binary,
            "benchmark_model_sha256": sha,
            "benchmark_model_source": source,
            "per_run_latencies": False,
            "transport": self.conn.transport,
            "serial": self.serial,
            "workdir": self.workdir,
            "taskset": self.conn.taskset,
            # the virtual phone impersonates a model; its temperatures, frequencies and battery are simulated
            "simulated": True if virtual else None,
            "device_model": _model_name(props.get("ro.product.model"), virtual),
            "manufacturer": props.get("ro.product.manufacturer"),
            "soc": props.get("ro.soc.model") or props.get("ro.board.platform"),
            "board_platform": props.get("ro.board.platform"),
            "android_version": props.get("ro.build.version.release"),
            "sdk": props.get("ro.build.version.sdk"),
            "abi": props.get("ro.product.cpu.abi"),
            "fingerprint": props.get("ro.build.fingerprint"),
            "kernel": kernel.strip() if rc == 0 else None,
            "cpu_model": " ".join(filter(None, [props.get("ro.product.manufacturer"),
                                                props.get("ro.product.model"), props.get("ro.soc.model")])),
            "cpu_count": len(self._cpus),
            "governors": per_cpu("scaling_governor", None),
            "cpu_min_freq_mhz": per_cpu("cpuinfo_min_freq", 1000.0),
            "cpu_max_freq_mhz": per_cpu("cpuinfo_max_freq", 1000.0),
            "thermal_zones": dict(self._zones),
        }
        return dict(self._static)

    def push(self, artifact: Artifact) -> str:
        local = Path(artifact.path)
        if not local.is_file():
            raise DeviceError(f"model file {local} does not exist")
        if self._static is None:
            self.prepare()
        sha = self._local_hash(local)
        suffix = local.suffix if SAFE_NAME.match("x" + local.suffix) else ""
        stem = artifact.digest if SAFE_NAME.match(artifact.digest) else sha[:32]
        remote = f"{self.workdir}/{stem}{suffix}"
        self._install(local, remote, sha, 0o644)
        return remote

    def run(self, model_ref: str) -> RunResult:
        if self._static is None:
            self.prepare()
        rt, pol = self.profile.runtime, self.profile.policy
        argv = adb_benchmark.command(self._binary or "", model_ref, threads=rt.threads,
                                     warmup_runs=pol.warmup_runs, num_runs=pol.timed_runs,
                                     min_secs=pol.min_seconds, max_secs=pol.timeout_seconds + 1,
                                     delegate=rt.delegate, taskset=self.conn.taskset)
        if self._stale_run:  # never time a model next to the previous one's leftover process
            self.shell(["pkill", "-x", "benchmark_model"], timeout=self.conn.connect_timeout_s, what="pkill")
            self._stale_run = False
        before = self.conditions()
        started = time.perf_counter()
        try:
            rc, text = self.shell(argv, timeout=pol.timeout_seconds, what="benchmark_model")
        except MeasurementTimeout:
            self._stale_run = True
            raise
        wall = time.perf_counter() - started
        after = self.conditions()
        after["wall_s"] = round(wall, 4)
        result = adb_benchmark.run_result(text, rc, where=self.serial, timed_runs=pol.timed_runs, before=before,
                                          after=after)
        if pol.energy in ("battery", "auto"):
            powers = [c["battery_power_mw"] for c in (before, after) if "battery_power_mw" in c]
            if not powers:
                if pol.energy == "battery":
                    raise DriverUnavailable(f"policy.energy: battery, but {self.serial} reports no battery "
                                            "current_now/voltage_now; use policy.energy: off")
            else:  # coarse: the gauge's readings around the run times the latency stored (its median, when the
                # tool reports one): the mean made a noisy model's energy rank unlike its latency at constant power
                per_run_ms = result.statistics.get("median_ms") or result.statistics["avg_ms"]
                result.energy_mj = sum(powers) / len(powers) * per_run_ms / 1000.0
                result.energy_method = "battery-coarse"
        return result

    def state(self) -> dict[str, Any]:
        """Temperatures and frequencies now, for device-state gating."""
        self.prepare()
        c = self.conditions()
        temps = dict(c.get("temperatures_c") or {})
        if c.get("battery_temp_c") is not None:
            temps["battery"] = c["battery_temp_c"]
        # each CPU's hardware maximum (read once): without it a min_freq_ratio gate was never observable here
        return {"temperatures_c": temps or None, "cpu_freq_mhz": c.get("cpu_freq_mhz") or None,
                "max_freq_mhz": {k: v for k, v in (self._static or {}).get("cpu_max_freq_mhz", {}).items() if v}
                or None}

    def stability(self) -> dict[str, Any]:
        """Battery, charging, screen and thermal status (dumpsys), governors and temperatures."""
        from harness.measure import stability as judge

        self.prepare()
        c = self.conditions()
        facts: dict[str, Any] = {"kind": "adb", "governors": c.get("governors") or None,
                                 "battery_temp_c": c.get("battery_temp_c")}
        for service, parse in (("battery", judge.parse_dumpsys_battery), ("power", judge.parse_dumpsys_power),
                               ("thermalservice", judge.parse_dumpsys_thermal)):
            try:
                rc, out = self.shell(["dumpsys", service], timeout=self.conn.connect_timeout_s, what="dumpsys")
            except DeviceError:
                rc, out = 1, ""
            if rc == 0:
                facts.update({k: v for k, v in parse(out).items() if v is not None})
            else:
                facts.setdefault("unavailable", []).append(f"dumpsys {service}")
        return facts

    def cleanup(self) -> None:
        self._disconnect()
        self._static = None
        self._pushed.clear()
        self._was_connected = False
