"""Adversarial cases from issue 13: every fault gives a clear error, nothing is lost, nothing is escalated."""

from __future__ import annotations

import json
import math
import os
import re
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
    profile = profile.model_copy(update={"policy": profile.policy.model_copy(update={"rounds": 1})})  # one visit
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



@pytest.mark.filterwarnings("ignore:pandas only supports SQLAlchemy")  # the stand-in is no sqlite3 connection
def test_every_store_method_a_campaign_calls_says_damage_as_a_store_error(tmp_path):
    """measure died in a sqlite3.DatabaseError traceback from measured_rounds (export said how to salvage)."""
    import sqlite3

    from harness.models.spaces import get_space

    class Damaged:
        def __getattr__(self, name):
            def fail(*a, **k):
                raise sqlite3.DatabaseError("database disk image is malformed")
            return fail

    arch = get_space("nb201").parse("1")
    with Store(tmp_path / "s.db") as st:
        real, st.db = st.db, Damaged()
        try:
            for call in (lambda: st.measured_rounds("dev", "nb201", None), lambda: st.visits("nb201"),
                         lambda: st.campaigns(), lambda: st.runs_of([1]), lambda: st.suspect_visits(1),
                         lambda: st.mark_suspect([1], "x"), lambda: st.sentinel_series(), lambda: st.events(),
                         lambda: st.record_event(1, "x"), lambda: st.run_table(1),
                         lambda: st.record_sentinel(1, "dev", arch, models_done=1, median_ms=1.0, baseline_ms=1.0,
                                                         in_band=True)):
                with pytest.raises(StoreError, match="damaged|recover"):
                    call()
        finally:
            st.db = real


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
    profile = profile.model_copy(update={"policy": profile.policy.model_copy(update={"rounds": 1})})  # one visit
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

    monkeypatch.setattr(importer, "CHUNK_ROWS", 100)
    lines = [f"{i},{1 + i / 1000},{2 + i / 1000},{3 + i / 1000}" for i in range(300)]
    table = tmp_path / "t.csv"
    table.write_text("nb201_index,a_ms,b_ms,c_ms\n" + "\n".join(lines) + "\n")
    with Store(tmp_path / "s.db") as st:
        statements: list[str] = []
        st.db.set_trace_callback(statements.append)
        importer.import_table(st, table)
        st.db.set_trace_callback(None)
        assert sum(s.startswith("BEGIN IMMEDIATE") for s in statements) >= 9  # 900 values, 100 per transaction
        assert st.db.execute("SELECT COUNT(*) FROM imported_latencies").fetchone()[0] == 900

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
            importer.import_table(st, table)
        assert st.latencies("nb201").empty and st.imports().empty and st.devices().empty
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


def test_device_lease_never_writes_through_a_planted_symlink(tmp_path):
    from harness.devices.lease import DeviceLease
    from harness.errors import HarnessError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "pixel4.lock").symlink_to(victim)
    with pytest.raises(HarnessError, match="pixel4.lock is a symbolic link; remove it"):
        DeviceLease("pixel4", tmp_path / "locks").acquire()
    assert victim.read_text() == "precious"


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
    assert r.exit_code == 2 and "--adb-keys" in r.output
    # --auth alone let any new key in from anywhere (the phone "taps Allow" for it): it is not enough beyond loopback
    r = CliRunner().invoke(app, ["sim", "adb", "--host", "0.0.0.0", "--auth", "--port", "0",
                                 "--root", str(tmp_path / "p")])
    assert r.exit_code == 2 and "--adb-keys" in r.output


@pytest.mark.parametrize(("host", "admits_new_keys"), [("0.0.0.0", False), ("127.0.0.1", True)])
def test_phone_beyond_loopback_admits_its_listed_keys_only(tmp_path, monkeypatch, host, admits_new_keys):
    from typer.testing import CliRunner

    import harness.sim.adb.server as server
    from harness.cli import app

    seen = {}

    def phone(*args, **kwargs):
        seen.update(kwargs)
        raise OSError("not started in this test")

    monkeypatch.setattr(server, "VirtualPhone", phone)
    keys = tmp_path / "adb_keys"
    keys.write_text("QAAAA... user@host\n")
    r = CliRunner().invoke(app, ["sim", "adb", "--host", host, "--adb-keys", str(keys), "--port", "0",
                                 "--root", str(tmp_path / "p")])
    assert "not started in this test" in r.output
    assert seen["accept_new_keys"] is admits_new_keys and seen["adb_keys"] == ["QAAAA... user@host"]


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


# --- items 5-8: the importer refuses what would poison the analysis ---------------------------------------
def _table(path: Path, latencies: list[str], header: str = "nb201_index,dev_x_ms", gz: bool = False) -> Path:
    lines = [header] + [f"{i},{v}" for i, v in enumerate(latencies)]
    data = ("\n".join(lines) + "\n").encode()
    if gz:
        import gzip

        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("bad", ["inf", "1e400", "-inf", "nan", "Infinity"])
def test_import_refuses_non_finite_latencies_naming_file_column_and_line(tmp_path, bad):
    from harness.results.importer import ImportFileError, import_table

    path = _table(tmp_path / "t.csv", ["1.5", "2.5", bad, "3.0"])
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(ImportFileError) as e:
            import_table(st, path)
        assert st.latencies("nb201").empty
    msg = str(e.value)
    assert "t.csv" in msg and "dev_x_ms" in msg and re.search(r"lines? 4\b", msg), msg


def test_import_refuses_zero_latency_unless_allowed(tmp_path):
    from harness.results.importer import ImportFileError, import_table

    path = _table(tmp_path / "t.csv", ["1.5", "0", "0.0", "3.0"])
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(ImportFileError, match=r"(?s)dev_x_ms.*zero.*lines 3, 4.*--allow-zero"):
            import_table(st, path)
        assert st.latencies("nb201").empty
        import_table(st, path, allow_zero=True)
        assert len(st.latencies("nb201")) == 4


def test_train_refuses_and_predict_never_writes_non_finite_latencies(tmp_path, cache_dir):
    from harness.analysis import workflow
    from harness.errors import HarnessError
    from harness.results.importer import import_table

    sp = get_space("nb201")
    archs = sp.sample(40, 1)
    lines = [f"{a.columns['nb201_index']},{1 + i / 10}" for i, a in enumerate(archs)]
    (tmp_path / "t.csv").write_text("nb201_index,dev_x_ms\n" + "\n".join(lines) + "\n")
    with Store(tmp_path / "s.db") as st:
        import_table(st, tmp_path / "t.csv")
        ctx = workflow.open_context(st, "nb201", str(cache_dir))
        workflow.train(ctx, "dev_x")
        # a predictor whose numbers went bad (fitted by an older harness on an infinite latency)
        model = json.loads(st.db.execute("SELECT model_json FROM predictors").fetchone()[0])
        model["fit"]["intercept"] = math.nan
        st.db.execute("UPDATE predictors SET model_json = ?", (json.dumps(model),))
        with pytest.raises(HarnessError, match="not finite"):
            workflow.predict(ctx, "dev_x", archs)
        # and a store written by an older harness may hold an infinite latency: train refuses it
        st.db.execute("UPDATE imported_latencies SET latency_ms = 9e999 WHERE arch_id = "
                      "(SELECT MIN(arch_id) FROM imported_latencies)")
        with pytest.raises(HarnessError, match="not positive and finite"):
            workflow.train(ctx, "dev_x")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_damaged_gzip_is_a_clear_import_error(tmp_path, damage):
    from harness.results.importer import ImportFileError, import_table

    path = _table(tmp_path / "t.csv.gz", [str(1 + i / 100) for i in range(3000)], gz=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:20] + b"\x00" * 200 + data[220:])
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(ImportFileError, match="t.csv.gz") as e:
            import_table(st, path)
    assert "damaged" in str(e.value) or "truncated" in str(e.value)


def test_import_cli_truncated_gzip_says_why_not_just_aborted(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    path = _table(tmp_path / "t.csv.gz", [str(1 + i / 100) for i in range(3000)], gz=True)
    path.write_bytes(path.read_bytes()[:-40])
    r = CliRunner().invoke(app, ["import", str(path), "--store", str(tmp_path / "s.db")])
    flat = r.output.replace("\n", "")  # the console may wrap a long temporary path anywhere
    assert r.exit_code == 2 and "t.csv.gz" in flat and "Aborted" not in flat


def test_duplicate_column_names_are_an_error(tmp_path):
    from harness.results.importer import ImportFileError, import_table

    path = tmp_path / "t.csv"
    path.write_text("nb201_index,x_ms,x_ms\n0,1.0,2.0\n1,1.5,2.5\n")
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(ImportFileError, match="x_ms.*more than once"):
            import_table(st, path)
        assert st.arch_metrics("nb201").empty and st.latencies("nb201").empty


@pytest.mark.parametrize("column", ['=HYPERLINK("http://x")_ms', "+cmd_ms", "-2+3_ms", "@SUM(A1)_ms", "a b_ms",
                                    "_ms"])
def test_device_names_from_headers_follow_the_profile_name_rule(tmp_path, column):
    import csv

    from harness.results.importer import ImportFileError, import_table

    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["nb201_index", column])
        w.writerows([[0, 1.0], [1, 2.0]])
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(ImportFileError, match="device name"):
            import_table(st, path)
        assert st.devices().empty


def test_formula_like_metric_columns_are_refused(tmp_path):
    from harness.results.importer import ImportFileError, import_table

    path = tmp_path / "t.csv"
    path.write_text('nb201_index,dev_ms,"=cmd|x"\n0,1.0,3\n1,2.0,4\n')
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(ImportFileError, match="=cmd"):
            import_table(st, path)


# --- item 9: user-supplied text is printed as text, never as rich markup ---------------------------------
def test_markup_in_a_device_name_is_printed_literally(cli_env):
    from typer.testing import CliRunner

    from harness.cli import app

    r = CliRunner().invoke(app, ["measure", "--device", "x[/y]", "--sample", "1"], env=cli_env)
    assert r.exit_code == 2 and "x[/y]" in r.output and "MarkupError" not in r.output


def test_markup_in_a_file_name_is_printed_literally(tmp_path, cli_env):
    from typer.testing import CliRunner

    from harness.cli import app

    path = _table(tmp_path / "[bold]neg.csv", ["1.0", "-2.0"])
    r = CliRunner().invoke(app, ["import", str(path)], env={**cli_env, "COLUMNS": "400"})
    assert r.exit_code == 2 and "[bold]neg.csv" in r.output.replace("\n", ""), r.output
    ok = _table(tmp_path / "[red]ok.csv", ["1.0", "2.0"])
    r = CliRunner().invoke(app, ["import", str(ok)], env={**cli_env, "COLUMNS": "400"})
    assert r.exit_code == 0 and "[red]ok.csv" in r.output.replace("\n", ""), r.output


# --- items 10 and 11: profiles are bounded and fully validated -------------------------------------------
BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
name: bomb
description: *h
connection: {kind: local}
runtime: {name: onnxruntime}
"""


@pytest.mark.timeout(60)
def test_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    import time

    from harness.devices.profile import load_profile
    from harness.errors import ProfileError

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    t0 = time.perf_counter()
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert time.perf_counter() - t0 < 5
    assert len(str(e.value)) < 2000 and "bomb.yaml" in str(e.value)


@pytest.mark.timeout(60)
def test_devices_list_survives_an_alias_bomb(tmp_path):
    from harness.devices.registry import ProfileRegistry

    (tmp_path / "bomb.yaml").write_text(BOMB)
    good, bad = ProfileRegistry(tmp_path).load_all()
    assert len(bad) == 1 and len(str(bad[0])) < 2000 and good


def test_a_key_given_twice_is_an_error_naming_both_lines_not_the_last_one_silently(tmp_path):
    from harness.devices.profile import load_profile
    from harness.errors import ProfileError

    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\nconnection: {kind: local}\nruntime: {name: onnxruntime, threads: 1}\n"
                    "policy: {warmup_runs: 1}\nruntime: {name: tflite, threads: 4}\n")
    with pytest.raises(ProfileError, match=r"runtime: given twice \(lines 3 and 5\)") as e:
        load_profile(path)
    assert "dup.yaml" in str(e.value)
    # YAML's merge key is no duplicate: the base's keys live in the aliased mapping
    (tmp_path / "merged.yaml").write_text("name: merged\nconnection: {kind: local}\nruntime: {name: onnxruntime}\n"
                                          "policy:\n  <<: &p {warmup_runs: 1, timed_runs: 3}\n  timed_runs: 4\n")
    assert load_profile(tmp_path / "merged.yaml").policy.timed_runs == 4


def test_huge_profile_file_is_refused(tmp_path):
    from harness.devices.profile import load_profile
    from harness.errors import ProfileError

    path = tmp_path / "big.yaml"
    path.write_text("name: big\ndescription: '" + "x" * 300_000 + "'\nconnection: {kind: local}\n"
                    "runtime: {name: onnxruntime}\n")
    with pytest.raises(ProfileError, match="too large"):
        load_profile(path)


def test_a_profile_that_is_a_device_or_a_pipe_is_refused_not_read(tmp_path):
    import os

    from harness.devices.profile import load_profile
    from harness.errors import ProfileError

    (tmp_path / "zero.yaml").symlink_to("/dev/zero")  # read whole, it filled memory
    os.mkfifo(tmp_path / "pipe.yaml")  # read, it hung `devices list`
    for name in ("zero.yaml", "pipe.yaml"):
        with pytest.raises(ProfileError, match="not a regular file"):
            load_profile(tmp_path / name)


def test_error_messages_echo_a_bounded_value(tmp_path):
    from harness.devices.profile import parse_profile
    from harness.errors import ProfileError

    with pytest.raises(ProfileError) as e:
        parse_profile({"name": "x", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"},
                       "policy": {"timed_runs": ["y" * 100_000]}}, "x")
    assert len(str(e.value)) < 2000


@pytest.mark.parametrize("field, value, fragment", [
    ("policy.timeout_seconds", ".inf", "timeout_seconds"),
    ("policy.cooldown_seconds", ".inf", "cooldown_seconds"),
    ("policy.min_seconds", ".inf", "min_seconds"),
    ("policy.min_seconds", ".nan", "min_seconds"),
    ("policy.input_seed", "-1", "input_seed"),
    ("policy.input_seed", "99999999999999999999999", "input_seed"),
    ("runtime.options", "{graph_optimization_level: fastest}", "graph_optimization_level"),
    ("runtime.threads", "1e999", "threads"),
])
def test_profile_rejects_values_that_would_fail_later(tmp_path, field, value, fragment):
    from harness.devices.profile import load_profile
    from harness.errors import ProfileError

    section, key = field.split(".")
    body = {"runtime": "name: onnxruntime", "policy": "timed_runs: 3"}
    body[section] += f", {key}: {value}"
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nconnection: {{kind: local}}\nruntime: {{{body['runtime']}}}\n"
                    f"policy: {{{body['policy']}}}\n")
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert fragment in str(e.value)


# --- item 12: the runner worker answers every bad request with an error and keeps serving --------------
BAD_REQUESTS = ["[]", "1", '"run"', "null", "true", '{"op": "sha256"}', '{"op": ["x"]}', '{"op": {"a": 1}}',
                '{"op": "run", "runtime": "onnxruntime", "model": "m.onnx", "threads": 1e999}',
                '{"op": "run", "runtime": "onnxruntime", "model": "m.onnx", "timed_runs": NaN}',
                '{"op": "run", "runtime": ["onnxruntime"], "model": "m.onnx"}',
                '{"op": "run", "runtime": "onnxruntime", "model": "m.onnx", "options": [1, 2]}',
                '{"op": "sha256", "path": {"a": 1}}',
                "[" * 100_000 + "]" * 100_000, '{"a": ' * 50_000 + "1" + "}" * 50_000, "\x00\xff", "{"]


def test_runner_worker_answers_bad_requests_and_keeps_serving():
    import subprocess
    import sys

    from harness.devices.local import RUNNER

    p = subprocess.Popen([sys.executable, "-P", str(RUNNER), "--serve"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    requests = [r.encode() for r in BAD_REQUESTS] + [b'\xff\xfe{"op": "hello"\xc3']
    try:
        out, errs = p.communicate(b"\n".join([*requests, b'{"op": "hello"}']) + b"\n", timeout=120)
    finally:
        p.kill()
    answers = [json.loads(line) for line in out.decode().splitlines()]
    errs = errs.decode(errors="replace")
    assert len(answers) == len(requests) + 1, errs[-2000:]
    for req, a in zip(BAD_REQUESTS, answers):
        assert a["ok"] is False and a["kind"] in ("parse_error", "device_error") and a["message"], (req[:50], a)
    assert answers[-1]["ok"] is True and answers[-1]["protocol"] == 1
    assert "Traceback" not in errs


# --- item 14: the store is recognised before anything is written; read-only stores open read-only --------
def test_another_apps_sqlite_file_is_left_untouched(tmp_path):
    import hashlib

    path = tmp_path / "notes.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('keep me');")
    db.commit()
    db.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match="not a harness store"):
        Store(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()


def test_read_commands_do_not_create_a_missing_store(tmp_path, cli_env):
    from typer.testing import CliRunner

    from harness.cli import app

    missing = tmp_path / "nowhere" / "s.db"
    for cmd in (["campaigns"], ["export", "--out", str(tmp_path / "o.csv")], ["srcc"]):
        r = CliRunner().invoke(app, [*cmd, "--store", str(missing)], env=cli_env)
        assert r.exit_code == 2 and "no store" in r.output, (cmd, r.output)
    assert not missing.parent.exists()


def test_store_on_read_only_media_is_readable(tmp_path):
    """A store someone else owns (or on a read-only disk) serves read commands without writing a byte."""
    import os
    import subprocess
    import sys
    import tempfile

    from harness.results.importer import import_table

    d = Path(tempfile.mkdtemp(prefix="ro-store-"))
    try:
        path = _table(d / "t.csv", ["1.0", "2.0", "3.0"])
        with Store(d / "s.db") as st:
            import_table(st, path)
        files_before = sorted(os.listdir(d))
        os.chmod(d, 0o555)
        os.chmod(d / "s.db", 0o444)
        code = ("import sys; from harness.results.store import open_store\n"
                "with open_store(sys.argv[1], write=False) as st:\n"
                "    print(len(st.latencies('nb201')), len(st.campaigns()))")
        cmd = [sys.executable, "-c", code, str(d / "s.db")]
        if os.geteuid() == 0:  # root ignores file modes: be nobody, for whom the folder is read-only
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "HOME": str(d)})
        assert r.returncode == 0 and r.stdout.split() == ["3", "0"], r.stderr[-2000:]
        assert sorted(os.listdir(d)) == files_before
    finally:
        os.chmod(d, 0o755)
        import shutil

        shutil.rmtree(d)


def test_benchmark_model_negative_times_are_parse_errors():
    from harness.devices.adb_benchmark import parse_output

    with pytest.raises(ParseError, match="avg"):
        parse_output("Running benchmark for at least 5 iterations and at least 0 seconds.\n"
                     "count=5 curr=4 min=1 max=9 avg=-5 std=1\nInitialized session in 1ms.").timed_stat()


def test_a_pending_measurement_that_cannot_go_in_is_set_aside_not_lost(tmp_path):
    with Store(tmp_path / "s.db") as st:
        st.pending_dir.mkdir()
        (st.pending_dir / "x.json").write_text('{"campaign_id": 99, "device": "d", "arch": {"space": "nb201", '
                                               '"key": "k", "columns": {}}, "model_format": null, "model_digest": '
                                               'null, "started_at": "t", "duration_s": 1, "failure_kind": "timeout"}')
    with Store(tmp_path / "s.db") as st:
        assert (st.pending_dir / "x.rejected").exists() and st.warnings
        assert st.info()["measurements"] == 0


def _pending_store(path, n: int) -> list:
    """A store with one campaign and ``n`` finished measurements kept aside as pending files."""
    sp = get_space("nb201")
    with Store(path) as st:
        cid = st.start_campaign("dev", "nb201", {"name": "dev"}, "digest", n)
        for i in range(n):
            arch = sp.parse(str(i))
            st.keep_pending({"campaign_id": cid, "device": "dev",
                             "arch": {"space": arch.space, "key": arch.key, "columns": arch.columns},
                             "model_format": "onnx", "model_digest": None, "started_at": f"2026-11-30T10:00:{i:02d}",
                             "duration_s": 0.1, "summary": {"median_ms": 1.0 + i}, "timed_ms": [1.0 + i],
                             "round_no": 1})
        return [(f.stem, f.read_text()) for f in sorted(st.pending_dir.glob("*.json"))]


def _open_and_replay(path: str) -> None:
    Store(path).close()


def test_two_commands_opening_the_store_at_once_add_each_pending_measurement_once(tmp_path):
    """Every command that opens the store replays what was kept aside: two at once both read every file and both
    inserted it (a measurement stored twice, `ok/plan 13/30` for 12), and the loser's unlink crashed it."""
    import multiprocessing

    path = tmp_path / "s.db"
    _pending_store(path, 40)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_replay, args=(str(path),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with Store(path) as st:
        m = st.measurements()
        assert len(m) == 40 and m.key.nunique() == 40
        assert not list(st.pending_dir.iterdir())


def test_a_replayer_killed_between_commit_and_removal_adds_nothing_twice(tmp_path):
    """Its claim (a process that no longer runs) goes back in the queue; the measurement is in the store already."""
    import socket
    import subprocess
    import sys

    path = tmp_path / "s.db"
    first, second = _pending_store(path, 2)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    with Store(path) as st:  # adds both
        assert len(st.measurements()) == 2
        # as if a replayer had committed `first` and died before removing its claim; `second` claimed by a live one
        (st.pending_dir / f"{first[0]}@{socket.gethostname()}@{gone}.claim").write_text(first[1])
        alive = st.pending_dir / f"{second[0]}@{socket.gethostname()}@{os.getpid()}.claim"
        alive.write_text(second[1])
    with Store(path) as st:
        assert len(st.measurements()) == 2
        assert [f.name for f in st.pending_dir.iterdir()] == [alive.name]  # a running replayer's claim is its own


def test_a_pending_file_taken_by_another_replayer_or_still_being_written_is_left_to_it(tmp_path, monkeypatch):
    """Deterministic forms of the race: another command renames a file between this one's listing and its claim
    (the old code crashed on the vanished file), and keep_pending's temporary .tmp-*.json is not a pending file."""
    import socket

    import harness.results.store as store_mod

    path = tmp_path / "s.db"
    _pending_store(path, 3)
    pending = tmp_path / "s.db.pending"
    first = sorted(pending.glob("*.json"))[0]
    (pending / ".tmp-1234abcd-half.json").write_text('{"campaign_id": 1, "dev')  # mid-write
    real_rename = os.rename
    theirs = pending / f"{first.stem}@{socket.gethostname()}@{os.getpid()}.claim"

    def another_replayer_first(src, dst):
        if Path(src) == first and not theirs.exists():
            real_rename(src, theirs)  # the other command wins this one
        return real_rename(src, dst)

    monkeypatch.setattr(store_mod.os, "rename", another_replayer_first)
    with Store(path) as st:
        assert len(st.measurements()) == 2 and not st.warnings
    monkeypatch.undo()
    assert sorted(p.name for p in pending.iterdir()) == sorted([theirs.name, ".tmp-1234abcd-half.json"])


def test_a_measurement_that_can_be_neither_written_nor_kept_says_it_is_lost(tmp_path, cache_dir, monkeypatch):
    """A full disk takes the store and the pending folder beside it: the error was a bare 'No space left on
    device'; it now says which measurement is lost and that the rerun measures it again."""
    import errno

    from harness.campaign import run_campaign
    from harness.models.cache import ModelCache

    profile = ProfileRegistry().get("local-onnx")
    sp = get_space("nb201")
    path = tmp_path / "s.db"
    holder = []

    class LockedWhileRunning(ScriptedDriver):
        def run(self, model_ref):
            holder.append(_hold_write_lock(path, 0.9))
            return super().run(model_ref)

    def disk_full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.pending_dir / "x.json"))

    monkeypatch.setattr(Store, "keep_pending", disk_full)
    with Store(path, busy_timeout=0.1) as st:
        with pytest.raises(StoreError, match=r"could not be kept aside either \(No space left on device.*so it is "
                                             r"lost: .*rerun the same command"):
            run_campaign(st, profile, sp, [sp.parse("3")], cache=ModelCache(cache_dir),
                         driver=LockedWhileRunning(profile, [json.dumps(GOOD)]), write_retry_s=0.3)
        holder[0].join()


def test_clipped_messages_end_between_words_and_say_they_were_cut():
    """A farm's device_lost message was cut mid-word ("executed on the acto)")."""
    from harness.errors import clip

    msg = "Ray task failed because it was executed on the actor whose node died"
    assert clip(msg, 50) == "Ray task failed because it was executed on the …"
    assert clip(msg, 500) == msg and clip("a\n  b", 10) == "a b"
    assert clip("x" * 30, 10) == "x" * 9 + "…" and len(clip(msg, 20)) <= 20


def test_a_name_with_a_trailing_newline_is_no_valid_device_name(tmp_path):
    from harness.devices.profile import is_valid_name
    from harness.errors import HarnessError
    from harness.results.importer import import_table
    from harness.results.store import Store

    assert is_valid_name("pixel3") and not is_valid_name("evil\n") and not is_valid_name("vm\ngood")
    table = tmp_path / "t.csv"  # a quoted header "evil\n_ms" stored the device "evil\n"
    table.write_text('nb201_index,"evil\n_ms"\n1,1.5\n2,2.5\n')
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(HarnessError):
            import_table(st, table)
        assert st.devices().empty


@pytest.mark.parametrize("script", ["mkdir /sdcard/d1; touch /sdcard/f1; mv /sdcard/d1 /sdcard/f1; echo $?",
                                    "mkdir -p /data/local/tmp/a; mv /data/local/tmp /data/local/tmp/a; echo $?"])
def test_phone_mv_a_folder_onto_a_file_or_into_itself_is_a_shell_error(tmp_path, script):
    """It raised a host OSError that ended the shell without a status (and logged host paths)."""
    _, sh = make_shell(tmp_path / "phone")
    status, out = sh(script)
    assert out.rstrip().endswith("1") and "mv: /" in out, out
    assert str(tmp_path) not in out
