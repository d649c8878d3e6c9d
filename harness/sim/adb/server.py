"""A virtual Android phone that speaks the real ADB protocol over TCP (like a phone after ``adb tcpip``).

It implements the device side of the ADB transport — CNXN, AUTH (TOKEN, SIGNATURE checked against
the accepted RSA keys, RSAPUBLICKEY = "Allow USB debugging?"), OPEN/OKAY/WRTE/CLSE with flow control —
and three services: ``shell:`` (v1: stdout and stderr merged, no exit status), ``exec:`` and ``sync:``
(STAT, STA2/LST2, LIST, SEND, RECV, DATA, DONE, QUIT; requests and data may be split across packets in
both directions). Both ``adb-shell`` and Debian's ``adb`` work against it.

Commands run in :mod:`harness.sim.adb.shell` inside a sandbox folder (:mod:`harness.sim.adb.fs`); ``benchmark_model`` times
the pushed model for real with LiteRT (:mod:`harness.sim.adb.bench`). Faults for tests: drop the connection when
service N+1 is opened, stall (stop answering) from service N+1 on, refuse the RSA key, fill the disk.

    harness sim adb --port 5555 --root /tmp/phone --model pixel4 --auth
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import socket
import stat as st
import struct
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from harness.devices.profile import VIRTUAL_SERIAL, Profile
from harness.sim.adb import proto as P
from harness.sim.adb.bench import BenchWorker, Cancelled, stand_in_binary
from harness.sim.adb.fs import FSError, Sandbox, normalise
from harness.sim.adb.phone import Thermal, identity, properties, virtual_files
from harness.sim.adb.shell import Phone, Shell

FEATURES = "stat_v2,fixed_push_mkdir"  # no shell_v2: clients use shell protocol v1

__all__ = ["Faults", "VirtualPhone", "stand_in_binary", "write_stand_in"]


@dataclass
class Faults:
    """What goes wrong, counted in services opened (each shell command, push, pull or stat is one)."""

    drop_after: int | None = None   # the connection is reset when service drop_after+1 is opened (once)
    stall_after: int | None = None  # from service stall_after+1 on, the phone never answers again
    refuse_auth: bool = False       # the user taps "Deny" on "Allow USB debugging?"
    disk_free: int | None = None    # bytes free on /data; pushes past it fail "No space left on device"


def write_stand_in(path: str | os.PathLike) -> Path:
    """Write the benchmark_model stand-in a virtual phone runs (the driver pushes it like the real binary)."""
    path = Path(path)
    path.write_bytes(stand_in_binary())
    path.chmod(0o755)
    return path


def install_stand_in(root: str | os.PathLike, workdir: str = "/data/local/tmp/harness") -> Path:
    """Put the stand-in where the driver looks (``WORKDIR/benchmark_model``), as if pushed already: a profile
    without ``connection.benchmark_model`` then works."""
    path = Path(root) / workdir.strip("/") / "benchmark_model"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_stand_in(path)
    return path


@contextlib.contextmanager
def serving(profile: Profile, root: str | os.PathLike | None = None) -> Iterator[Profile]:
    """For an ADB profile whose serial is ``virtual``: serve a fresh virtual phone (storage in ``root``, default a
    temp folder) while the block runs and yield the profile pointed at its address; others pass unchanged."""
    conn = profile.connection
    if conn.kind != "adb" or conn.serial != VIRTUAL_SERIAL:
        yield profile
        return
    with contextlib.ExitStack() as stack:
        if root is None:
            root = stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-virtual-phone-"))
        install_stand_in(root, conn.workdir)
        phone = stack.enter_context(VirtualPhone(root))
        yield profile.model_copy(update={"connection": conn.model_copy(update={"serial": phone.address})})


class _Closed(Exception):
    """The connection or stream is gone."""


class VirtualPhone:
    """Serve one virtual phone on ``host:port`` (0 = a free port) with its storage under ``root``."""

    def __init__(self, root: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
                 model: str | None = None, serial: str | None = None, auth: bool = False,
                 adb_keys: Iterable[str | bytes] = (), accept_new_keys: bool = True, faults: Faults | None = None,
                 max_payload: int = P.MAX_PAYLOAD):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port
        self.identity = identity(model)
        self.serial = serial
        self.auth = auth
        self.keys: list[rsa.RSAPublicKey] = [P.decode_pubkey(k) for k in adb_keys]
        self.accept_new_keys = accept_new_keys
        self.faults = faults or Faults()
        self.max_payload = max(256, min(max_payload, P.MAX_PAYLOAD))
        self.services: list[str] = []  # every service opened, e.g. "shell:getprop ro.product.model"
        self.stalled = False
        self.busy = threading.Event()
        self.thermal = Thermal()
        self.worker = BenchWorker()
        self._sock: socket.socket | None = None
        self._conns: set[_Connection] = set()
        self._lock = threading.Lock()
        self._phone: Phone | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> VirtualPhone:
        sock = socket.create_server((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.serial = self.serial or f"virtual-{self.port}"
        box = Sandbox(self.root, virtual_files(self.identity, self.thermal, self.busy), self.faults.disk_free)
        self._phone = Phone(box, self.identity, properties(self.identity, self.serial), self.worker,
                            self.thermal, self.busy)
        self._sock = sock
        threading.Thread(target=self._accept, daemon=True, name=f"adb-sim-{self.port}").start()
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def phone(self) -> Phone:
        assert self._phone is not None, "start() the virtual phone first"
        return self._phone

    @property
    def executed(self) -> list[list[str]]:
        """Every command (argv after expansion) the phone's shell executed."""
        return self.phone.log

    def set_disk_free(self, free: int | None) -> None:
        self.faults.disk_free = free
        self.phone.box.free_bytes = free

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()
        self.worker.close()

    def __enter__(self) -> VirtualPhone:
        return self.start() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until interrupted (the CLI)."""
        if self._sock is None:
            self.start()
        try:
            threading.Event().wait()
        finally:
            self.stop()

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Connection(self, conn)
            with self._lock:
                self._conns.add(c)
            threading.Thread(target=c.serve, daemon=True).start()

    def _forget(self, c: _Connection) -> None:
        with self._lock:
            self._conns.discard(c)

    def _open_allowed(self) -> str:
        """Count one service; returns "ok", "drop" or "stall" per the faults."""
        with self._lock:
            n = len(self.services)
            f = self.faults
            if f.drop_after is not None and n >= f.drop_after:
                f.drop_after = None
                return "drop"
            if self.stalled or (f.stall_after is not None and n >= f.stall_after):
                self.stalled = True
                return "stall"
            return "ok"

    def banner(self) -> bytes:
        i = self.identity
        return (f"device::ro.product.name={i.device};ro.product.model={i.model};ro.product.device={i.device};"
                f"features={FEATURES}").encode()


class _Stream:
    """One ADB stream (socket) on the device side, with ADB's one-WRTE-in-flight flow control."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.ready = threading.Event()
        self.ready.set()
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.buffer = bytearray()
        self.cancelled = threading.Event()
        self.closed = False

    def write(self, data: bytes) -> None:
        limit = self.conn.maxdata
        for i in range(0, len(data), limit):
            while not self.ready.wait(0.1):
                if self.cancelled.is_set() or self.conn.dead.is_set():
                    raise Cancelled()
            if self.cancelled.is_set():
                raise Cancelled()
            self.ready.clear()
            self.conn.send(P.Message(P.A_WRTE, self.local_id, self.remote_id, data[i:i + limit]))

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.inbox.get()
            if chunk is None:
                raise _Closed()
            self.buffer += chunk
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def close(self) -> None:
        """Close from the device side (the host answers with its own CLSE, which we then ignore)."""
        if not self.closed:
            self.closed = True
            self.conn.streams.pop(self.local_id, None)
            self.conn.send(P.Message(P.A_CLSE, self.local_id, self.remote_id))

    def cancel(self) -> None:
        self.closed = True
        self.cancelled.set()
        self.inbox.put(None)


class _Connection:
    def __init__(self, phone: VirtualPhone, sock: socket.socket):
        self.vp, self.sock = phone, sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.authed = not phone.auth
        self.token = b""
        self.maxdata = P.MAX_PAYLOAD_V1
        self.dead = threading.Event()

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Closed()
            buf += chunk
        return bytes(buf)

    def send(self, msg: P.Message) -> None:
        if self.dead.is_set():
            raise Cancelled()
        try:
            with self.send_lock:
                self.sock.sendall(msg.pack())
        except OSError:
            self.close()
            raise Cancelled() from None

    def serve(self) -> None:
        try:
            while not self.dead.is_set():
                msg = P.read_message(self.recv_exact)
                if self.vp.stalled:
                    continue  # a hung phone: reads everything, answers nothing
                self.handle(msg)
        except (_Closed, OSError, P.ProtocolError, Cancelled, struct.error):
            pass
        finally:
            self.close()

    def close(self, reset: bool = False) -> None:
        if self.dead.is_set():
            return
        self.dead.set()
        for s in list(self.streams.values()):
            s.cancel()
        self.streams.clear()
        with contextlib.suppress(OSError):
            if reset:  # RST instead of FIN, as when a phone drops off the network
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.vp._forget(self)

    # --- transport -------------------------------------------------------------------------
    def handle(self, msg: P.Message) -> None:
        if msg.command == P.A_CNXN:
            self.maxdata = max(256, min(msg.arg1, self.vp.max_payload))
            if self.authed:
                self._connected()
            else:
                self._challenge()
        elif msg.command == P.A_AUTH:
            self._auth(msg)
        elif not self.authed:
            return  # adbd ignores everything else until the host is authorised
        elif msg.command == P.A_OPEN:
            self._open(msg)
        elif msg.command == P.A_OKAY:
            s = self.streams.get(msg.arg1)
            if s is not None:
                s.ready.set()
        elif msg.command == P.A_WRTE:
            s = self.streams.get(msg.arg1)
            if s is not None:  # acknowledge before the service can answer: adb-shell drops out-of-order WRTEs
                self.send(P.Message(P.A_OKAY, s.local_id, s.remote_id))
                s.inbox.put(msg.data)
        elif msg.command == P.A_CLSE:
            s = self.streams.pop(msg.arg1, None)
            if s is not None and not s.closed:
                s.cancel()
                self.send(P.Message(P.A_CLSE, s.local_id, s.remote_id))

    def _connected(self) -> None:
        self.send(P.Message(P.A_CNXN, P.A_VERSION, self.vp.max_payload, self.vp.banner()))

    def _challenge(self) -> None:
        self.token = secrets.token_bytes(P.TOKEN_SIZE)
        self.send(P.Message(P.A_AUTH, P.AUTH_TOKEN, 0, self.token))

    def _auth(self, msg: P.Message) -> None:
        if self.authed or not self.token:
            return
        if msg.arg0 == P.AUTH_SIGNATURE:
            if any(P.verify_token(k, self.token, msg.data) for k in self.vp.keys):
                self.authed = True
                self._connected()
            else:
                self._challenge()  # try the next key
        elif msg.arg0 == P.AUTH_RSAPUBLICKEY:
            if self.vp.faults.refuse_auth:
                self.close()  # "Deny": the host stays unauthorised
                return
            if not self.vp.accept_new_keys:
                return  # nobody at the phone to tap "Allow"
            try:
                key = P.decode_pubkey(msg.data)
            except ValueError:
                self.close()
                return
            self.vp.keys.append(key)
            self.authed = True
            self._connected()

    def _open(self, msg: P.Message) -> None:
        service = msg.data.rstrip(b"\0").decode(errors="replace")
        verdict = self.vp._open_allowed()
        self.vp.services.append(service)
        if verdict == "drop":
            self.close(reset=True)
            return
        if verdict == "stall":
            return
        kind, _, arg = service.partition(":")
        if kind not in ("shell", "exec", "sync") or (kind == "shell" and not arg):
            self.send(P.Message(P.A_CLSE, 0, msg.arg0))  # service not available: the open fails
            return
        stream = _Stream(self, self.next_id, msg.arg0)
        self.next_id += 1
        self.streams[stream.local_id] = stream
        self.send(P.Message(P.A_OKAY, stream.local_id, stream.remote_id))
        target = self._sync if kind == "sync" else self._shell
        threading.Thread(target=self._guard, args=(target, stream, arg), daemon=True).start()

    def _guard(self, target, stream: _Stream, arg: str) -> None:
        try:
            target(stream, arg)
        except (Cancelled, _Closed):
            pass
        with contextlib.suppress(Cancelled):
            stream.close()

    # --- services --------------------------------------------------------------------------
    def _shell(self, stream: _Stream, command: str) -> None:
        Shell(self.vp.phone, stream.cancelled).run(command, stream.write)

    def _sync(self, stream: _Stream, _: str) -> None:
        box = self.vp.phone.box
        while True:
            sid, length = P.SYNC_REQUEST.unpack(stream.read_exact(8))
            if sid == P.ID_QUIT:
                return
            if length > P.SYNC_PATH_MAX:
                self._sync_fail(stream, "path too long")
                return
            raw = stream.read_exact(length).decode(errors="surrogateescape")
            if sid == P.ID_STAT:
                try:
                    mode, size, mtime = box.stat(normalise(raw))
                except FSError:
                    mode = size = mtime = 0
                stream.write(P.SYNC_STAT_V1.pack(P.ID_STAT, mode, size & 0xFFFFFFFF, mtime))
            elif sid in (P.ID_STAT_V2, P.ID_LSTAT_V2):
                try:
                    mode, size, mtime = box.stat(normalise(raw))
                    err = 0
                except FSError as e:
                    mode = size = mtime = 0
                    err = e.errno
                stream.write(P.SYNC_STAT_V2.pack(sid, err, 0, 0, mode, 1 if mode else 0, 2000, 2000, size,
                                                 mtime, mtime, mtime))
            elif sid == P.ID_LIST:
                self._list(stream, normalise(raw))
            elif sid == P.ID_SEND:
                if not self._send(stream, raw):
                    return
            elif sid == P.ID_RECV:
                if not self._recv(stream, normalise(raw)):
                    return
            else:
                self._sync_fail(stream, f"unknown command {sid!r}")
                return

    @staticmethod
    def _sync_fail(stream: _Stream, message: str) -> None:
        data = message.encode()
        stream.write(P.SYNC_REQUEST.pack(P.ID_FAIL, len(data)) + data)

    def _list(self, stream: _Stream, path: str) -> None:
        box = self.vp.phone.box
        out = bytearray()
        try:
            names = box.listdir(path)
        except FSError:
            names = []
        for name in [".", "..", *names]:
            try:
                mode, size, mtime = box.stat(path if name in (".", "..") else f"{path.rstrip('/')}/{name}")
            except FSError:
                continue
            raw = name.encode(errors="surrogateescape")
            out += P.SYNC_DENT_V1.pack(P.ID_DENT, mode, size & 0xFFFFFFFF, mtime, len(raw)) + raw
        out += P.SYNC_DENT_V1.pack(P.ID_DONE, 0, 0, 0, 0)
        stream.write(bytes(out))

    def _send(self, stream: _Stream, spec: str) -> bool:
        """SEND path,mode then DATA... DONE(mtime); answers OKAY, or FAIL with adbd's message once DONE arrives."""
        box = self.vp.phone.box
        path, _, mode_text = spec.rpartition(",")
        error = None
        f = None
        try:
            mode = int(mode_text)
        except ValueError:
            path, mode = spec, 0o644
        trailing_slash = path.endswith("/")
        path = normalise(path)
        if trailing_slash:
            error = "couldn't create file: Is a directory"
        elif st.S_ISLNK(mode):
            error = "symlinks are not supported by the virtual phone"
        else:
            try:
                parent = os.path.dirname(path)
                if not box.exists(parent):
                    box.mkdir(parent, parents=True)
                f = box.open_write(path, mode & 0o777 or 0o644)
            except FSError as e:
                error = f"couldn't create file: {e.strerror}"
        while True:
            sid, size = P.SYNC_REQUEST.unpack(stream.read_exact(8))
            if sid == P.ID_DONE:
                break
            if sid != P.ID_DATA or size > P.SYNC_DATA_MAX:
                error = error or ("oversize data message" if sid == P.ID_DATA else "invalid data message")
                if f is not None:
                    f.discard()
                self._sync_fail(stream, error)
                return False
            chunk = stream.read_exact(size)
            if f is not None and error is None:
                try:
                    f.write(chunk)
                except FSError as e:
                    error = f"write failed: {e.strerror}"
        if f is not None:
            if error is None:
                f.close()
            else:
                f.discard()
        if error is not None:
            self._sync_fail(stream, error)
            return False
        stream.write(P.SYNC_REQUEST.pack(P.ID_OKAY, 0))
        return True

    def _recv(self, stream: _Stream, path: str) -> bool:
        box = self.vp.phone.box
        try:
            if box.is_dir(path):
                raise FSError(21, path)  # EISDIR
            data = box.read(path)
        except FSError as e:
            self._sync_fail(stream, f"open failed: {e.strerror}")
            return False
        for i in range(0, len(data), P.SYNC_DATA_MAX):
            chunk = data[i:i + P.SYNC_DATA_MAX]
            stream.write(P.SYNC_REQUEST.pack(P.ID_DATA, len(chunk)) + chunk)
        stream.write(P.SYNC_REQUEST.pack(P.ID_DONE, 0))
        return True
