"""SSH driver: Jetsons, Raspberry Pis and Linux boxes, with paramiko.

Security: host keys are checked against known_hosts (the profile's file, else the system's) and an
unknown or changed key is refused with its fingerprint; accepting a key is an explicit act
(``harness devices trust NAME``) or an explicit opt-out in the profile. Keys are used by path and never
logged. Every remote argument goes through ``shlex.quote``.

Measurement: ``runner.py`` is copied to the device once (content-named) and started as a long-lived
worker over one SSH channel, so each model costs one SFTP check/put and one JSON round trip.
Models are pushed by SFTP under their content digest and skipped when already there with the same hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import shlex
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import paramiko

from harness.devices.driver import RunResult
from harness.devices import protocol
from harness.devices.runner_client import RunnerDriver
from harness.devices.upload import upload_if_changed
from harness.errors import AccessRefused, ConnectionLost, DeviceError, DriverUnavailable, clip
from harness.models.cache import Artifact, sha256_file

RUNNER = Path(__file__).with_name("runner.py")
HWPROBE = Path(__file__).with_name("hwprobe.py")
T = TypeVar("T")
log = logging.getLogger(__name__)
# paramiko logs a failed handshake (a port where no SSH server answers) at ERROR, with its traceback; the driver
# raises a typed error that says the same. With no handler anywhere, Python's last resort printed it on stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint, e.g. ``ssh-ed25519 SHA256:...``."""
    import base64

    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def host_id(host: str, port: int) -> str:
    """known_hosts name: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


class _Refuse(paramiko.MissingHostKeyPolicy):
    """RejectPolicy that says what was refused and how to accept it on purpose."""

    def __init__(self, profile_name: str):
        self.profile_name = profile_name

    def missing_host_key(self, client, hostname, key):
        raise DeviceError(
            f"host key of {hostname} is not in known_hosts: {fingerprint(key)}. If that is your device, run "
            f"`harness devices trust {self.profile_name}` to record it, or set "
            "connection.insecure_skip_host_key_check: true in the profile (not recommended).")


class _AcceptWithoutRecording(paramiko.MissingHostKeyPolicy):
    """The profile's explicit opt-out: accept an unknown key for this session only, never save it."""

    def missing_host_key(self, client, hostname, key):
        return None


class ChannelLines:
    """Line channel over one paramiko session channel running ``runner.py --serve``."""

    def __init__(self, channel: paramiko.Channel):
        self.channel = channel
        self._buf = b""

    def send(self, line: str) -> None:
        try:
            self.channel.sendall(line.encode())
        except (socket.error, paramiko.SSHException, EOFError) as e:
            raise OSError(str(e)) from None

    def receive(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.channel.settimeout(min(remaining, 1.0))
            try:
                chunk = self.channel.recv(65536)
            except socket.timeout:
                if self.channel.get_transport() is None or not self.channel.get_transport().is_active():
                    return ""
                continue
            except (OSError, paramiko.SSHException, EOFError):
                return ""
            if not chunk:
                return ""
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def diagnostics(self) -> str:
        """The remote command's stderr so far and its exit status: both arrive a moment after stdout closed (a
        shell's 'No such file', then 127), so wait up to two seconds for the exit; whether it is there decides
        if the runner ended on the device (a setting) or the connection went (a drop)."""
        try:
            deadline = time.monotonic() + 2.0
            while not self.channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.02)
            text = self.channel.recv_stderr(65536).decode(errors="replace")[-2000:] \
                if self.channel.recv_stderr_ready() else ""
            if self.channel.exit_status_ready():
                text += f"\n(exit code {self.channel.recv_exit_status()})"
            return text.strip()
        except (OSError, paramiko.SSHException):
            return ""

    def close(self, force: bool = False) -> None:
        try:
            if not force:
                self.channel.shutdown_write()  # end of input: the runner exits
            self.channel.close()
        except (OSError, paramiko.SSHException, EOFError):
            pass


# run as `sh -c _OWN_WORKDIR sh WORKDIR` (the path is an argument, never part of the script)
_OWN_WORKDIR = (
    'd=$1; mkdir -p -- "$d" 2>/dev/null || { echo "cannot be created" >&2; exit 3; }; '
    '[ -L "$d" ] && { echo "is a symbolic link (another user may own or replace it)" >&2; exit 3; }; '
    '[ -O "$d" ] || { echo "belongs to another user, who could replace what harness runs there" >&2; exit 3; }; '
    'chmod go-w -- "$d"')


# run as `sh -c _KILL_RUNNER sh PID`: kill PID only while it is still a harness runner (not a reused PID)
_KILL_RUNNER = ('case "$(tr "\\000" " " < /proc/$1/cmdline 2>/dev/null)" in *harness_runner_*) '
                'kill -9 "$1";; esac; true')


class SSHDriver(RunnerDriver):
    kind = "ssh"
    lost_error = ConnectionLost

    def __init__(self, profile):
        super().__init__(profile)
        self.conn = profile.connection
        self.client: paramiko.SSHClient | None = None
        self.sftp: paramiko.SFTPClient | None = None
        self._hashes: dict[Path, str] = {}
        self.reconnect = True  # off while checking: `devices check` should answer at once
        self._drops: list[str] = []  # connections lost since the last visit: the next visit records them

    # --- connection ---------------------------------------------------------------------
    def start_hint(self) -> str:
        return (f" (connection.python is {self.conn.python}: it must be an interpreter on the device, Python 3.8+, "
                "with the runtime installed; `harness devices check` says more)")

    def _check_key(self, key: str, client: paramiko.SSHClient) -> None:
        """A private key others can read is refused, as OpenSSH refuses it ("UNPROTECTED PRIVATE KEY FILE"); a
        file that is no private key is said as such (it read "cannot reach host", reachable=False)."""
        mode = Path(key).stat().st_mode & 0o777
        if mode & 0o077:
            client.close()
            raise DriverUnavailable(f"{self.profile.name}: connection.key_file {key} can be read by others (mode "
                                    f"{mode:03o}); `chmod 600 {key}` (OpenSSH refuses such a key too)",
                                    before_contact=True)
        head = Path(key).read_bytes()[:100]
        if b"PRIVATE KEY" not in head:
            client.close()
            what = "a public key (the private one is the file without .pub)" if head.startswith(b"ssh-") else \
                "no private key"
            raise DriverUnavailable(f"{self.profile.name}: connection.key_file {key} is {what}; point it at the "
                                    "private key, e.g. ~/.ssh/id_ed25519", before_contact=True)

    def _connect(self) -> paramiko.SSHClient:
        c = self.conn
        client = paramiko.SSHClient()
        if c.known_hosts:
            path = Path(c.known_hosts).expanduser()
            if path.exists():
                client.load_host_keys(str(path))
        else:
            client.load_system_host_keys()
        client.set_missing_host_key_policy(
            _AcceptWithoutRecording() if c.insecure_skip_host_key_check else _Refuse(self.profile.name))
        key = str(Path(c.key_file).expanduser()) if c.key_file else None
        if key is not None and not Path(key).is_file():
            client.close()
            raise DriverUnavailable(f"{self.profile.name}: connection.key_file {key} does not exist (a path to the "
                                    "private key on this machine; leave it out to use ssh-agent and ~/.ssh keys)",
                                    before_contact=True)
        if key is not None:
            self._check_key(key, client)
        try:
            client.connect(c.host, port=c.port, username=c.user, key_filename=key, timeout=c.connect_timeout_s,
                           banner_timeout=c.connect_timeout_s, auth_timeout=c.connect_timeout_s,
                           look_for_keys=key is None, allow_agent=key is None)
        except DeviceError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise AccessRefused(
                f"host key of {c.host}:{c.port} CHANGED: the device offers {fingerprint(e.key)}, known_hosts has "
                f"{fingerprint(e.expected_key)}. This may be an attack or a reinstalled device; refusing. If the "
                f"change is expected, run `harness devices trust {self.profile.name}`: it shows both keys and replaces the "
                f"old entry once you confirm.") \
                from None
        except paramiko.AuthenticationException as e:
            client.close()
            raise AccessRefused(f"{self.profile.name}: authentication as {c.user} failed ({e}); check "
                              "connection.user, connection.key_file and that user's authorized_keys on the "
                              "device") from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            client.close()
            raise ConnectionLost(f"{self.profile.name}: nothing answers on {c.host}:{c.port} (connection refused): "
                                 "is sshd running there, and is connection.port right?") from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            client.close()
            # paramiko's words for a port where no SSH server speaks, which it picks by timing
            # ("Error reading SSH protocol banner[Errno 104] Connection reset by peer" when the service hangs up)
            silent = isinstance(e, EOFError) or str(e).startswith(("No existing session",
                                                                   "Error reading SSH protocol banner"))
            why = (f"the port accepted the connection but no SSH server spoke within {c.connect_timeout_s:g} s "
                   "(another service on that port, or a stalled sshd; connection.port, connection.connect_timeout_s)"
                   if silent else str(e))
            raise ConnectionLost(f"{self.profile.name}: cannot reach {c.host}:{c.port}: {why}") from None
        return client

    def _exec(self, argv: list[str], timeout: float = 60.0) -> str:
        """Run one remote command (every argument quoted); its stdout, or DeviceError with stderr."""
        assert self.client is not None
        command = shlex.join(argv)
        try:
            _, out, err = self.client.exec_command(command, timeout=timeout)
            text = out.read().decode(errors="replace")
            code = out.channel.recv_exit_status()
            errtext = err.read().decode(errors="replace")
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise ConnectionLost(f"{self.profile.name}: connection lost running {argv[0]}: {e}") from None
        if code != 0:
            raise DeviceError(f"{self.profile.name}: {argv[0]} exited with {code}: {errtext.strip()[-500:]}")
        return text

    def _alive(self) -> bool:
        transport = self.client.get_transport() if self.client else None
        return bool(transport and transport.is_active())

    def _local_sha256(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = sha256_file(path)
        return self._hashes[path]

    def _remote_sha256(self, remote: str) -> str:
        """Through the running runner when there is one (a round trip), else with sha256sum."""
        if self._channel is not None:
            return self._call({"op": "sha256", "path": remote}, timeout=60, answer=protocol.Sha256Answer).sha256
        return self._exec(["sha256sum", remote]).split()[0]

    def _remote(self, name: str) -> str:
        return posixpath.join(self.conn.workdir, name)

    def _upload(self, local: Path, remote: str, digest: str | None = None) -> bool:
        """Put ``local`` at ``remote`` unless it is already there with the same SHA-256; True if copied."""
        sftp = self.sftp
        assert sftp is not None

        def size(path: str) -> int | None:
            try:
                return sftp.stat(path).st_size
            except FileNotFoundError:
                return None

        try:
            return upload_if_changed(local, remote, local_sha256=lambda: digest or self._local_sha256(local),
                                     remote_size=size, remote_sha256=self._remote_sha256,
                                     copy=lambda src, dst: sftp.put(str(src), dst), rename=sftp.posix_rename)
        except TimeoutError:  # no answer within the SFTP channel's stall limit: a frozen board, not a write error
            raise ConnectionLost(f"{self.profile.name}: the device stopped answering while copying {local.name} "
                                 f"(nothing for {self._sftp_stall_s():g} s)") from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            if self._alive():  # the device answered: a real write error (permissions, disk full)
                raise DeviceError(f"{self.profile.name}: cannot write {remote}: {e}") from None
            raise ConnectionLost(f"{self.profile.name}: connection lost while copying {local.name}: {e}") from None

    def _open_session(self) -> None:
        """Connect, open SFTP and create the workdir (once per connection)."""
        if self.client is None:
            self.client = self._connect()
            try:
                self.sftp = self.client.open_sftp()
            except (OSError, paramiko.SSHException, EOFError) as e:
                raise ConnectionLost(f"{self.profile.name}: SFTP unavailable: {e}") from None
            # a board that stops answering without closing the connection (frozen, SIGSTOPped sshd) hung a campaign
            # in an SFTP stat forever: each SFTP reply must come within this
            self.sftp.get_channel().settimeout(self._sftp_stall_s())
            self._own_workdir()

    def _sftp_stall_s(self) -> float:
        return max(30.0, 3 * self.conn.connect_timeout_s)

    def _own_workdir(self) -> None:
        """Create the workdir, refuse one that another user could write into, and take group/other write away.

        The default lies in the board's shared /tmp: a folder someone else made there first (or a symlink they
        planted) would let them swap the runner's cached bytecode or the upload's ``.part`` file and run code as
        this user (walk C did both)."""
        try:
            self._exec(["sh", "-c", _OWN_WORKDIR, "sh", self.conn.workdir])
        except DeviceError as e:
            reason = str(e).rpartition(": ")[2] or "cannot be created"
            raise DeviceError(f"{self.profile.name}: connection.workdir {self.conn.workdir} {reason}; set "
                              "connection.workdir to a folder of this user's (e.g. under its home)") from None

    def _open_channel(self) -> ChannelLines:
        self._open_session()
        runner_sha = sha256_file(RUNNER)
        remote_runner = self._remote(f"harness_runner_{runner_sha[:12]}.py")
        self._upload(RUNNER, remote_runner, runner_sha)
        probe_sha = sha256_file(HWPROBE)  # GPU/Jetson conditions and energy, loaded by the runner by path
        self.probe_path = self._remote(f"harness_hwprobe_{probe_sha[:12]}.py")
        self._upload(HWPROBE, self.probe_path, probe_sha)
        transport = self.client.get_transport()
        if not self._alive():
            raise ConnectionLost(f"{self.profile.name}: connection closed")
        channel = transport.open_session(timeout=self.conn.connect_timeout_s)
        # -P: the runner's folder must not shadow stdlib modules; cd: relative paths stay in workdir
        channel.exec_command(f"cd {shlex.quote(self.conn.workdir)} && exec "
                             + shlex.join([self.conn.python, "-P", remote_runner, "--serve"]))
        return ChannelLines(channel)

    def _drop(self, force: bool = True) -> None:
        """Closing the channel does not stop a runner busy timing (it dies only when it next writes): one whose
        model timed out ran on beside the next models, and after harness exited. Forced, it is killed by the
        PID its hello gave, if that process is still the runner."""
        pid = self.hello.get("pid") if force and self._channel is not None else None
        super()._drop(force)
        if isinstance(pid, int) and self.client is not None and self._alive():
            try:
                self._exec(["sh", "-c", _KILL_RUNNER, "sh", str(pid)], timeout=10)
            except DeviceError:
                pass

    # --- resilience -----------------------------------------------------------------------
    def _with_reconnect(self, what: str, op: Callable[[], T]) -> T:
        """Run ``op``; after a dropped connection wait (exponential backoff), reconnect and try again."""
        attempts, wait = (self.conn.reconnect_attempts if self.reconnect else 0), self.conn.reconnect_backoff_s
        for attempt in range(attempts + 1):
            try:
                out = op()
            except ConnectionLost as e:
                self.cleanup()
                if attempt == attempts:
                    if attempts:
                        raise ConnectionLost(f"{e} (gave up after {attempts} reconnect attempt(s))") from None
                    raise
                log.warning("%s: connection lost during %s; reconnecting in %.1f s (%d/%d)", self.profile.name,
                            what, wait * 2 ** attempt, attempt + 1, attempts)
                self._drops.append(f"{what}: {clip(str(e), 200)}")
                time.sleep(wait * 2 ** attempt)
                continue
            if self._drops and isinstance(out, RunResult):  # the next visit says the board dropped before or in it
                out.conditions_before["reconnected_after"], self._drops = self._drops, []
            return out
        raise AssertionError("unreachable")

    # --- Driver interface ---------------------------------------------------------------
    def check(self):
        self.reconnect = False
        try:
            return super().check()
        finally:
            self.reconnect = True

    def prepare(self) -> dict:
        return self._with_reconnect("connect", super().prepare)

    def push(self, artifact: Artifact) -> str:
        def op() -> str:
            if self.client is None:
                self._start()
            remote = self._remote(f"{artifact.digest}{artifact.path.suffix}")
            self._upload(artifact.path, remote)
            return remote

        return self._with_reconnect("push", op)

    def run(self, model_ref: str) -> RunResult:
        return self._with_reconnect("run", lambda: super(SSHDriver, self).run(model_ref))

    def cleanup(self) -> None:
        super().cleanup()
        for closable in (self.sftp, self.client):
            try:
                if closable is not None:
                    closable.close()
            except (OSError, paramiko.SSHException, EOFError):
                pass
        self.sftp = self.client = None


def fetch_host_key(host: str, port: int, timeout: float = 10.0) -> paramiko.PKey:
    """The key a server presents, without authenticating (for `harness devices trust`)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise ConnectionLost(f"cannot reach {host}:{port}: {e}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError) as e:
        raise DeviceError(f"{host}:{port} did not complete an SSH handshake: {e}") from None
    finally:
        transport.close()


def recorded_host_keys(known_hosts: str | os.PathLike, host: str, port: int) -> dict[str, paramiko.PKey]:
    """Every key known_hosts holds for the host, by key type (empty: none yet)."""
    path = Path(known_hosts).expanduser()
    if not path.exists():
        return {}
    keys = paramiko.HostKeys()
    keys.load(str(path))
    return dict(keys.lookup(host_id(host, port)) or {})


def record_host_key(known_hosts: str | os.PathLike, host: str, port: int, key: paramiko.PKey) -> Path:
    """Make ``key`` the host's only key in a known_hosts file (created 0600 if missing): a key of another type
    left beside it would still be accepted, so trusting a new key would not retire the old one."""
    path = Path(known_hosts).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = paramiko.HostKeys()
    if path.exists():
        keys.load(str(path))
    while True:
        try:
            del keys[host_id(host, port)]
        except KeyError:
            break
    keys.add(host_id(host, port), key.get_name(), key)
    path.touch(mode=0o600, exist_ok=True)
    keys.save(str(path))
    return path
