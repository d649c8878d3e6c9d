"""Run a device's own command-line tools (trtexec, benchmark_model) the same way here and over SSH.

A :class:`DeviceShell` runs one argv (never a shell string; over SSH every argument goes through
``shlex.quote``) and reads, renames and removes files. Tool drivers are written once against it.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.errors import ConnectionLost, DeviceError, MeasurementTimeout


@dataclass
class Completed:
    code: int
    stdout: str
    stderr: str


class DeviceShell(Protocol):
    def run(self, argv: list[str], timeout: float) -> Completed:
        """Run ``argv``; FileNotFoundError when the program does not exist, MeasurementTimeout on timeout."""

    def read_text(self, path: str) -> str: ...

    def exists(self, path: str) -> bool: ...

    def rename(self, src: str, dst: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def makedirs(self, path: str) -> None: ...

    def join(self, *parts: str) -> str: ...


class LocalShell:
    """This machine."""

    def run(self, argv: list[str], timeout: float) -> Completed:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, errors="replace")
        except subprocess.TimeoutExpired:
            raise MeasurementTimeout(f"{argv[0]} did not finish within {timeout:g} s; stopped") from None
        except PermissionError:  # a folder or a file without the execute bit: told apart from a missing one
            return Completed(126, "", f"{argv[0]}: permission denied")
        return Completed(p.returncode, p.stdout, p.stderr)

    def read_text(self, path: str) -> str:
        return Path(path).read_text(errors="replace")

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def makedirs(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)


PID_MARK = "harness-pid "
# run as `sh -c PID_THEN_EXEC sh PROGRAM ARGS...`: the PID on stderr's first line, then the program in its place
PID_THEN_EXEC = f'echo "{PID_MARK}$$" >&2; exec "$@"'


class SSHShell:
    """A paramiko client and its SFTP session (owned by the SSH driver)."""

    NOT_FOUND = 127  # what a POSIX shell answers for a missing program

    def __init__(self, client, sftp, name: str):
        self.client, self.sftp, self.name = client, sftp, name

    def run(self, argv: list[str], timeout: float) -> Completed:
        """Run ``argv`` on the device. The program first says its PID (on stderr, taken off again), so a
        timeout stops it: closing the channel left a timed-out benchmark_model or trtexec running beside the
        next models, which were timed on a busy board without a mark."""
        import socket

        import paramiko

        try:
            _, out, err = self.client.exec_command(f"sh -c {shlex.quote(PID_THEN_EXEC)} sh {shlex.join(argv)}",
                                                   timeout=timeout)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            code = out.channel.recv_exit_status()
        except socket.timeout:
            self._stop(err)
            raise MeasurementTimeout(f"{self.name}: {argv[0]} did not finish within {timeout:g} s; stopped") from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise ConnectionLost(f"{self.name}: connection lost running {argv[0]}: {e}") from None
        first, _, rest = stderr.partition("\n")
        if first.startswith(PID_MARK):
            stderr = rest
        if code == self.NOT_FOUND and not stdout:
            raise FileNotFoundError(argv[0])
        return Completed(code, stdout, stderr)

    def _stop(self, err) -> None:
        """Kill the timed-out program by the PID it announced (best effort: the board may be gone)."""
        import paramiko

        try:
            seen = err.channel.recv_stderr(4096).decode(errors="replace") if err.channel.recv_stderr_ready() else ""
            first = seen.partition("\n")[0]
            pid = first[len(PID_MARK):].strip() if first.startswith(PID_MARK) else ""
            if pid.isdigit():
                _, out, _ = self.client.exec_command(shlex.join(["kill", "-9", pid]), timeout=10)
                out.channel.recv_exit_status()
            err.channel.close()
        except (OSError, paramiko.SSHException, EOFError):
            pass

    def _sftp(self, what: str, op):
        import paramiko

        try:
            return op()
        except FileNotFoundError:
            raise
        except TimeoutError:  # the SFTP channel's stall limit (SSHDriver._open_session): a board that froze
            raise ConnectionLost(f"{self.name}: {what}: the device stopped answering") from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise DeviceError(f"{self.name}: {what}: {e}") from None

    def read_text(self, path: str) -> str:
        def op() -> str:
            with self.sftp.open(path, "r") as f:
                return f.read().decode(errors="replace")

        return self._sftp(f"cannot read {path}", op)

    def exists(self, path: str) -> bool:
        try:
            self._sftp(f"cannot stat {path}", lambda: self.sftp.stat(path))
            return True
        except FileNotFoundError:
            return False

    def rename(self, src: str, dst: str) -> None:
        self._sftp(f"cannot rename {src}", lambda: self.sftp.posix_rename(src, dst))

    def remove(self, path: str) -> None:
        try:
            self._sftp(f"cannot remove {path}", lambda: self.sftp.remove(path))
        except FileNotFoundError:
            pass

    def makedirs(self, path: str) -> None:
        code = self.run(["mkdir", "-p", path], timeout=60).code
        if code:
            raise DeviceError(f"{self.name}: cannot create {path}")

    def join(self, *parts: str) -> str:
        return posixpath.join(*parts)
