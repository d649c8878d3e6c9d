"""One campaign per device at a time: an OS file lock per device that a crashed holder cannot keep.

Two campaigns timing the same device at once skew each other (they share its CPU), so a campaign first
takes the device's lease. The lease is an exclusive ``flock`` on ``<lock dir>/<device>.lock``: the kernel
releases it when the holder exits for any reason (Ctrl-C, SIGKILL, power loss of the process), so there
is nothing stale to clean up. The file also says who holds it (pid, host, command, since) for the
message the second command prints. Leases are per open file, so one process can hold several devices
at once (a device farm) and two threads of one process still exclude each other on the same device.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError


@dataclass(frozen=True)
class Holder:
    """Who holds a device's lease (as written by the holder)."""

    device: str
    pid: int | None = None
    host: str = "?"
    command: str = ""
    since: str = ""

    def describe(self) -> str:
        who = f"pid {self.pid} on {self.host}" if self.pid else "another process"
        return who + (f" since {self.since}" if self.since else "") + (f" ({self.command})" if self.command else "")


class DeviceBusy(HarnessError):
    """The device is being measured by another campaign."""

    def __init__(self, holder: Holder, lock_file: Path):
        self.holder, self.lock_file = holder, lock_file
        super().__init__(f"device {holder.device} is being measured by {holder.describe()}. Wait for it to "
                         f"finish (rerun with --wait: measure, transfer and search --verify take it, the farm too), or stop "
                         f"that campaign (the lease "
                         f"is {lock_file})")


def lock_dir_for(store_path: str | os.PathLike) -> Path:
    """Leases of the campaigns writing to one store live beside it (HARNESS_LOCK_DIR: one folder for all)."""
    env = os.environ.get("HARNESS_LOCK_DIR")
    if env:
        return Path(env)
    p = Path(store_path)
    return p.with_name(f".{p.name}.locks")


def machine_of(profile) -> tuple[str, str] | None:
    """(lock name, words) of the physical device a profile reaches, when other profiles can reach it too: a phone's
    ADB serial, a board's SSH host and port. Two profiles of one phone (``s5e`` and ``s5e-gpu``) ran at once, each
    under its own lease: one's `pkill benchmark_model` killed the other's runs, and on a real phone their runs
    would overlap unmarked. This machine (``local``) is left out: several local devices at once is the farm's to
    ask for."""
    c = profile.connection
    if c.kind == "adb" and c.serial != "virtual":  # "virtual": a new phone of its own each command
        return f"machine.adb.{_slug(c.serial)}", f"the phone with ADB serial {c.serial}"
    if c.kind == "ssh":
        return f"machine.ssh.{_slug(c.host)}.{c.port}", f"the board at {c.host}:{c.port}"
    return None


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(text))[:100]


def leases_for(profile, lock_dir: str | os.PathLike, machine: bool = True, **kw) -> list[DeviceLease]:
    """The profile's own lease, then (``machine``) its machine's (see :func:`machine_of`), in the order they are
    taken."""
    out = [DeviceLease(profile.name, lock_dir, **kw)]
    machine = machine_of(profile) if machine else None
    if machine is not None:
        out.append(DeviceLease(machine[0], lock_dir, label=machine[1], **kw))
    return out


class DeviceLease:
    """``with DeviceLease(device, lock_dir, wait=...)``: hold ``device`` exclusively for the block.

    ``wait``: seconds to wait for the holder to finish (0: raise :class:`DeviceBusy` at once; ``None``: wait
    forever). ``on_wait(holder)`` is called once when waiting starts, for a message.
    """

    def __init__(self, device: str, lock_dir: str | os.PathLike, *, command: str = "", wait: float | None = 0.0,
                 on_wait: Callable[[Holder], None] | None = None, poll_s: float = 0.1, label: str | None = None):
        self.device, self.command, self.wait, self.on_wait, self.poll_s = device, command, wait, on_wait, poll_s
        self.label = label or device  # what messages call it ("the phone with ADB serial ...")
        self.path = Path(lock_dir) / f"{device}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DeviceLease:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # not through a symlink: in a shared lock folder one planted there would have us overwrite its target
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise HarnessError(f"lock file {self.path} is a symbolic link; remove it (a lock is a plain file, and "
                               "HARNESS_LOCK_DIR should be a folder only you can write to)") from None
        deadline = None if self.wait is None else time.monotonic() + self.wait
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = self.holder()
                    if deadline is not None and time.monotonic() >= deadline:
                        raise DeviceBusy(holder, self.path) from None
                    if not told and self.on_wait is not None:
                        self.on_wait(holder)
                    told = True
                    time.sleep(self.poll_s)
        except BaseException:
            os.close(fd)
            raise
        info = {"device": self.device, "pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def holder(self) -> Holder:
        """Who holds the lease now (best effort: the holder may be writing its details at this instant)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
            return Holder(self.label, int(info["pid"]), str(info.get("host", "?")), str(info.get("command", "")),
                          str(info.get("since", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return Holder(self.label)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file drops the flock; the file stays (removing it would race)

    def __enter__(self) -> DeviceLease:
        return self.acquire() if not self.held else self

    def __exit__(self, *exc: object) -> None:
        self.release()
