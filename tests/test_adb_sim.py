"""The virtual phone at the protocol level: adb-shell and Debian's adb against it, auth, sync, sandbox, faults."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from adb_shell import exceptions as adb_errors
from adb_shell.adb_device import AdbDeviceTcp
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.devices.adb import _KeySigner, ensure_key
from harness.devices.adb_benchmark import parse_output
from harness.sim.adb import proto as P
from harness.sim.adb.server import Faults, VirtualPhone, write_stand_in

TMP = "/data/local/tmp"


@pytest.fixture
def phone(tmp_path):
    with VirtualPhone(tmp_path / "phone", model="pixel4") as vp:
        yield vp


def connect(vp: VirtualPhone, keys=None, timeout: float = 5.0) -> AdbDeviceTcp:
    d = AdbDeviceTcp("127.0.0.1", vp.port, default_transport_timeout_s=timeout)
    d.connect(rsa_keys=keys, auth_timeout_s=timeout, read_timeout_s=timeout)
    return d


class Raw:
    """A bare ADB host for byte-level tests (split packets, wrong signatures)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def send(self, cmd: int, a0: int, a1: int, data: bytes = b"") -> None:
        self.sock.sendall(P.Message(cmd, a0, a1, data).pack())

    def recv(self) -> P.Message:
        def exact(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = self.sock.recv(n - len(buf))
                if not chunk:
                    raise EOFError
                buf += chunk
            return buf
        return P.read_message(exact)

    def connect(self) -> P.Message:
        self.send(P.A_CNXN, P.A_VERSION, P.MAX_PAYLOAD, b"host::\0")
        return self.recv()

    def open(self, service: bytes, local: int = 1) -> int:
        self.send(P.A_OPEN, local, 0, service + b"\0")
        m = self.recv()
        assert m.command == P.A_OKAY and m.arg1 == local
        return m.arg0

    def write(self, local: int, remote: int, data: bytes) -> None:
        self.send(P.A_WRTE, local, remote, data)
        m = self.recv()
        assert m.command == P.A_OKAY

    def read_until_close(self, local: int, remote: int) -> bytes:
        out = b""
        while True:
            m = self.recv()
            if m.command == P.A_WRTE:
                out += m.data
                self.send(P.A_OKAY, local, remote)
            elif m.command == P.A_CLSE:
                return out


# --- adb-shell ------------------------------------------------------------------------------

def test_shell_identity_and_sysfs(phone):
    d = connect(phone)
    assert d.shell("getprop ro.product.model") == "Pixel 4\n"
    assert d.shell("getprop ro.board.platform; getprop ro.build.version.release") == "msmnile\n13\n"
    props = d.shell("getprop")
    assert "[ro.soc.model]: [SM8150]" in props
    freqs = d.shell("cat /sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_max_freq "
                    "/sys/class/power_supply/battery/temp").split()
    assert freqs[0] == "2841600" and 200 < int(freqs[1]) < 600
    assert d.shell("ls /sys/class/thermal").split()[:2] == ["thermal_zone0", "thermal_zone1"]
    assert d.exec_out("echo exec works") == "exec works\n"
    # toybox has head and tail (README's `adb shell 'cat /proc/cpuinfo | head -3'` said "not found")
    cpuinfo = d.shell("cat /proc/cpuinfo").splitlines(keepends=True)
    assert d.shell("cat /proc/cpuinfo | head -3") == "".join(cpuinfo[:3])
    assert d.shell("head -n 2 /proc/cpuinfo") == "".join(cpuinfo[:2])
    assert d.shell("tail -n1 /proc/cpuinfo") == cpuinfo[-1]
    assert d.shell("tail -n +3 /proc/cpuinfo") == "".join(cpuinfo[2:])
    assert "head: bad -n '-1'" in d.shell("head -n -1 /proc/cpuinfo")  # said "Unknown option '--1'"
    assert "Unknown option 'c'" in d.shell("head -c 5 /proc/cpuinfo")
    assert "No such file" in d.shell("head /nope")
    d.close()


def test_shell_quoting_status_and_substitution(phone):
    d = connect(phone)
    assert d.shell("""echo 'a  b' "c $HOME" d\\ e; false; echo rc=$?""") == "a  b c / d e\nrc=1\n"
    assert d.shell("echo $(echo inner) `echo tick`") == "inner tick\n"
    assert d.shell("nosuchcmd; echo $?") == "/system/bin/sh: nosuchcmd: inaccessible or not found\n127\n"
    assert d.shell("mkdir -p /data/local/tmp/x && cd /data/local/tmp/x && pwd && echo hi > f && cat f") == \
        "/data/local/tmp/x\nhi\n"
    d.close()


def test_sync_push_pull_stat_list_roundtrip(phone, tmp_path):
    d = connect(phone)
    data = os.urandom(300_000)
    d.push(io.BytesIO(data), f"{TMP}/blob.bin", st_mode=0o100644)
    mode, size, _ = d.stat(f"{TMP}/blob.bin")
    assert size == len(data) and mode & 0o777 == 0o644
    out = io.BytesIO()
    d.pull(f"{TMP}/blob.bin", out)
    assert out.getvalue() == data
    assert (phone.root / "data/local/tmp/blob.bin").read_bytes() == data
    names = {bytes(f.filename).decode() for f in d.list(TMP)}
    assert {".", "..", "blob.bin"} <= names
    assert d.stat(f"{TMP}/missing") == (0, 0, 0)
    digest = d.shell(f"sha256sum {TMP}/blob.bin").split()[0]
    import hashlib

    assert digest == hashlib.sha256(data).hexdigest()
    d.close()


def test_small_packets_split_sync_streams_both_ways(tmp_path):
    data = os.urandom(6_000)  # adb-shell's own TCP transport writes header and payload apart (Nagle): keep it small
    with VirtualPhone(tmp_path / "p", max_payload=512) as vp:
        d = connect(vp)  # adb-shell splits its WRTEs to the phone's 512-byte maximum
        d.push(io.BytesIO(data), f"{TMP}/split.bin")
        out = io.BytesIO()
        d.pull(f"{TMP}/split.bin", out)
        assert out.getvalue() == data
        d.close()


def test_sync_request_split_at_odd_byte_boundaries(phone):
    raw = Raw(phone.port)
    assert raw.connect().command == P.A_CNXN
    remote = raw.open(b"sync:")
    payload = b"x" * 1000 + b"y" * 77
    path = f"{TMP}/odd.bin,33188".encode()
    stream = (P.SYNC_REQUEST.pack(P.ID_SEND, len(path)) + path + P.SYNC_REQUEST.pack(P.ID_DATA, len(payload))
              + payload + P.SYNC_REQUEST.pack(P.ID_DONE, 1_700_000_000))
    for cut in (3, 5, 1, 17, 400, 2, 1000):  # the 8-byte headers and the path straddle packets
        piece, stream = stream[:cut], stream[cut:]
        if piece:
            raw.write(1, remote, piece)
    if stream:  # an empty WRTE would race its OKAY against the sync reply
        raw.write(1, remote, stream)
    m = raw.recv()
    assert m.command == P.A_WRTE and m.data[:4] == P.ID_OKAY
    assert (phone.root / "data/local/tmp/odd.bin").read_bytes() == payload
    raw.send(P.A_OKAY, 1, remote)
    # RECV answers in DATA chunks that a 256-byte transport splits across many WRTEs
    raw.send(P.A_CLSE, 1, remote)
    raw.sock.close()


def test_recv_reassembles_from_many_packets(tmp_path):
    with VirtualPhone(tmp_path / "p", max_payload=256) as vp:
        (vp.root / "data/local/tmp/r.bin").write_bytes(bytes(range(256)) * 20)
        raw = Raw(vp.port)
        cnxn = raw.connect()
        assert cnxn.arg1 == 256
        remote = raw.open(b"sync:")
        path = f"{TMP}/r.bin".encode()
        raw.write(1, remote, P.SYNC_REQUEST.pack(P.ID_RECV, len(path)) + path)
        buf, packets = b"", 0
        while not buf.endswith(P.SYNC_REQUEST.pack(P.ID_DONE, 0)):
            m = raw.recv()
            assert m.command == P.A_WRTE and len(m.data) <= 256
            buf += m.data
            packets += 1
            raw.send(P.A_OKAY, 1, remote)
        assert packets > 20
        body, i = b"", 0
        while buf[i:i + 4] == P.ID_DATA:
            n = P.SYNC_REQUEST.unpack(buf[i:i + 8])[1]
            body += buf[i + 8:i + 8 + n]
            i += 8 + n
        assert body == bytes(range(256)) * 20


# --- authentication ------------------------------------------------------------------------

def test_rsa_signature_is_really_checked(tmp_path):
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with VirtualPhone(tmp_path / "p", auth=True, adb_keys=[P.encode_pubkey(good.public_key())],
                      accept_new_keys=False) as vp:
        raw = Raw(vp.port)
        t1 = raw.connect()
        assert t1.command == P.A_AUTH and t1.arg0 == P.AUTH_TOKEN and len(t1.data) == P.TOKEN_SIZE
        raw.send(P.A_AUTH, P.AUTH_SIGNATURE, 0, P.sign_token(other, t1.data))  # unknown key
        t2 = raw.recv()
        assert t2.command == P.A_AUTH and t2.arg0 == P.AUTH_TOKEN and t2.data != t1.data
        raw.send(P.A_AUTH, P.AUTH_SIGNATURE, 0, P.sign_token(good, t1.data))  # right key, stale token
        t3 = raw.recv()
        assert t3.command == P.A_AUTH
        raw.send(P.A_OPEN, 1, 0, b"shell:echo no\0")  # ignored while unauthorised
        raw.send(P.A_AUTH, P.AUTH_SIGNATURE, 0, P.sign_token(good, t3.data))
        cnxn = raw.recv()
        assert cnxn.command == P.A_CNXN and b"ro.product.model=" in cnxn.data
        assert vp.services == []


def test_adb_shell_authenticates_with_known_key(tmp_path):
    key = tmp_path / "keys" / "adbkey"
    ensure_key(key)
    assert key.stat().st_mode & 0o777 == 0o600
    pub = (tmp_path / "keys" / "adbkey.pub").read_bytes()
    with VirtualPhone(tmp_path / "p", auth=True, adb_keys=[pub], accept_new_keys=False) as vp:
        d = connect(vp, keys=[_KeySigner(key)])
        assert d.shell("echo authorised") == "authorised\n"
        d.close()
        with pytest.raises(adb_errors.DeviceAuthError):
            connect(vp, keys=None)


def test_new_key_is_accepted_like_tapping_allow(tmp_path):
    key = tmp_path / "adbkey"
    with VirtualPhone(tmp_path / "p", auth=True) as vp:
        d = connect(vp, keys=[_KeySigner(key)])
        assert d.shell("echo ok") == "ok\n"
        d.close()
        assert len(vp.keys) == 1


def test_refused_auth_closes_the_connection(tmp_path):
    with VirtualPhone(tmp_path / "p", auth=True, faults=Faults(refuse_auth=True)) as vp:
        with pytest.raises((adb_errors.AdbTimeoutError, adb_errors.TcpTimeoutException, OSError)):
            connect(vp, keys=[_KeySigner(tmp_path / "adbkey")], timeout=1)
        assert vp.services == [] and vp.keys == []


# --- sandbox ---------------------------------------------------------------------------------

def test_sandbox_confines_dotdot_absolute_paths_and_symlinks(phone, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("top secret")
    os.symlink(outside, phone.root / "data/local/tmp/evil")
    d = connect(phone)
    assert d.shell(f"cat {TMP}/../../../../../../{outside}/secret; echo $?").endswith("No such file or directory\n1\n")
    out = d.shell(f"cat {TMP}/evil/secret; ls {TMP}/evil; echo > {TMP}/evil/new; echo $?")
    assert "top secret" not in out and "Permission denied" in out
    with pytest.raises(adb_errors.AdbCommandFailureException):
        d.pull(f"{TMP}/evil/secret", io.BytesIO())
    with pytest.raises(adb_errors.PushFailedError):
        d.push(io.BytesIO(b"x"), f"{TMP}/evil/pushed")
    d.push(io.BytesIO(b"stays inside"), "/../../../escape.txt")
    assert (phone.root / "escape.txt").read_bytes() == b"stays inside"
    assert d.shell("cat /etc/passwd; echo $?").endswith("1\n")  # the phone's /etc, inside the sandbox: absent
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "new").exists()
    d.close()


def test_quoted_substitution_is_data_unquoted_runs_inside_the_sandbox(phone, tmp_path):
    d = connect(phone)
    assert d.shell(f"echo '$(touch {TMP}/PWNED)' \"\\`touch x\\`\"") == f"$(touch {TMP}/PWNED) `touch x`\n"
    assert not (phone.root / "data/local/tmp/PWNED").exists()
    d.shell(f"echo $(touch {TMP}/PWNED)")  # a real shell would run it; so does the virtual phone, confined
    assert (phone.root / "data/local/tmp/PWNED").exists()
    assert not list(tmp_path.glob("PWNED")) and not list(Path.cwd().glob("PWNED"))
    d.close()


# --- benchmark_model -----------------------------------------------------------------------

def test_benchmark_model_prints_real_parseable_output(phone, tmp_path):
    from harness.models.cache import ModelCache
    from harness.models.spaces import get_space

    sp = get_space("nb201")
    art = ModelCache(tmp_path / "cache").get(sp.build(sp.parse("0")), "tflite")
    d = connect(phone)
    d.push(str(write_stand_in(tmp_path / "bm")), f"{TMP}/benchmark_model", st_mode=0o100755)
    d.push(str(art.path), f"{TMP}/m.tflite")
    out = d.shell(f"taskset f0 {TMP}/benchmark_model --graph={TMP}/m.tflite --num_threads=1 --warmup_runs=3 "
                  "--warmup_min_secs=0 --num_runs=7 --min_secs=0 --max_secs=60; echo rc=$?")
    assert out.endswith("rc=0\n")
    assert "INFO: Loaded model /data/local/tmp/m.tflite" in out
    assert re.search(r"INFO: Initialized session in [0-9.]+ms\.", out)
    assert re.search(r"INFO: count=7 first=\d+ curr=\d+ min=\d+ max=\d+ avg=[0-9.e+]+ std=\d+ p5=\d+ "
                     r"median=\d+ p95=\d+", out)
    assert "Inference timings in us: Init: " in out
    parsed = parse_output(out)
    assert parsed.warmup.stat.count == 3 and parsed.timed_stat().count == 7
    missing = d.shell(f"{TMP}/benchmark_model --graph={TMP}/nope.tflite; echo rc=$?")
    assert "ERROR: Failed to mmap model" in missing and missing.endswith("rc=1\n")
    plain = d.shell(f"cat {TMP}/m.tflite > {TMP}/copy; chmod 755 {TMP}/copy; {TMP}/copy; echo rc=$?")
    assert "Exec format error" in plain and plain.endswith("rc=126\n")
    d.close()


# --- faults ----------------------------------------------------------------------------------

def test_drop_after_n_services_resets_once(tmp_path):
    with VirtualPhone(tmp_path / "p", faults=Faults(drop_after=2)) as vp:
        d = connect(vp, timeout=2)
        d.shell("echo 1")
        d.shell("echo 2")
        with pytest.raises(Exception):
            d.shell("echo 3")
        d.close()
        d = connect(vp)  # the phone is back
        assert d.shell("echo 4") == "4\n"
        d.close()


def test_stall_never_answers(tmp_path):
    with VirtualPhone(tmp_path / "p", faults=Faults(stall_after=1)) as vp:
        d = connect(vp, timeout=1)
        d.shell("echo 1")
        t0 = time.monotonic()
        with pytest.raises((adb_errors.TcpTimeoutException, adb_errors.AdbTimeoutError)):
            d.shell("echo 2", transport_timeout_s=0.5, read_timeout_s=0.5)
        assert time.monotonic() - t0 < 3
        d.close()


def test_disk_full_push_fails_with_adbds_message(tmp_path):
    with VirtualPhone(tmp_path / "p", faults=Faults(disk_free=1000)) as vp:
        d = connect(vp)
        with pytest.raises(adb_errors.PushFailedError, match="write failed: No space left on device"):
            d.push(io.BytesIO(b"z" * 5000), f"{TMP}/big.bin")
        d = connect(vp)
        assert "big.bin" not in d.shell(f"ls {TMP}")
        assert "/data" in d.shell("df /data")
        d.close()


# --- the CLI -----------------------------------------------------------------------------------

def test_cli_serves_a_phone(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "sim", "adb", "--port", "0", "--root",
                             str(tmp_path / "root"), "--model", "s5e"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        d = AdbDeviceTcp("127.0.0.1", port, default_transport_timeout_s=5)
        d.connect(rsa_keys=None)
        assert d.shell("getprop ro.product.model") == "SM-T720\n"
        d.close()
        from harness.devices.adb import ADBDriver
        from harness.devices.profile import parse_profile

        profile = parse_profile({"name": "cli-phone", "connection": {"kind": "adb", "serial": f"127.0.0.1:{port}",
                                 "key_file": str(tmp_path / "adbkey")}, "runtime": {"name": "tflite"}}, "test")
        driver = ADBDriver(profile)  # no benchmark_model in the profile: the CLI phone has its stand-in
        assert driver.prepare()["benchmark_model_source"] == "already on the device"
        driver.cleanup()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- Debian's adb client -----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def adb_client(tmp_path_factory):
    """Debian's adb with a private server (own port, own HOME and keys); killed at the end."""
    if shutil.which("adb") is None:
        pytest.skip("Debian's adb client is not installed (apt-get install adb)")
    home = tmp_path_factory.mktemp("adb-home")
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(_free_port()),
           "ANDROID_SDK_HOME": str(home)}
    env.pop("ADB_VENDOR_KEYS", None)

    def adb(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        p = subprocess.run(["adb", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"adb {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    adb("start-server")
    adb.home = home  # type: ignore[attr-defined]
    yield adb
    adb("kill-server", check=False)


def test_debian_adb_connect_shell_push_pull(adb_client, tmp_path):
    pub = (adb_client.home / ".android" / "adbkey.pub").read_text()
    with VirtualPhone(tmp_path / "p", model="pixel3", auth=True, adb_keys=[pub], accept_new_keys=False) as vp:
        serial = vp.address
        assert f"connected to {serial}" in adb_client("connect", serial).stdout
        try:
            assert adb_client("-s", serial, "shell", "getprop", "ro.product.model").stdout == "Pixel 3\n"
            assert adb_client("-s", serial, "shell", "echo 'a b'; echo $?").stdout == "a b\n0\n"
            src = tmp_path / "up.bin"
            src.write_bytes(os.urandom(200_000))
            pushed = adb_client("-s", serial, "push", str(src), f"{TMP}/up.bin")
            assert "1 file pushed" in pushed.stdout
            assert (vp.root / "data/local/tmp/up.bin").read_bytes() == src.read_bytes()
            adb_client("-s", serial, "pull", f"{TMP}/up.bin", str(tmp_path / "down.bin"))
            assert (tmp_path / "down.bin").read_bytes() == src.read_bytes()
            assert "/proc/version" not in adb_client("-s", serial, "exec-out", "cat /proc/version").stdout
            vp.set_disk_free(10)
            full = adb_client("-s", serial, "push", str(src), f"{TMP}/full.bin", check=False)
            assert full.returncode != 0
            assert "remote write failed: No space left on device" in full.stdout + full.stderr
        finally:
            adb_client("disconnect", serial, check=False)


def test_debian_adb_unknown_key_is_refused(adb_client, tmp_path):
    with VirtualPhone(tmp_path / "p", auth=True, faults=Faults(refuse_auth=True)) as vp:
        out = adb_client("connect", vp.address, check=False)
        try:
            # adb prints "failed to authenticate" when the refusal beats its wait, else "connected" and the
            # device stays unauthorized (seen on a loaded machine): either way no shell, no service opened
            assert f"failed to authenticate to {vp.address}" in out.stdout or \
                f"connected to {vp.address}" in out.stdout, out.stdout
            listed = adb_client("devices", check=False).stdout
            assert f"{vp.address}\tdevice" not in listed, listed
            shell = adb_client("-s", vp.address, "shell", "echo hi", check=False)
            assert shell.returncode != 0 and "hi" not in shell.stdout and vp.services == []
        finally:
            adb_client("disconnect", vp.address, check=False)
