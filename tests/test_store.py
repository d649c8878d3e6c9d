"""The results store: schema checked at start-up, one transaction per model, tidy export."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from harness.errors import StoreError
from harness.models.spaces import get_space
from harness.results.export import latency_table, write_table
from harness.results.store import SCHEMA_VERSION, Store, utcnow

SPACE = get_space("nb201")


def record_ok(st: Store, cid: int, device: str, token: str, runs: list[float]):
    arch = SPACE.parse(token)
    s = sorted(runs)
    return st.record_measurement(cid, device, arch, model_format="onnx", model_digest="d", started_at=utcnow(),
                                 duration_s=0.1, summary={"median_ms": s[len(s) // 2], "mean_ms": sum(s) / len(s),
                                                          "std_ms": 0.0, "min_ms": s[0], "p90_ms": s[-1]},
                                 timed_ms=runs, warmup_ms=[9.0])


def test_new_store_has_current_schema(store_path):
    with Store(store_path) as st:
        assert st.info()["schema_version"] == SCHEMA_VERSION
    db = sqlite3.connect(store_path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_schema_version_mismatch_is_refused(store_path):
    Store(store_path).close()
    db = sqlite3.connect(store_path)
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 999"):
        Store(store_path)


def test_foreign_sqlite_file_and_garbage_are_refused(tmp_path):
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a harness store"):
        Store(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 500)
    with pytest.raises(StoreError):
        Store(junk)


def test_measurement_and_runs_are_one_transaction(store_path):
    with Store(store_path) as st:
        cid = st.start_campaign("dev", "nb201", {}, "x", 2)
        arch = SPACE.parse("5")
        with pytest.raises(StoreError):
            # duplicate run sequence numbers violate the runs primary key after the measurement row went in
            with st.transaction():
                mid = record_ok(st, cid, "dev", "5", [1.0, 2.0])
                st.db.execute("INSERT INTO runs (measurement_id, warmup, seq, latency_ms) VALUES (?, 0, 0, 1.0)", (mid,))
        assert st.measurements().empty, "the measurement row must roll back with its runs"
        assert st.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
        record_ok(st, cid, "dev", "5", [1.0, 2.0, 3.0])
        assert st.measured_keys("dev", "nb201") == {arch.key}


def test_failures_carry_a_kind_and_no_latency(store_path):
    with Store(store_path) as st:
        cid = st.start_campaign("dev", "nb201", {}, "x", 1)
        st.record_measurement(cid, "dev", SPACE.parse("7"), model_format="onnx", model_digest=None,
                              started_at=utcnow(), duration_s=1.0, failure_kind="timeout", failure_message="slow")
        m = st.measurements()
        assert m.status.tolist() == ["failed"] and m.failure_kind.tolist() == ["timeout"]
        assert m.median_ms.isna().all()
        assert st.measured_keys("dev", "nb201") == set()  # failures are retried on resume
        with pytest.raises(sqlite3.IntegrityError):  # the schema itself forbids a failure with a latency
            st.db.execute("UPDATE measurements SET median_ms = 0 WHERE status = 'failed'")


def test_abandoned_running_campaign_is_marked_interrupted(store_path):
    with Store(store_path) as st:
        cid = st.start_campaign("dev", "nb201", {}, "x", 1)
        st.db.execute("UPDATE campaigns SET pid = 999999999 WHERE id = ?", (cid,))
        st.start_campaign("dev", "nb201", {}, "x", 1)
        status = dict(st.db.execute("SELECT id, status FROM campaigns").fetchall())
        assert status[cid] == "interrupted"


def test_export_latest_median_per_device(store_path, tmp_path):
    with Store(store_path) as st:
        cid = st.start_campaign("a", "nb201", {}, "x", 3)
        record_ok(st, cid, "a", "0", [3.0, 1.0, 2.0])
        record_ok(st, cid, "a", "1", [5.0, 5.0, 5.0])
        record_ok(st, cid, "a", "1", [4.0, 4.0, 4.0])  # a remeasurement: the latest wins
        cid2 = st.start_campaign("b", "nb201", {}, "x", 1)
        record_ok(st, cid2, "b", "1", [7.0])
        df = latency_table(st, "nb201")
    ident = ["_graph", "_exporter", "_degenerate", "_suspect", "_visits"]  # the measured model's identity beside it
    assert df.columns.tolist() == ["nb201_index", "arch_str", "a_ms", *[f"a{s}" for s in ident],
                                   "b_ms", *[f"b{s}" for s in ident]]
    assert df.a_exporter.tolist() == [1, 1]  # recorded before exporter versions were: version 1
    assert df.nb201_index.tolist() == [0, 1]
    assert df.a_ms.tolist() == [2.0, 4.0]
    assert pd.isna(df.b_ms[0]) and df.b_ms[1] == 7.0
    for name in ("t.csv", "t.csv.gz", "t.parquet"):
        path = write_table(df, tmp_path / name)
        back = pd.read_parquet(path) if name.endswith("parquet") else pd.read_csv(path)
        pd.testing.assert_frame_equal(back, df, check_dtype=False)


def test_degenerate_false_also_leaves_out_imported_rows_of_constant_output_networks(store_path, tmp_path):
    """It dropped only architectures a harness campaign had marked: 340 of NB201's 341 constant-output networks
    stayed in with their imported latencies."""
    from harness.analysis import latencies
    from harness.results.importer import import_table

    keys = [SPACE.parse(str(i)).key for i in range(200)]
    constant = [k for k in keys if SPACE.constant_output(SPACE.parse(k))]
    pd.DataFrame({"arch_str": keys, "pub_ms": np.linspace(1, 2, len(keys))}).to_csv(tmp_path / "p.csv", index=False)
    with Store(store_path) as st:
        import_table(st, tmp_path / "p.csv")
    assert constant and len(latencies(store_path, "nb201")) == 200
    kept = latencies(store_path, "nb201", degenerate=False)
    assert len(kept) == 200 - len(constant) and not set(constant) & set(kept.index)


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.parquet"])
def test_an_export_that_fails_midway_leaves_the_previous_file_whole(tmp_path, monkeypatch, name):
    """On a full disk (or a kill) the export wrote over the good file and left a truncated one that still parsed."""
    import errno

    old = pd.DataFrame({"nb201_index": [0, 1], "a_ms": [2.0, 4.0]})
    path = write_table(old, tmp_path / name)
    before = path.read_bytes()
    method = "to_parquet" if name.endswith("parquet") else "to_csv"
    real = getattr(pd.DataFrame, method)

    def half_then_full(self, target, *a, **kw):
        real(self.head(1), target, *a, **kw)  # some bytes are out when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, method, half_then_full)
    with pytest.raises(OSError, match="No space") as e:
        write_table(pd.DataFrame({"nb201_index": range(100), "a_ms": 1.0}), path)
    assert e.value.filename == str(path)  # a full disk's error named no file ("error: No space left on device")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [name]  # no temp left behind


def test_runs_keep_every_value(store_path):
    with Store(store_path) as st:
        cid = st.start_campaign("a", "nb201", {}, "x", 1)
        mid = record_ok(st, cid, "a", "0", [3.0, 1.0, 2.0])
        assert st.runs(mid) == [3.0, 1.0, 2.0]
        assert st.runs(mid, warmup=True) == [9.0]


def test_version_1_store_is_upgraded_in_place(store_path):
    from harness.results.store import SCHEMA

    store_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(store_path)
    db.executescript(SCHEMA + "INSERT INTO meta VALUES ('schema_version', '1');"
                     "INSERT INTO devices (name, origin, created_at) VALUES ('old', 'measured', 'x');")
    db.close()
    with Store(store_path) as st:
        assert st.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert st.imports().empty
        assert st.devices().name.tolist() == ["old"]


def _schema_8_store(path):
    from harness.results.store import MIGRATIONS, SCHEMA

    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA + "".join(MIGRATIONS[v] for v in range(1, 8)) +
                     "INSERT INTO meta VALUES ('schema_version', '8');")
    db.close()


def test_a_read_only_store_one_schema_back_is_read_as_it_is(store_path):
    """Schema 9 only added sentinel_checks.band: every read-only schema-8 store (an archive, read-only media)
    was refused with 'copy it somewhere writable'."""
    _schema_8_store(store_path)
    with Store(store_path, readonly=True) as st:
        assert st.schema_version == 8 and st.sentinel_series().empty and "band" in st.sentinel_series().columns
    with Store(store_path) as st:  # writable: upgraded
        assert st.schema_version == SCHEMA_VERSION


def test_two_processes_upgrading_one_store_both_open_it(store_path):
    """The version was read before the write lock: the second upgrade repeated ALTER TABLE ... ADD COLUMN band and
    failed with 'duplicate column name: band' (not a usable harness store)."""
    _schema_8_store(store_path)
    first = sqlite3.connect(store_path, isolation_level=None)
    first.execute("BEGIN IMMEDIATE")  # another command is upgrading it right now
    import threading

    opened = []

    def second():
        with Store(store_path, busy_timeout=10) as st:
            opened.append(st.schema_version)

    t = threading.Thread(target=second)
    t.start()
    import time

    time.sleep(0.5)  # the second has read version 8 and waits for the lock (later, it would see 9 and pass anyway)
    first.execute("ALTER TABLE sentinel_checks ADD COLUMN band REAL")
    first.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    first.execute("COMMIT")
    first.close()
    t.join(20)
    assert opened == [SCHEMA_VERSION]


def _open_store(path: str) -> str:
    from harness.results.store import Store

    try:
        with Store(path) as st:
            return str(len(st.campaigns()))
    except Exception as e:  # reported to the parent, which asserts on it
        return f"{type(e).__name__}: {e}"


def test_stores_created_by_several_processes_at_once_all_open(tmp_path):
    """Two commands creating one new store at the same moment: both must get the same, usable store."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        for i in range(16):  # the race is rare: 16 stores made it fail about 9 times in 10 before the fix
            answers = pool.map(_open_store, [str(tmp_path / f"race{i}.db")] * 4)
            assert answers == ["0"] * 4, answers


def test_a_write_error_names_the_file_asked_for_not_the_temporary_one(tmp_path, monkeypatch):
    """`export --out d.csv` (a folder) said `./.tmp-6333641e-d.csv: Is a directory`; a read-only folder too."""
    df = pd.DataFrame({"nb201_index": [0], "a_ms": [1.0]})
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        write_table(df, tmp_path / "d.csv")
    assert e.value.filename == str(tmp_path / "d.csv")

    def refused(self, target, *a, **kw):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(pd.DataFrame, "to_csv", refused)
    with pytest.raises(PermissionError) as e:
        write_table(df, tmp_path / "ro.csv")
    assert e.value.filename == str(tmp_path / "ro.csv") and ".tmp-" not in str(e.value)


def test_an_export_keeps_the_mode_of_the_file_it_replaces_and_writes_through_a_link(tmp_path):
    import os
    import stat

    df = pd.DataFrame({"nb201_index": [0], "a_ms": [1.0]})
    shared = write_table(df, tmp_path / "shared.csv")
    os.chmod(shared, 0o664)
    write_table(df.assign(a_ms=2.0), shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o664
    (tmp_path / "latest.csv").symlink_to(shared)
    write_table(df.assign(a_ms=3.0), tmp_path / "latest.csv")
    assert (tmp_path / "latest.csv").is_symlink() and pd.read_csv(shared).a_ms.tolist() == [3.0]


def test_temporary_files_of_killed_writes_are_cleared_by_the_next_write(tmp_path):
    """SIGTERM or kill -9 mid-export left a hidden .tmp-XXXX-all.csv for ever; an hour-old one is an orphan."""
    import os
    import time

    df = pd.DataFrame({"nb201_index": [0], "a_ms": [1.0]})
    old, recent = tmp_path / ".tmp-0badf00d-all.csv", tmp_path / ".tmp-1badf00d-all.csv"
    other = tmp_path / ".tmp-2badf00d-other.csv"
    for f in (old, recent, other):
        f.write_text("half a tab")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    write_table(df, tmp_path / "all.csv")
    assert not old.exists() and recent.exists() and other.exists()  # another writer may still be at the recent one


def test_a_store_that_cannot_be_written_is_not_called_unusable(tmp_path, monkeypatch):
    """A read-only store (or an unwritable folder for a new one) read "not a usable harness store": a user might
    delete a good store."""
    import sqlite3

    from harness.errors import StoreError

    with Store(tmp_path / "s.db"):
        pass
    real = sqlite3.connect

    def unopenable(*a, **k):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", unopenable)  # a new store in a folder this user cannot write
    with pytest.raises(StoreError, match="new.db cannot be created: its folder .* is missing or not writable"):
        Store(tmp_path / "new.db")

    def readonly(*a, **k):
        db = real(*a, **k)
        db.close()
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(sqlite3, "connect", readonly)
    with pytest.raises(StoreError, match="cannot be written here: .*read-only \\(the store is fine") as e:
        Store(tmp_path / "s.db")
    assert "not a usable" not in str(e.value)


def test_export_says_which_latencies_rest_on_fewer_visits(store_path, tmp_path, cli_env):
    """After an interrupted 3-round campaign some medians rest on 1-2 visits, exported without a word."""
    from tests.conftest import harness

    with Store(store_path) as st:
        cid = st.start_campaign("a", "nb201", {}, "x", 7)
        for token, rounds in (("0", 3), ("1", 3), ("2", 1)):
            for r in range(1, rounds + 1):
                arch = SPACE.parse(token)
                st.record_measurement(cid, "a", arch, model_format="onnx", model_digest="d", started_at=utcnow(),
                                      duration_s=0.1, summary={"median_ms": 1.0 + r, "mean_ms": 1.0 + r, "std_ms": 0.0,
                                                               "min_ms": 1.0, "p90_ms": 3.0},
                                      timed_ms=[1.0 + r], warmup_ms=[9.0], round_no=r, rounds=3)
        assert latency_table(st, "nb201").a_visits.tolist() == [3, 3, 1]
        st.mark_suspect([int(st.measurements().id.iloc[0])], "other processes used 90% of the CPUs")
    r = harness("export", "-o", str(tmp_path / "o.csv"), env={**cli_env, "HARNESS_STORE": str(store_path),
                                                               "COLUMNS": "200"})
    said = " ".join(r.stdout.split())
    assert "partial: a: 1 latencies rest on fewer visits than the others (column a_visits < 3" in said
    assert "suspect: a: 1 latencies rest on visits measured while the device was not alone" in said  # column only


def test_read_commands_leave_an_empty_file_alone_and_campaigns_mentions_imports(tmp_path, cli_env):
    from tests.conftest import harness

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    r = harness("campaigns", env={**cli_env, "HARNESS_STORE": str(empty)}, check=False)
    assert r.returncode == 2 and "is empty (0 bytes), not a store yet" in " ".join(r.stderr.split())
    assert empty.stat().st_size == 0  # a read command wrote an 86 KB schema into it
    (tmp_path / "t.csv").write_text("nb201_index,dev_ms\n1,1.5\n2,2.5\n")
    env = {**cli_env, "HARNESS_STORE": str(tmp_path / "s.db"), "COLUMNS": "200"}
    harness("import", str(tmp_path / "t.csv"), env=env)
    said = " ".join(harness("campaigns", env=env).stdout.split())
    assert "no campaigns in" in said and "it holds 1 imported device(s)" in said
