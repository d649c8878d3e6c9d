"""Adversarial cases from issue 13: every fault gives a clear error, nothing is lost, nothing is escalated."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from harness.devices.registry import ProfileRegistry
from harness.devices.runner_client import RunnerDriver
from harness.errors import ParseError, StoreError
from harness.models.spaces import get_space
from harness.results.store import Store, utcnow


# --- item 2: runner answers are validated ------------------------------------------------------------
class ScriptedChannel:
    """A line channel whose runner answers from a script (what a broken or hostile runner could say)."""

    def __init__(self, answers: list[str]):
        self.answers = list(answers)

    def send(self, line: str) -> None:
        pass

    def receive(self, timeout: float) -> str | None:
        return self.answers.pop(0) if self.answers else ""

    def close(self, force: bool = False) -> None:
        pass

    def diagnostics(self) -> str:
        return ""


HELLO = json.dumps({"ok": True, "protocol": 1, "versions": {"python": "3.11", "onnxruntime": "1.2"},
                    "conditions": {}})


class ScriptedDriver(RunnerDriver):
    kind = "local"

    def __init__(self, profile, answers: list[str]):
        super().__init__(profile)
        self.script = [HELLO, *answers]

    def _open_channel(self):
        return ScriptedChannel(self.script)

    def push(self, artifact) -> str:
        return str(artifact.path)


GOOD = {"ok": True, "init_ms": 1.0, "warmup_ms": [1.0], "timed_ms": [1.0, 2.0]}
BAD_ANSWERS = [
    '{"ok": true, "init_ms": 1.0, "warmup_ms": [], "timed_ms": [NaN, 1.0]}',
    json.dumps({**GOOD, "timed_ms": []}),
    json.dumps({**GOOD, "timed_ms": ["fast", "slow"]}),
    json.dumps({k: v for k, v in GOOD.items() if k != "timed_ms"}),
    json.dumps({**GOOD, "timed_ms": [-5.5, -5.5]}),
    json.dumps({**GOOD, "timed_ms": [0.0]}),
    '{"ok": true, "init_ms": 1.0, "warmup_ms": [], "timed_ms": [Infinity]}',
    json.dumps({**GOOD, "warmup_ms": "x"}),
    json.dumps({**GOOD, "init_ms": "soon"}),
    json.dumps([1, 2]),
    json.dumps("ok"),
    json.dumps({"ok": False, "kind": 3, "message": ["x"]}),
]


@pytest.mark.parametrize("answer", BAD_ANSWERS)
def test_invalid_runner_answer_is_a_parse_error_keeping_the_text(answer):
    d = ScriptedDriver(ProfileRegistry().get("local-onnx"), [answer])
    d.prepare()
    with pytest.raises(ParseError) as e:
        d.run("m.onnx")
    assert answer[:60] in str(e.value)


def test_valid_runner_answer_passes():
    d = ScriptedDriver(ProfileRegistry().get("local-onnx"), [json.dumps(GOOD)])
    d.prepare()
    assert d.run("m.onnx").timed_ms == [1.0, 2.0]


def test_negative_latency_from_runner_is_stored_as_parse_error_not_success(tmp_path, cache_dir):
    from harness.campaign import run_campaign
    from harness.models.cache import ModelCache

    profile = ProfileRegistry().get("local-onnx")
    bad = json.dumps({**GOOD, "timed_ms": [-5.5, -5.5, -5.5]})
    sp = get_space("nb201")
    with Store(tmp_path / "s.db") as st:
        s = run_campaign(st, profile, sp, [sp.parse("0")], cache=ModelCache(cache_dir),
                         driver=ScriptedDriver(profile, [bad]))
        assert s.ok == 0 and s.failures == {"parse_error": 1}
        m = st.measurements()
        assert m.status.tolist() == ["failed"] and "-5.5" in m.failure_message[0]


@pytest.mark.parametrize("value", [-5.5, 0.0, math.inf, -math.inf, math.nan])
def test_runs_table_refuses_non_positive_or_non_finite_latency(tmp_path, value):
    sp = get_space("nb201")
    with Store(tmp_path / "s.db") as st:
        cid = st.start_campaign("dev", "nb201", {}, "x", 1)
        with pytest.raises(StoreError):
            st.record_measurement(cid, "dev", sp.parse("0"), model_format="onnx", model_digest=None,
                                  started_at=utcnow(), duration_s=0.1,
                                  summary={"median_ms": 1.0}, timed_ms=[1.0, value])
        assert st.info()["measurements"] == 0


def test_old_store_with_bad_runs_migrates_them_to_failures(tmp_path):
    """A v3 store that already holds negative 'successes' upgrades; they become parse_error failures."""
    import harness.results.store as store_mod

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    upgrades = "".join(store_mod.MIGRATIONS[v] for v in range(1, 3))
    db.executescript(f"{store_mod.SCHEMA} {upgrades} INSERT INTO meta VALUES ('schema_version', '3');"
                     "INSERT INTO devices VALUES (1, 'dev', 'measured', NULL, 't');"
                     "INSERT INTO architectures VALUES (1, 'nb201', 'k', '{}');"
                     "INSERT INTO campaigns (id, device_id, space, profile_json, profile_digest, harness_version,"
                     " host, pid, planned, status, started_at) VALUES (1, 1, 'nb201', '{}', 'd', 'v', 'h', 1, 2,"
                     " 'finished', 't');"
                     "INSERT INTO measurements (id, campaign_id, device_id, arch_id, status, n_runs, median_ms,"
                     " started_at) VALUES (1, 1, 1, 1, 'ok', 1, -5.5, 't'), (2, 1, 1, 1, 'ok', 1, 2.0, 't');"
                     "INSERT INTO runs VALUES (1, 0, 0, -5.5), (2, 0, 0, 2.0);")
    db.commit()
    db.close()
    with Store(path) as st:
        m = st.measurements().set_index("id")
        assert m.loc[1, "status"] == "failed" and m.loc[1, "failure_kind"] == "parse_error"
        assert "-5.5" in m.loc[1, "failure_message"]
        assert m.loc[2, "status"] == "ok" and st.runs(2) == [2.0]


# --- item 3: SQLite faults are clear, the campaign never drops a measurement, imports commit in chunks ----
def _ok(st: Store, cid: int, key: str = "5", n: int = 3) -> int:
    return st.record_measurement(cid, "dev", get_space("nb201").parse(key), model_format="onnx", model_digest=None,
                                 started_at=utcnow(), duration_s=0.1, summary={"median_ms": 1.0},
                                 timed_ms=[1.0] * n)


def test_disk_full_is_a_clear_store_error(tmp_path):
    with Store(tmp_path / "s.db") as st:
        cid = st.start_campaign("dev", "nb201", {}, "x", 1)
        st.db.execute("PRAGMA max_page_count = %d" % st.db.execute("PRAGMA page_count").fetchone()[0])
        with pytest.raises(StoreError, match="full") as e:
            _ok(st, cid, n=20000)
        assert e.value.transient and "s.db" in str(e.value)
        st.db.execute("PRAGMA max_page_count = 1073741823")
        assert st.info()["measurements"] == 0


def test_corrupt_store_is_a_clear_store_error(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as st:
        cid = st.start_campaign("dev", "nb201", {}, "x", 1)
        for k in range(30):
            _ok(st, cid, str(k), n=200)
        st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    data[6 * page:12 * page] = b"\xa5" * (6 * page)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        with Store(path) as st:
            st.measurements()
            st.runs(1)
            st.info()


class _FailingRollback:
    """Connection wrapper whose ROLLBACK fails (as after a lost disk): the real error must still show."""

    def __init__(self, db):
        self._db = db

    def __getattr__(self, name):
        return getattr(self._db, name)

    def execute(self, sql, *a):
        if sql.strip().upper() == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *a)


def test_failing_rollback_does_not_hide_the_real_error(tmp_path):
    with Store(tmp_path / "s.db") as st:
        st.db = _FailingRollback(st.db)
        with pytest.raises(RuntimeError, match="the real problem") as e:
            with st.transaction():
                raise RuntimeError("the real problem")
        assert "ROLLBACK" in "".join(getattr(e.value, "__notes__", []))
        st.db = st.db._db
        st.db.execute("ROLLBACK")


def _hold_write_lock(path: Path, seconds: float):
    """Another process's long write (an import, say): BEGIN IMMEDIATE held for ``seconds``."""
    import threading

    started = threading.Event()

    def hold():
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        started.set()
        import time

        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    started.wait()
    return t


def test_campaign_retries_a_locked_store_and_keeps_the_measurement(tmp_path, cache_dir):
    from harness.campaign import run_campaign
    from harness.models.cache import ModelCache

    profile = ProfileRegistry().get("local-onnx")
    sp = get_space("nb201")
    path = tmp_path / "s.db"
    with Store(path, busy_timeout=0.2) as st:
        cid = st.start_campaign("warm", "nb201", {}, "x", 1)  # creates the file and schema
        holder = _hold_write_lock(path, 0.6)
        s = run_campaign(st, profile, sp, [sp.parse("3")], cache=ModelCache(cache_dir),
                         driver=ScriptedDriver(profile, [json.dumps(GOOD)]))
        holder.join()
        assert s.ok == 1 and s.status == "finished"
        assert st.measured_keys("local-onnx", "nb201") == {sp.parse("3").key}
        del cid


def test_measurement_that_cannot_be_written_is_kept_and_added_next_time(tmp_path, cache_dir):
    from harness.campaign import run_campaign
    from harness.models.cache import ModelCache

    profile = ProfileRegistry().get("local-onnx")
    sp = get_space("nb201")
    path = tmp_path / "s.db"
    holder = []

    class LockedWhileRunning(ScriptedDriver):
        def run(self, model_ref):  # the store gets locked by someone else while the model runs
            holder.append(_hold_write_lock(path, 0.9))
            return super().run(model_ref)

    with Store(path, busy_timeout=0.1) as st:
        with pytest.raises(StoreError, match="pending") as e:
            run_campaign(st, profile, sp, [sp.parse("3")], cache=ModelCache(cache_dir),
                         driver=LockedWhileRunning(profile, [json.dumps(GOOD)]), write_retry_s=0.3)
        holder[0].join()
        assert list(st.pending_dir.glob("*.json")), str(e.value)
    with Store(path) as st:  # the next open adds what was kept aside
        assert st.measured_keys("local-onnx", "nb201") == {sp.parse("3").key}
        assert st.runs(int(st.measurements().id.iloc[-1])) == [1.0, 2.0]
        assert not list(st.pending_dir.glob("*.json"))


def test_import_commits_in_chunks_and_a_failed_import_leaves_nothing(tmp_path, monkeypatch):
    import harness.results.importer as importer
    from tests.conftest import SHARED_DATA

    monkeypatch.setattr(importer, "CHUNK_ROWS", 500)
    with Store(tmp_path / "s.db") as st:
        statements: list[str] = []
        st.db.set_trace_callback(statements.append)
        importer.import_table(st, SHARED_DATA / "oneproxy" / "nb201_oneproxy_18dev_1999.csv.gz")
        st.db.set_trace_callback(None)
        assert sum(s.startswith("BEGIN IMMEDIATE") for s in statements) > 10
        n = st.db.execute("SELECT COUNT(*) FROM imported_latencies").fetchone()[0]
        assert n > 18 * 1900

    calls = {"n": 0}
    real = importer._write_chunk

    def crash_after_two(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(importer, "_write_chunk", crash_after_two)
    with Store(tmp_path / "t.db") as st:
        with pytest.raises(KeyboardInterrupt):
            importer.import_table(st, SHARED_DATA / "oneproxy" / "nb201_oneproxy_18dev_1999.csv.gz")
        assert st.latencies("nb201").empty and st.imports().empty
        assert st.db.execute("SELECT COUNT(*) FROM imported_latencies").fetchone()[0] == 0


# --- item 4: one campaign per device at a time ---------------------------------------------------------
def test_device_lease_is_exclusive_names_its_holder_and_frees_on_release(tmp_path):
    from harness.devices.lease import DeviceBusy, DeviceLease

    with DeviceLease("pixel4", tmp_path, command="harness measure -d pixel4"):
        with pytest.raises(DeviceBusy) as e:
            DeviceLease("pixel4", tmp_path).acquire()
        assert e.value.holder.pid == __import__("os").getpid()
        assert "harness measure -d pixel4" in str(e.value) and "--wait" in str(e.value)
        with DeviceLease("pixel3", tmp_path):  # other devices are free: a farm leases several at once
            pass
    with DeviceLease("pixel4", tmp_path):
        pass


def test_device_lease_of_a_killed_holder_is_free(tmp_path):
    import subprocess
    import sys

    from harness.devices.lease import DeviceLease

    code = ("import sys, time; from harness.devices.lease import DeviceLease; "
            f"DeviceLease('dev', {str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert p.stdout.readline().strip() == "held"
        p.kill()
        p.wait()
        with DeviceLease("dev", tmp_path, wait=2.0):
            pass
    finally:
        p.kill()


def test_device_lease_waits_for_the_holder(tmp_path):
    import threading

    from harness.devices.lease import DeviceLease

    first = DeviceLease("dev", tmp_path).acquire()
    threading.Timer(0.3, first.release).start()
    waited = []
    with DeviceLease("dev", tmp_path, wait=10.0, on_wait=waited.append):
        pass
    assert waited and waited[0].pid == __import__("os").getpid()


def test_second_measure_of_the_same_device_says_who_holds_it(cli_env, store_path, tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.devices.lease import DeviceLease, lock_dir_for

    with DeviceLease("fast-onnx", lock_dir_for(store_path), command="harness measure -d fast-onnx --all"):
        r = CliRunner().invoke(app, ["measure", "-d", "fast-onnx", "--sample", "1"], env=cli_env)
    assert r.exit_code == 3, r.output
    assert "fast-onnx" in r.output and "--all" in r.output and "--wait" in r.output
    with Store(store_path) as st:
        assert st.campaigns().empty


# --- items 1 and 13: the virtual phone never escalates, and odd input gets a shell's answer -------------
def make_shell(root: Path):
    """A phone's shell without the network (the same Phone object the server hands each shell service)."""
    import threading

    from harness.sim.adb.bench import BenchWorker
    from harness.sim.adb.fs import Sandbox
    from harness.sim.adb.phone import Thermal, identity, properties, virtual_files
    from harness.sim.adb.shell import Phone, Shell

    ident, thermal, busy = identity("pixel4"), Thermal(), threading.Event()
    phone = Phone(Sandbox(root, virtual_files(ident, thermal, busy)), ident, properties(ident, "virtual-1"),
                  BenchWorker(), thermal, busy)

    def run(script: str) -> tuple[int, str]:
        out = bytearray()
        status = Shell(phone).run(script, out.extend)
        return status, out.decode(errors="replace")

    return phone, run


@pytest.mark.parametrize("mode", ["4755", "2755", "1777", "7777", "6711"])
def test_phone_chmod_never_sets_setuid_setgid_or_sticky_on_the_host(tmp_path, mode):
    import os
    import stat

    phone, sh = make_shell(tmp_path / "phone")
    (tmp_path / "phone/data/local/tmp/id").write_bytes(b"\x7fELF")
    status, out = sh(f"chmod {mode} /data/local/tmp/id")
    assert status == 0, out
    host_mode = os.stat(tmp_path / "phone/data/local/tmp/id").st_mode
    assert host_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) == 0
    assert host_mode & 0o777 == int(mode, 8) & 0o777


def test_phone_filesystem_masks_every_mode_that_reaches_the_host(tmp_path):
    import os

    from harness.sim.adb.fs import Sandbox

    box = Sandbox(tmp_path / "phone")
    f = box.open_write("/data/local/tmp/pushed", 0o104755)
    f.write(b"x")
    f.close()
    assert os.stat(tmp_path / "phone/data/local/tmp/pushed").st_mode & 0o7000 == 0
    box.chmod("/data/local/tmp/pushed", 0o6755)
    assert os.stat(tmp_path / "phone/data/local/tmp/pushed").st_mode & 0o7000 == 0


def test_sim_adb_help_says_the_phone_runs_with_your_rights_and_listens_on_loopback():
    from typer.testing import CliRunner

    from harness.cli import app

    out = " ".join(CliRunner().invoke(app, ["sim", "adb", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "host user" in out and "127.0.0.1" in out


def test_phone_refuses_to_listen_beyond_loopback_without_auth(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    r = CliRunner().invoke(app, ["sim", "adb", "--host", "0.0.0.0", "--port", "0", "--root", str(tmp_path / "p")])
    assert r.exit_code == 2 and "--auth" in r.output


@pytest.mark.parametrize("script", ["ls /data/local/tmp/a\x00b", "cat 'x\x00y'", "echo ok\x00; rm -r /data"])
def test_phone_nul_in_a_command_is_cut_there_like_a_c_string(tmp_path, script):
    _, sh = make_shell(tmp_path / "phone")
    status, out = sh(script)
    assert "Traceback" not in out and "ValueError" not in out
    assert (tmp_path / "phone/data").is_dir()


def test_phone_filesystem_nul_in_a_path_is_an_fs_error(tmp_path):
    from harness.sim.adb.fs import FSError, Sandbox

    box = Sandbox(tmp_path / "phone")
    for op in (lambda: box.stat("/data/a\x00b"), lambda: box.open_write("/data/a\x00b"),
               lambda: box.mkdir("/data/a\x00b"), lambda: box.read("/data/a\x00b")):
        with pytest.raises(FSError):
            op()


def test_phone_deeply_nested_substitution_is_a_shell_error(tmp_path):
    _, sh = make_shell(tmp_path / "phone")
    status, out = sh("echo " + "$(" * 400 + "echo hi" + ")" * 400)
    assert status == 2 and "nested" in out and "Traceback" not in out
    status, out = sh("echo " + "$(echo " * 10 + "hi" + ")" * 10)
    assert status == 0 and out == "hi\n"
