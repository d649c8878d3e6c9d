"""The SSH driver against a real OpenSSH sshd on 127.0.0.1 (started by the fixture)."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml

from harness.campaign import run_campaign
from harness.devices.driver import make_driver
from harness.errors import ConnectionLost, DeviceError, DriverUnavailable
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from harness.testing.conformance import DriverConformance
from harness.testing.sshd import TestSSHServer, sshd_available
from tests.conftest import harness

pytestmark = pytest.mark.skipif(not sshd_available(), reason="OpenSSH server not installed")
SPACE = get_space("nb201")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with TestSSHServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


class TestSSHOnnxConformance(DriverConformance):
    @pytest.fixture
    def base_profile(self, sshd):
        return sshd.profile("ssh-onnx")

    @pytest.fixture
    def make_driver(self):
        return make_driver


@pytest.mark.slow
class TestSSHTfliteConformance(DriverConformance):
    """The contract's runtime-dependent part with LiteRT on the far side. What only the transport decides (file
    names, pushes, cleanup, missing files) is the same for either runtime and is checked once, with ONNX above;
    LiteRT's whole contract runs locally (tests/test_driver_local.py). Each test here starts a remote runner
    (~1-2 CPU-s), which is why the duplicates are left out."""

    test_push_is_idempotent = None
    test_hostile_file_names_are_data_not_code = None
    test_cleanup_is_safe_twice = None
    test_missing_model_is_a_driver_error = None
    test_conditions_recorded_before_and_after = None

    @pytest.fixture
    def base_profile(self, sshd):
        return sshd.profile("ssh-tflite", runtime={"name": "tflite", "threads": 1})

    @pytest.fixture
    def make_driver(self):
        return make_driver


def test_models_are_content_named_and_not_copied_twice(sshd, cache_dir):
    art = ModelCache(cache_dir).get(SPACE.build(SPACE.parse("77")), "onnx")
    with make_driver(sshd.profile()) as d:
        ref = d.push(art)
        assert Path(ref).name == f"{art.digest}.onnx" and Path(ref).read_bytes() == art.path.read_bytes()
        mtime = Path(ref).stat().st_mtime_ns
        assert d.push(art) == ref and Path(ref).stat().st_mtime_ns == mtime
        Path(ref).write_bytes(b"tampered")  # a different hash under the same name is replaced
        d.push(art)
        assert Path(ref).read_bytes() == art.path.read_bytes()


def test_remote_conditions_are_recorded(sshd):
    with make_driver(sshd.profile()) as d:
        cond = d.prepare()
        assert cond["kernel"] and cond["runtime_version"] and "device_model" in cond
        art = ModelCache(sshd.root / "c").get(SPACE.build(SPACE.parse("3")), "onnx")
        r = d.run(d.push(art))
        assert "temperatures_c" in r.conditions_before and "cpu_freq_mhz" in r.conditions_after


def test_unknown_host_key_is_refused_with_fingerprint_and_opt_out(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    p = sshd.profile("stranger", connection={"known_hosts": str(empty)})
    with pytest.raises(DeviceError) as info:
        make_driver(p).prepare()
    msg = str(info.value)
    assert "SHA256:" in msg and "harness devices trust stranger" in msg and "insecure_skip_host_key_check" in msg
    report = make_driver(p).check()
    assert not report.ok and "SHA256:" in report.message
    opted_out = sshd.profile("stranger", connection={"known_hosts": str(empty), "insecure_skip_host_key_check": True})
    with make_driver(opted_out) as d:
        assert d.prepare()["runtime_version"]
    assert empty.read_text() == "", "the opt-out must not record the key"


def test_changed_host_key_is_refused(sshd, tmp_path):
    import subprocess

    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = Path(f"{other}.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    with pytest.raises(DeviceError, match="CHANGED") as info:
        make_driver(sshd.profile("moved", connection={"known_hosts": str(kh)})).prepare()
    assert str(info.value).count("SHA256:") == 2
    assert "run `harness devices trust moved`: it shows both keys" in str(info.value)  # trust replaces the entry


@pytest.mark.slow
def test_trust_command_records_the_key(sshd, tmp_path, cli_env, devices_dir):
    kh = tmp_path / "kh" / "known_hosts"
    body = sshd.profile("box", connection={"known_hosts": str(kh)}).as_dict()
    (devices_dir / "box.yaml").write_text(yaml.safe_dump(body))
    refused = harness("devices", "check", "box", env=cli_env, check=False)
    assert refused.returncode == 1 and "SHA256:" in refused.stdout
    out = harness("devices", "trust", "box", "--yes", env=cli_env).stdout
    assert "SHA256:" in out and kh.exists() and oct(kh.stat().st_mode & 0o777) == "0o600"
    assert "ok" in harness("devices", "check", "box", env=cli_env).stdout
    again = harness("devices", "trust", "box", env=cli_env)  # no question: nothing to decide
    assert "already recorded" in again.stdout
    import subprocess

    other = tmp_path / "other"  # the device's key changed: trust says what it replaces before asking
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = Path(f"{other}.pub").read_text().split()
    kh.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    replaced = harness("devices", "trust", "box", "--yes", env={**cli_env, "COLUMNS": "200"})
    assert "this replaces a different key on record" in replaced.stdout and replaced.stdout.count("SHA256:") == 2
    # a key of another type on record: `check` calls it CHANGED, so trust must say it replaces it, and retire it
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "ec")], check=True)
    pub = Path(f"{tmp_path / 'ec'}.pub").read_text().split()
    with kh.open("a") as f:
        f.write(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    replaced = harness("devices", "trust", "box", "--yes", env={**cli_env, "COLUMNS": "200"})
    assert "this replaces a different key on record (ecdsa-sha2-nistp256 SHA256:" in replaced.stdout
    assert len(kh.read_text().splitlines()) == 1 and "ecdsa" not in kh.read_text()


def test_connect_timeout_on_a_silent_host():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    server = TestSSHServer()
    p = server.profile("silent", connection={"port": port, "connect_timeout_s": 1, "key_file": None})
    with pytest.raises(ConnectionLost, match="cannot reach"):
        make_driver(p).prepare()
    silent.close()


def test_a_wrong_interpreter_key_or_port_is_named_in_the_error(sshd, tmp_path):
    """What a user got before: 'the runner went away', 'cannot reach ...: [Errno 2] No such file' for a
    missing key, '[Errno None] Unable to connect to port 1'."""
    t0 = time.monotonic()
    with pytest.raises(DriverUnavailable) as e:  # a setting, not the network: no reconnect with backoff
        make_driver(sshd.profile("py9", connection={"python": "/usr/bin/python9"})).prepare()
    assert time.monotonic() - t0 < 4  # reconnecting twice with backoff took 6 s
    text = str(e.value)
    assert "runner did not start" in text and "python9" in text and "connection.python" in text
    assert "/  /" not in text
    assert "No such file" in text or "not found" in text  # the shell's own words, from the device's stderr
    with pytest.raises(DriverUnavailable, match="connection.key_file .*nokey does not exist"):
        make_driver(sshd.profile("nokey", connection={"key_file": str(tmp_path / "nokey")})).prepare()
    # `devices check` said reachable=True here without having tried
    nokey = make_driver(sshd.profile("nokey", connection={"key_file": str(tmp_path / "nokey")})).check()
    assert not nokey.ok and nokey.reachable is None
    # a key others can read (OpenSSH refuses it; it was used without a word) and a file that is no private key
    # ("cannot reach host", reachable=False)
    loose = tmp_path / "loose"
    loose.write_bytes(sshd.client_key.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(DriverUnavailable, match=r"loose can be read by others \(mode 644\); `chmod 600"):
        make_driver(sshd.profile("loose", connection={"key_file": str(loose)})).prepare()
    pub = tmp_path / "pub"
    pub.write_text(Path(f"{sshd.client_key}.pub").read_text())
    pub.chmod(0o600)
    with pytest.raises(DriverUnavailable, match="pub is a public key"):
        make_driver(sshd.profile("pub", connection={"key_file": str(pub)})).prepare()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    with pytest.raises(ConnectionLost, match=f"nothing answers on 127.0.0.1:{port}.*connection.port"):
        make_driver(sshd.profile("closed", connection={"port": port, "connect_timeout_s": 2})).prepare()


def test_hostile_workdir_and_device_name_are_never_executed(sshd, store_path, cache_dir, tmp_path):
    workdir = str(tmp_path / "work dir; $(touch PWNED) `touch PWNED2` 'q\"")
    p = sshd.profile("evil-name", connection={"workdir": workdir})
    with Store(store_path) as st:
        s = run_campaign(st, p, SPACE, SPACE.parse_many(["5"]), cache=ModelCache(cache_dir))
    assert s.ok == 1 and Path(workdir).is_dir()
    for where in (tmp_path, Path.home(), Path.cwd(), sshd.root):
        assert not list(where.glob("PWNED*"))


def test_a_workdir_others_could_write_into_is_refused_or_closed(sshd, tmp_path):
    """The default workdir lies in the board's shared /tmp: one made there first by another user (or a symlink
    planted there) let that user replace the runner's cached bytecode and run code as this one."""
    import os

    from harness.errors import DeviceError

    mine = tmp_path / "mine"
    mine.mkdir(mode=0o777)
    mine.chmod(0o777)  # made by an older harness under umask 000, say: ours, but anyone could write into it
    d = make_driver(sshd.profile("ssh-own", connection={"workdir": str(mine)}))
    try:
        assert d.check().reachable
    finally:
        d.cleanup()
    assert mine.stat().st_mode & 0o022 == 0  # group and other write taken away
    planted = tmp_path / "planted"
    planted.symlink_to(mine)
    d = make_driver(sshd.profile("ssh-link", connection={"workdir": str(planted)}))
    with pytest.raises(DeviceError, match="connection.workdir .*planted is a symbolic link"):
        try:
            d.prepare()
        finally:
            d.cleanup()
    if os.geteuid() == 0:  # a folder of another user's can only be made as root
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        d = make_driver(sshd.profile("ssh-theirs", connection={"workdir": str(theirs)}))
        with pytest.raises(DeviceError, match="belongs to another user"):
            try:
                d.prepare()
            finally:
                d.cleanup()


@pytest.mark.slow
def test_drop_mid_campaign_loses_nothing_and_rerun_resumes(tmp_path, store_path, cache_dir):
    server = TestSSHServer(tmp_path / "dropping").start()
    try:
        p = server.profile("flaky", policy={"cooldown_seconds": 0.2})
        archs = SPACE.sample(8, 3)
        done = []

        class KillAfterThree:
            def started(self, summary, todo):
                pass

            def model_done(self, outcome, summary):
                done.append(outcome)
                if len(done) == 3:
                    server.kill()

        with Store(store_path) as st:
            with pytest.raises(ConnectionLost):
                run_campaign(st, p, SPACE, archs, cache=ModelCache(cache_dir), observer=KillAfterThree())
            status, message = st.db.execute("SELECT status, message FROM campaigns").fetchone()
            assert status == "failed" and "flaky" in message
            assert len(st.measured_keys("flaky", "nb201")) == 3
            server.start()  # the device is back (same port, same keys)
            s = run_campaign(st, p, SPACE, archs, cache=ModelCache(cache_dir))
            assert (s.ok, s.skipped) == (5, 3)
            m = st.measurements("flaky")
            assert m.key.is_unique and len(m[m.status == "ok"]) == 8
    finally:
        server.kill()


@pytest.mark.slow
def test_private_key_never_reaches_store_or_output(sshd, store_path, cache_dir, cli_env, devices_dir):
    (devices_dir / "keyed.yaml").write_text(yaml.safe_dump(sshd.profile("keyed").as_dict()))
    out = harness("measure", "--device", "keyed", "--arch", "9", env=cli_env)
    secret = Path(sshd.client_key).read_text().splitlines()[1]
    assert secret not in out.stdout + out.stderr
    dump = "\n".join(sqlite3.connect(cli_env["HARNESS_STORE"]).iterdump())
    assert secret not in dump and str(sshd.client_key) in dump  # referenced by path only


@pytest.mark.slow
def test_reconnects_with_backoff_when_the_device_comes_back(tmp_path, store_path, cache_dir):
    server = TestSSHServer(tmp_path / "flapping").start()
    try:
        p = server.profile("flapping", connection={"reconnect_attempts": 4, "reconnect_backoff_s": 0.3})
        archs = SPACE.sample(6, 4)
        done = []

        class DropOnceAfterTwo:
            def started(self, summary, todo):
                pass

            def model_done(self, outcome, summary):
                done.append(outcome)
                if len(done) == 2:
                    server.kill()
                    threading.Timer(0.5, server.start).start()  # back after half a second

        with Store(store_path) as st:
            s = run_campaign(st, p, SPACE, archs, cache=ModelCache(cache_dir), observer=DropOnceAfterTwo())
            assert (s.ok, s.failed, s.status) == (6, 0, "finished")
            assert st.measurements("flapping").key.is_unique
            # the visit after the drop says so (a reconnect left no trace but a log line)
            said = [json.loads(c)["before"].get("reconnected_after") for (c,) in st.db.execute(
                "SELECT conditions_json FROM measurements ORDER BY id").fetchall()]
            assert [bool(x) for x in said] == [False, False, True, False, False, False]
    finally:
        server.kill()


def test_a_timed_out_runner_is_stopped_on_the_device(tmp_path, cache_dir):
    """A model that ran past timeout_seconds failed as "runner stopped", yet the runner went on timing it on the
    board (beside the next models, and after harness exited)."""
    from harness.errors import MeasurementTimeout
    from harness.testing.sshd import processes_with

    server = TestSSHServer(tmp_path / "slow").start()
    try:
        p = server.profile("ssh-slow", policy={"timed_runs": 1_000_000, "timeout_seconds": 3})
        art = ModelCache(cache_dir).get(SPACE.build(SPACE.parse("3")), "onnx")
        with make_driver(p) as d:
            ref = d.push(art)
            with pytest.raises(MeasurementTimeout):
                d.run(ref)
            deadline = time.time() + 10
            while processes_with(str(server.root / "remote work")) and time.time() < deadline:
                time.sleep(0.2)
            left = [pid for pid in processes_with("harness_runner_") if pid in processes_with(str(server.root))]
            assert left == []
    finally:
        server.kill()


def test_a_board_that_stops_answering_ends_the_push_instead_of_hanging(tmp_path, cache_dir, monkeypatch):
    """A frozen board (sshd SIGSTOPped: the connection stays open) hung a campaign in an SFTP stat forever."""
    from harness.devices.ssh import SSHDriver

    monkeypatch.setattr(SSHDriver, "_sftp_stall_s", lambda self: 2.0)
    server = TestSSHServer(tmp_path / "frozen").start()
    try:
        p = server.profile("ssh-frozen")
        art = ModelCache(cache_dir).get(SPACE.build(SPACE.parse("5")), "onnx")
        with make_driver(p) as d:
            d.prepare()
            server.freeze()
            started = time.time()
            with pytest.raises(ConnectionLost, match="stopped answering"):
                d.push(art)
            assert time.time() - started < 30
            server.freeze(False)
    finally:
        server.kill()
