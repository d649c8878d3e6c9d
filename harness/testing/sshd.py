"""A real OpenSSH server on 127.0.0.1 for tests and benchmarks (Debian's openssh-server).

Everything lives in a temp folder: host key, client key, authorized_keys, config, known_hosts.
``kill()`` ends the listener *and* its per-connection children, which is what a device that drops
off the network looks like to the client.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.devices.profile import Profile, parse_profile

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_available() -> bool:
    return Path(SSHD).exists() and shutil.which("ssh-keygen") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kid = int(stat.parent.name)
            kids += [kid, *_children(kid)]
    return kids


def processes_with(text: str) -> list[int]:
    """PIDs of this machine's processes whose command line contains ``text`` (the "remote" side of a localhost
    device: what a campaign left running on it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [p for p in found if p != os.getpid()]


class TestSSHServer:
    __test__ = False  # not a pytest test class

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or tempfile.mkdtemp(prefix="harness-sshd-"))
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.host_key = self.root / "host_ed25519"
        self.client_key = self.root / "client_ed25519"
        self.known_hosts = self.root / "known_hosts"
        self.log = self.root / "sshd.log"

    def _keygen(self, path: Path) -> None:
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)

    def start(self) -> TestSSHServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self._keygen(self.host_key)
        self._keygen(self.client_key)
        (self.root / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        (self.root / "authorized_keys").chmod(0o600)
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
            "StrictModes no", "UsePAM no", f"PidFile {self.root / 'sshd.pid'}", "Subsystem sftp internal-sftp",
            "LogLevel ERROR", "MaxStartups 50", ""]))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir (as root)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"), start_new_session=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def kill(self) -> None:
        """Drop the device: SIGKILL the listener and every session process it started (safe from two threads:
        a timer that drops the device and a test's cleanup)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pids = [proc.pid, *_children(proc.pid)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()

    def freeze(self, frozen: bool = True) -> None:
        """A board that stops answering without closing anything (hung, or its sshd SIGSTOPped): the listener and
        its session processes stopped (``freeze(False)`` resumes them)."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)
            except ProcessLookupError:
                pass

    def restart(self) -> TestSSHServer:
        self.kill()
        return self.start()

    def profile(self, name: str = "ssh-test", **overrides) -> Profile:
        """A profile for this server: runner on this machine's Python, one thread, quick policy."""
        body = {
            "name": name,
            "connection": {"kind": "ssh", "host": "127.0.0.1", "port": self.port, "user": os.environ.get(
                "USER", "root") if os.geteuid() else "root", "key_file": str(self.client_key),
                "known_hosts": str(self.known_hosts), "workdir": str(self.root / "remote work"),
                "python": sys.executable, "connect_timeout_s": 5,
                "reconnect_attempts": 0},
            "runtime": {"name": "onnxruntime", "threads": 1},
            "policy": {"warmup_runs": 1, "timed_runs": 3, "timeout_seconds": 60},
        }
        for key, value in overrides.items():
            body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
        return parse_profile(body, f"<{name}>")

    def __enter__(self) -> TestSSHServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
