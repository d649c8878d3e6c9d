"""The results store: one SQLite file, schema versioned, every model's result in one transaction.

Tables: ``devices`` (with the profile as last used), ``architectures`` (space + canonical key),
``campaigns`` (profile and static conditions as used), ``measurements`` (one row per model attempt:
summary of the timed runs or a failure with its kind, conditions before/after), ``runs`` (every
warm-up and timed latency). A measurement and its runs are written together or not at all, so a
SIGKILL or a dropped device loses nothing that was reported as done.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from harness import __version__, interrupts
from harness.errors import StoreError
from harness.models.spaces import Arch
from harness.paths import nearest_existing
from harness.results.atomic import atomic_path

SCHEMA_VERSION = 9
# a read-only store of this version or newer is read as it is (no upgrade possible): the steps after it only add
# columns that reading code selects with care (sentinel_checks.band)
READ_ONLY_FROM = 8

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL CHECK (origin IN ('measured', 'imported')),
    profile_json TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE architectures (
    id INTEGER PRIMARY KEY,
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    columns_json TEXT NOT NULL,
    UNIQUE (space, key)
);
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    space TEXT NOT NULL,
    command TEXT,
    profile_json TEXT NOT NULL,
    profile_digest TEXT NOT NULL,
    conditions_json TEXT NOT NULL DEFAULT '{}',
    harness_version TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    planned INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'interrupted', 'failed')),
    message TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    device_id INTEGER NOT NULL REFERENCES devices(id),
    arch_id INTEGER NOT NULL REFERENCES architectures(id),
    model_format TEXT,
    model_digest TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    failure_kind TEXT,
    failure_message TEXT,
    n_runs INTEGER,
    median_ms REAL,
    mean_ms REAL,
    std_ms REAL,
    min_ms REAL,
    p90_ms REAL,
    init_ms REAL,
    conditions_json TEXT NOT NULL DEFAULT '{}',
    started_at TEXT NOT NULL,
    duration_s REAL,
    CHECK ((status = 'ok' AND median_ms IS NOT NULL AND failure_kind IS NULL)
        OR (status = 'failed' AND median_ms IS NULL AND failure_kind IS NOT NULL))
);
CREATE INDEX measurements_by_device_arch ON measurements (device_id, arch_id, status);
CREATE TABLE runs (
    measurement_id INTEGER NOT NULL REFERENCES measurements(id) ON DELETE CASCADE,
    warmup INTEGER NOT NULL CHECK (warmup IN (0, 1)),
    seq INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    PRIMARY KEY (measurement_id, warmup, seq)
) WITHOUT ROWID;
"""


_VALID_LATENCY = "{col} > 0 AND {col} <= 1.7976931348623157e308"  # positive and finite

# Additive migrations: MIGRATIONS[v] takes a store from version v to v + 1.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE imports (
    id INTEGER PRIMARY KEY,
    file TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    space TEXT NOT NULL,
    rows INTEGER NOT NULL,
    devices_json TEXT NOT NULL,
    imported_at TEXT NOT NULL
);
CREATE TABLE imported_latencies (
    device_id INTEGER NOT NULL REFERENCES devices(id),
    arch_id INTEGER NOT NULL REFERENCES architectures(id),
    latency_ms REAL NOT NULL CHECK (latency_ms >= 0),
    import_id INTEGER NOT NULL REFERENCES imports(id),
    PRIMARY KEY (device_id, arch_id)
) WITHOUT ROWID;
CREATE TABLE arch_metrics (
    arch_id INTEGER NOT NULL REFERENCES architectures(id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('accuracy', 'metadata')),
    value REAL NOT NULL,
    import_id INTEGER REFERENCES imports(id),
    PRIMARY KEY (arch_id, name)
) WITHOUT ROWID;
""",
    2: """
CREATE TABLE predictors (
    id INTEGER PRIMARY KEY,
    space TEXT NOT NULL,
    device TEXT NOT NULL,
    method TEXT NOT NULL,
    model_json TEXT NOT NULL,
    provenance_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE INDEX predictors_by_device ON predictors (space, device);
""",
    # the model's identity beside each measurement: graph mode (prune/keep), exporter version, and whether
    # the network's output is constant (degenerate). NULL = measured before these were recorded (exporter 1).
    3: """
ALTER TABLE measurements ADD COLUMN graph_mode TEXT;
ALTER TABLE measurements ADD COLUMN exporter_version INTEGER;
ALTER TABLE measurements ADD COLUMN degenerate INTEGER;
""",
    # runs may only hold real latencies: > 0 and finite (NaN is stored as NULL, refused by NOT NULL).
    # Measurements that already hold such runs become parse_error failures keeping the values.
    4: f"""
UPDATE measurements SET status = 'failed', failure_kind = 'parse_error',
    failure_message = 'invalid run latencies found by the store upgrade (must be > 0 and finite): ' ||
        (SELECT group_concat(quote(latency_ms), ', ') FROM runs r
          WHERE r.measurement_id = measurements.id AND NOT ({_VALID_LATENCY.format(col="r.latency_ms")})),
    n_runs = NULL, median_ms = NULL, mean_ms = NULL, std_ms = NULL, min_ms = NULL, p90_ms = NULL
WHERE status = 'ok' AND id IN (SELECT measurement_id FROM runs WHERE NOT ({_VALID_LATENCY.format(col="latency_ms")}));
CREATE TABLE runs_v4 (
    measurement_id INTEGER NOT NULL REFERENCES measurements(id) ON DELETE CASCADE,
    warmup INTEGER NOT NULL CHECK (warmup IN (0, 1)),
    seq INTEGER NOT NULL,
    latency_ms REAL NOT NULL CHECK ({_VALID_LATENCY.format(col="latency_ms")}),
    PRIMARY KEY (measurement_id, warmup, seq)
) WITHOUT ROWID;
INSERT INTO runs_v4 SELECT * FROM runs WHERE {_VALID_LATENCY.format(col="latency_ms")};
DROP TABLE runs;
ALTER TABLE runs_v4 RENAME TO runs;
-- imports are written in chunks (so other writers are never blocked for long) and count once 'done'
ALTER TABLE imports ADD COLUMN state TEXT NOT NULL DEFAULT 'done' CHECK (state IN ('writing', 'done'));
ALTER TABLE imports ADD COLUMN host TEXT;
ALTER TABLE imports ADD COLUMN pid INTEGER;
""",
    # whether a measurement's runs table holds every timed run (1) or the device reported statistics only
    # (0: a phone's benchmark_model); NULL: measured before this was recorded
    5: """
ALTER TABLE measurements ADD COLUMN per_run INTEGER CHECK (per_run IN (0, 1));
""",
    # what was measured (batch, resolution, precision with its calibration) and the energy it took
    6: """
ALTER TABLE measurements ADD COLUMN batch_size INTEGER NOT NULL DEFAULT 1 CHECK (batch_size >= 1);
ALTER TABLE measurements ADD COLUMN input_shape TEXT NOT NULL DEFAULT '';
ALTER TABLE measurements ADD COLUMN precision TEXT NOT NULL DEFAULT 'fp32'
    CHECK (precision IN ('fp32', 'fp16', 'int8'));
ALTER TABLE measurements ADD COLUMN calibration TEXT;
ALTER TABLE measurements ADD COLUMN energy_mj REAL CHECK (energy_mj IS NULL OR energy_mj >= 0);
ALTER TABLE measurements ADD COLUMN energy_method TEXT;
CREATE INDEX measurements_by_workload ON measurements (device_id, arch_id, batch_size, input_shape, precision, status);
""",
    # measurements you can trust: rounds, the estimate's CI and stop rule, run flags, suspects, sentinels
    7: """
ALTER TABLE measurements ADD COLUMN round INTEGER;
ALTER TABLE measurements ADD COLUMN rounds INTEGER;
ALTER TABLE measurements ADD COLUMN stop_rule TEXT;
ALTER TABLE measurements ADD COLUMN ci_low_ms REAL;
ALTER TABLE measurements ADD COLUMN ci_high_ms REAL;
ALTER TABLE measurements ADD COLUMN n_used INTEGER;
ALTER TABLE measurements ADD COLUMN n_preempted INTEGER;
ALTER TABLE measurements ADD COLUMN n_outliers INTEGER;
ALTER TABLE measurements ADD COLUMN suspect TEXT;
ALTER TABLE measurements ADD COLUMN gate_wait_s REAL;
ALTER TABLE measurements ADD COLUMN ref_median_ms REAL;
ALTER TABLE runs ADD COLUMN flag INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN wait_ms REAL;
CREATE TABLE sentinel_checks (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    device_id INTEGER NOT NULL REFERENCES devices(id),
    arch_id INTEGER NOT NULL REFERENCES architectures(id),
    at TEXT NOT NULL,
    models_done INTEGER NOT NULL,
    median_ms REAL NOT NULL,
    baseline_ms REAL,
    in_band INTEGER NOT NULL CHECK (in_band IN (0, 1)),
    phase TEXT NOT NULL DEFAULT 'check'
);
CREATE TABLE campaign_events (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail_json TEXT NOT NULL DEFAULT '{}'
);
""",
    # the band a sentinel check was judged by: the profile's band, or twice the check's own CI where that is wider
    8: """
ALTER TABLE sentinel_checks ADD COLUMN band REAL;
""",
}

# the default workload: what every measurement was before the columns existed
DEFAULT_WORKLOAD = {"batch_size": 1, "input_shape": "", "precision": "fp32"}


def workload_label(batch_size: int, input_shape: str, precision: str) -> str:
    """Same label as :meth:`harness.devices.profile.Workload.label`, from stored columns."""
    parts = [f"bs{int(batch_size)}"] if int(batch_size) != 1 else []
    if input_shape:
        parts.append(input_shape)
    if precision != "fp32":
        parts.append(precision)
    return ".".join(parts)


def measured_name(device: str, batch_size: int, input_shape: str, precision: str) -> str:
    label = workload_label(batch_size, input_shape, precision)
    return f"{device}@{label}" if label else device


# what workload_label writes: bs8, 224x224, int8, bs32.224x224.fp16 (parts in that order)
WORKLOAD_LABEL_RE = r"(bs[0-9]+)(\.[0-9]+x[0-9]+)?(\.(fp16|int8))?|([0-9]+x[0-9]+)(\.(fp16|int8))?|(fp16|int8)"


def campaign_series(device: str, profile_json: str | None) -> str:
    """The series a campaign measured, from its stored profile: ``device``, or ``device@bs8.fp16`` for another
    workload (its sentinel checks and provenance belong to that series, not the device's default one)."""
    w = (json.loads(profile_json or "{}").get("workload") or {})
    shape = w.get("input_shape")
    return measured_name(device, int(w.get("batch_size") or 1), f"{shape[0]}x{shape[1]}" if shape else "",
                         str(w.get("precision") or "fp32"))


def parse_workload_label(label: str) -> dict:
    """The workload fields a label names (``bs8.64x64.fp16`` -> batch_size 8, input_shape [64, 64], precision
    fp16): how ``name@label`` is measured again with the profile ``name``."""
    if not is_workload_label(label):
        raise ValueError(f"{label!r} is not a workload label (e.g. bs8, 64x64, fp16, bs8.fp16)")
    fields: dict = {}
    for part in label.split("."):
        if part.startswith("bs"):
            fields["batch_size"] = int(part[2:])
        elif "x" in part:
            fields["input_shape"] = [int(v) for v in part.split("x")]
        else:
            fields["precision"] = part
    return fields


def is_workload_label(label: str) -> bool:
    """Is ``label`` a suffix :func:`workload_label` writes (``name@label`` is how exports name a workload)?"""
    return re.fullmatch(WORKLOAD_LABEL_RE, label) is not None


def _exporter_version(space_column: str) -> str:
    """SQL for the exporter version a successful measurement's model came from: 1 for rows from before it was
    recorded, NULL where no model of ours was measured (a replayed table answers by architecture, a model file is
    measured as given), so that it is never stale. ``space_column``: where the query has the space."""
    return (f"CASE WHEN m.model_digest IS NULL OR {space_column} = 'file' THEN NULL "
            "ELSE COALESCE(m.exporter_version, 1) END")


def _workload(workload: dict | None) -> dict:
    return {**DEFAULT_WORKLOAD, "calibration": None, **(workload or {})}


TRUST_COLUMNS = ("stop_rule", "ci_low_ms", "ci_high_ms", "n_used", "n_preempted", "n_outliers", "suspect",
                 "gate_wait_s", "ref_median_ms")


def normalized(visits: pd.DataFrame) -> pd.Series:
    """Each visit's median, reference-normalised where the visit ran with a paired reference model.

    A visit timed next to the reference gives latency = (model median / reference median in that
    visit) x (the reference's median over all of the device's visits): machine-speed drift shared by the
    pair cancels, the unit stays milliseconds. Visits without a reference keep their raw median.
    """
    out = visits["median_ms"].astype(float).copy()
    if "ref_median_ms" not in visits:
        return out
    has = visits["ref_median_ms"].notna()
    if has.any():
        scale = visits[has].groupby("device")["ref_median_ms"].transform("median")
        out[has] = visits.loc[has, "median_ms"] / visits.loc[has, "ref_median_ms"] * scale
    return out


def _locked(e: sqlite3.Error) -> bool:
    """Another connection holds the lock: worth waiting for."""
    text = str(e).lower()
    return "locked" in text or "busy" in text


def check_store_path(p: Path) -> None:
    """A store is a file: a folder there, or a file where a folder of its path should be, is the user's path
    mistake, not a missing store ("measure something first" sent them in a circle)."""
    if p.is_dir():
        raise StoreError(f"{p} is a folder, not a store file: point --store (or HARNESS_STORE) at a file, e.g. "
                         f"{p / 'harness.db'}")
    parent = nearest_existing(p.parent)
    if parent is not None and not parent.is_dir():
        raise StoreError(f"{p}: {parent} is a file, not a folder; point --store (or HARNESS_STORE) at a path in a "
                         "folder")


def open_store(path: str | os.PathLike, *, write: bool = True, **kwargs: Any) -> Store:
    """The store for a command: read commands (``write=False``) never create one, and open it read-only
    when it (or its folder) cannot be written, e.g. on read-only media or owned by someone else."""
    p = Path(path)
    check_store_path(p)  # before "no store at": a folder there is the path's mistake (Store checks it too)
    if not write:
        if not p.is_file():
            raise StoreError(f"no store at {p}: measure or import something first, or point --store "
                             "(or HARNESS_STORE) at an existing store")
        if p.stat().st_size == 0:  # opened for writing, a read command wrote a whole schema into it
            raise StoreError(f"{p} is empty (0 bytes), not a store yet: measure or import something into it first, "
                             "or point --store (or HARNESS_STORE) at an existing store")
        if not (os.access(p, os.W_OK) and os.access(p.parent, os.W_OK)):
            return Store(p, readonly=True, **kwargs)
    return Store(p, **kwargs)


def describe_sqlite_error(e: sqlite3.Error, path: Path) -> StoreError:
    """An SQLite error as a StoreError that says what happened to which file and what to do."""
    text = str(e)
    low = text.lower()
    if "full" in low:
        reason, transient = "the disk (or the store's size limit) is full; free some space and rerun", True
    elif "malformed" in low or "not a database" in low or "corrupt" in low:
        reason, transient = ("the file is damaged; restore a backup, or salvage it with "
                             f"`sqlite3 {path} .recover | sqlite3 fixed.db`"), False
    elif _locked(e):
        reason, transient = ("another process has been writing to the store for longer than the wait; "
                             "it is retried, or rerun when that process is done"), True
    elif "readonly" in low or "read-only" in low:
        reason, transient = "the store (or its folder) is read-only; use a writable copy with --store", False
    elif "disk i/o" in low or "unable to open" in low:
        reason, transient = "the file could not be read or written (disk or permission problem)", True
    elif isinstance(e, sqlite3.IntegrityError):
        reason, transient = "a value broke one of the store's rules (a bug: please report it)", False
    else:
        reason, transient = "unexpected database error", False
    err = StoreError(f"{path}: {reason} (SQLite: {text})")
    err.transient = transient
    return err


def _guarded(fn):
    """Public Store methods raise StoreError, never a raw sqlite3 error."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise describe_sqlite_error(e, self.path) from e
        except pd.errors.DatabaseError as e:  # pandas wraps the sqlite3 error of read_sql_query
            cause = e.__cause__ if isinstance(e.__cause__, sqlite3.Error) else sqlite3.DatabaseError(str(e))
            raise describe_sqlite_error(cause, self.path) from e

    return wrapper


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_UNREPORTED: list[str] = []  # warnings of stores opened in this process that no one has shown yet


def take_warnings() -> list[str]:
    """The warnings of every store opened since the last call (a rejected or stuck pending measurement): the CLI
    prints them after each command, so nothing set aside goes unsaid."""
    out = list(dict.fromkeys(_UNREPORTED))
    _UNREPORTED.clear()
    return out


STALE_CLAIM_S = 600.0  # a pending measurement claimed this long ago by a process this host cannot see is reported


class Store:
    """Open (creating if needed) the store at ``path``; the schema version is checked here."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float = 30.0, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self.schema_version = SCHEMA_VERSION  # lower only for a read-only store of an older one (READ_ONLY_FROM)
        self.warnings: list[str] = []  # problems that did not stop the store from opening
        self.pending_dir = self.path.with_name(self.path.name + ".pending")
        check_store_path(self.path)
        if readonly and not self.path.is_file():
            raise StoreError(f"no store at {self.path}: measure or import something first, or point --store "
                             "(or HARNESS_STORE) at an existing store")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = None  # type: ignore[assignment]
        deadline, wait = time.monotonic() + busy_timeout, 0.02
        while True:
            try:
                self._open(busy_timeout)
                break
            except (sqlite3.Error, StoreError) as e:
                if self.db is not None:
                    self.db.close()
                    self.db = None  # type: ignore[assignment]
                if isinstance(e, StoreError):
                    raise
                # switching to WAL (and creating the schema) while another process does the same can
                # answer "locked" at once, without waiting for the busy timeout: try again, bounded
                if _locked(e) and time.monotonic() + wait < deadline:
                    time.sleep(wait)
                    wait = min(wait * 2, 1.0)
                    continue
                raise self._open_error(e) from None
        if not readonly:
            self.replay_pending()
        _UNREPORTED.extend(self.warnings)

    def _open_error(self, e: sqlite3.Error) -> StoreError:
        """Why a store did not open. "Not a usable harness store" for a read-only store (or an unwritable folder
        for a new one) read as damage: a user might delete a good store."""
        low, folder = str(e).lower(), self.path.parent
        if "unable to open" in low or "readonly" in low or "read-only" in low:
            if not self.path.exists():
                return StoreError(f"{self.path} cannot be created: its folder {folder} is missing or not writable; "
                                  "choose another --store (or HARNESS_STORE)")
            if not os.access(self.path, os.W_OK) or not os.access(folder, os.W_OK) or "read" in low:
                return StoreError(f"{self.path} cannot be written here: the file, its folder or its file system is "
                                  "read-only (the store is fine; reading commands such as export and srcc still work); "
                                  "use a writable copy with --store")
            return describe_sqlite_error(e, self.path)
        if "malformed" in low:  # damaged: say how to salvage it, as every later read does
            return describe_sqlite_error(e, self.path)
        return StoreError(f"{self.path} is not a usable harness store: {e}")

    def _open(self, busy_timeout: float) -> None:
        self.db = self._connect_readonly(busy_timeout) if self.readonly else \
            sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout)
        self.db.execute("PRAGMA foreign_keys = ON")
        # recognise the file before changing anything in it: journal_mode = WAL rewrites its header
        self._init_schema()
        if not self.readonly:
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")

    def _connect_readonly(self, busy_timeout: float) -> sqlite3.Connection:
        """Read-only: never creates, upgrades or writes anything. On read-only media a WAL store cannot
        create its shared-memory file, so it is then opened as immutable (nobody can be writing to it)."""
        from urllib.parse import quote

        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            db.close()
        return sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, timeout=busy_timeout)

    def _init_schema(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and not self.readonly:
            # one script, one transaction: a crash here leaves an empty file, never half a schema
            self.db.execute("PRAGMA journal_mode = WAL")
            upgrades = "".join(MIGRATIONS[v] for v in range(1, SCHEMA_VERSION))
            try:
                self.db.executescript(
                    f"BEGIN IMMEDIATE; {SCHEMA} {upgrades} INSERT INTO meta VALUES ('schema_version', "
                    f"'{SCHEMA_VERSION}'), ('created_by', 'harness {__version__}'); COMMIT;")
            except sqlite3.OperationalError as e:
                if "already exists" not in str(e):
                    raise
                # another process created the store between our look and our lock: use theirs
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                self._init_schema()
            return
        if "meta" not in tables:
            raise StoreError(f"{self.path} is an SQLite file but not a harness store (no meta table); "
                             "nothing in it was changed. Use another --store file.")
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = int(row[0]) if row and str(row[0]).isdigit() else None
        if found is None or found > SCHEMA_VERSION or found < 1:
            raise StoreError(f"{self.path} has store schema version {found}; this harness {__version__} "
                             f"reads versions 1..{SCHEMA_VERSION}. Use a matching harness or a new --store file.")
        if found < SCHEMA_VERSION and self.readonly:
            if found >= READ_ONLY_FROM:  # what the newer steps add, reading code asks for with care
                self.schema_version = found
                return
            raise StoreError(f"{self.path} was written by an older harness (store schema {found}) and is read-only "
                             f"here; this harness needs schema {SCHEMA_VERSION}. Copy it somewhere writable: "
                             "the first command that opens the copy upgrades it.")
        if found < SCHEMA_VERSION:  # additive upgrade, all steps in one transaction
            upgrades = "".join(MIGRATIONS[v] for v in range(found, SCHEMA_VERSION))
            try:
                self.db.executescript(f"BEGIN IMMEDIATE; {upgrades} UPDATE meta SET value = '{SCHEMA_VERSION}' "
                                      "WHERE key = 'schema_version'; COMMIT;")
            except sqlite3.OperationalError as e:
                # another process upgraded it between our look and our lock (two commands started together
                # after an update): its steps are in, ours fail as duplicates. Look again.
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if "duplicate column" not in str(e) and "already exists" not in str(e):
                    raise
                self._init_schema()

    def close(self) -> None:
        self.db.close()

    @_guarded
    def backup(self, dest: str | os.PathLike) -> int:
        """A consistent copy while campaigns write (SQLite's online backup): a plain `cp` of a live store missed
        the measurements still in its -wal file, or, copied with it, gave a damaged file. Written beside ``dest``
        and renamed into place; returns its size in bytes."""
        dest = Path(dest)
        if dest.exists() and dest.resolve() == self.path.resolve():
            raise StoreError(f"{dest} is the store itself; name another file to copy it to")
        if dest.is_dir():
            raise StoreError(f"{dest} is a folder; name the file to write (e.g. {dest / self.path.name})")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            target = sqlite3.connect(tmp)
            try:
                self.db.backup(target)
            finally:
                target.close()
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dest.stat().st_size

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (nested use joins the outer one)."""
        if self.db.in_transaction:
            yield self.db
            return
        committing = False
        try:
            # BEGIN inside the try: a Ctrl-C is raised right after the call that was running returns, so one
            # landing during BEGIN would otherwise leave the transaction open, and every later write (the
            # campaign's end included) would join it and never commit
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise describe_sqlite_error(e, self.path) from e
            yield self.db
            committing = True
            self.db.execute("COMMIT")
        except BaseException as e:
            if committing and isinstance(e, KeyboardInterrupt) and not self.db.in_transaction \
                    and interrupts.requested():
                # landed during COMMIT, which went through: the write is done, so say so (a caller would
                # otherwise keep it again as pending); the counted Ctrl-C stops the command at its next check
                return
            self._rollback(e)
            if isinstance(e, sqlite3.Error):
                raise describe_sqlite_error(e, self.path) from e
            raise

    def _rollback(self, cause: BaseException) -> None:
        """ROLLBACK without hiding ``cause``: SQLite may already have rolled back (disk full, I/O error), and a
        failing ROLLBACK is added as a note to the real error instead of replacing it."""
        if not self.db.in_transaction:
            return
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error as rb:
            cause.add_note(f"(and the ROLLBACK that followed failed too: {rb})")

    # --- measurements that could not be written when they were taken ----------------------------
    def keep_pending(self, record: dict[str, Any]) -> Path:
        """Save a finished measurement the store could not take (locked, full, damaged) as JSON beside it;
        :meth:`replay_pending` adds it on the next open. Written atomically (temporary file + rename)."""
        import uuid

        self.pending_dir.mkdir(exist_ok=True)
        final = self.pending_dir / f"{record['started_at'].replace(':', '')}-{uuid.uuid4().hex[:8]}.json"
        with atomic_path(final) as tmp:  # a reader never sees half a file (.tmp-*, not *.json, until renamed)
            tmp.write_text(json.dumps(record, default=str))
        return final

    def replay_pending(self) -> int:
        """Add the measurements kept aside by :meth:`keep_pending`; each file goes in once.

        Every command that opens the store replays, so two may start at once: each file is claimed first by
        renaming it (atomic: one process wins, the other skips it), and a measurement already in the store (same
        campaign, device, architecture, start time and round: a replayer killed between its commit and the
        file's removal) is not added again. A claim left by a process that no longer runs goes back in the queue."""
        if not self.pending_dir.is_dir():
            return 0
        self._requeue_orphaned_claims()
        added = 0
        for f in sorted(self.pending_dir.glob("*.json")):
            if f.name.startswith("."):  # a file keep_pending is still writing (atomic_path's .tmp-*): not yet
                continue
            claim = f.with_name(f"{f.stem}@{socket.gethostname()}@{os.getpid()}.claim")
            try:
                os.rename(f, claim)
            except FileNotFoundError:
                continue  # another command is replaying this one
            try:
                rec = json.loads(claim.read_text())
                arch = Arch(**rec.pop("arch"))
                if not self._has_measurement(rec, arch):
                    self.record_measurement(arch=arch, **rec)
                    added += 1
            except StoreError as e:
                if e.transient:
                    os.rename(claim, f)
                    return added  # busy now: the next open tries again
                self._reject_pending(claim, str(e))
                continue
            except (OSError, ValueError, TypeError, KeyError) as e:
                self._reject_pending(claim, str(e))
                continue
            claim.unlink()
        return added

    def _requeue_orphaned_claims(self) -> None:
        """Claims of replayers that no longer run go back in the queue. One this host cannot judge (claimed on
        another host sharing the folder) is left alone, and named in ``warnings`` once it is old: a replay takes
        milliseconds, so a claim held for minutes is a measurement not yet in the store."""
        host, now = socket.gethostname(), time.time()
        for claim in self.pending_dir.glob("*.claim"):
            stem, _, owner = claim.stem.partition("@")
            claim_host, _, pid = owner.rpartition("@")
            if claim_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.rename(claim, claim.with_name(f"{stem}.json"))
                continue
            with contextlib.suppress(OSError):
                if now - claim.stat().st_mtime > STALE_CLAIM_S:
                    self.warnings.append(f"{claim}: a pending measurement claimed by {owner or 'an unknown process'} "
                                         f"{(now - claim.stat().st_mtime) / 60:.0f} minutes ago is not in the store "
                                         f"yet; if that process is gone, rename it to {stem}.json to replay it")

    @_guarded
    def _has_measurement(self, rec: dict[str, Any], arch: Arch) -> bool:
        """Is this pending record's measurement in the store already (a replayer stopped between its commit and
        removing the file)? Same campaign, device, architecture, start time and round."""
        row = self.db.execute(
            "SELECT 1 FROM measurements m JOIN devices d ON d.id = m.device_id "
            "JOIN architectures a ON a.id = m.arch_id WHERE m.campaign_id = ? AND d.name = ? AND a.space = ? "
            "AND a.key = ? AND m.started_at = ? AND m.round IS ?",
            (rec.get("campaign_id"), rec.get("device"), arch.space, arch.key, rec.get("started_at"),
             rec.get("round_no"))).fetchone()
        return row is not None

    def _reject_pending(self, f: Path, why: str) -> None:
        """A pending measurement that cannot go in (damaged, or from another store) is set aside, not lost."""
        kept = f.with_name(f"{f.stem.partition('@')[0]}.rejected")
        f.rename(kept)
        self.warnings.append(f"{kept}: kept aside, not added to the store: {why}")

    # --- devices and architectures -------------------------------------------------------
    @_guarded
    def device_id(self, name: str, origin: str = "measured", profile: dict | None = None) -> int:
        with self.transaction() as db:
            row = db.execute("SELECT id, origin FROM devices WHERE name = ?", (name,)).fetchone()
            if row:
                if row[1] != origin:
                    raise StoreError(f"device {name!r} exists in the store as {row[1]}, not {origin}: one name is "
                                     "one device; import under another name (harness import --prefix vm-) or use "
                                     "another store (--store)")
                if profile is not None:
                    db.execute("UPDATE devices SET profile_json = ? WHERE id = ?", (json.dumps(profile), row[0]))
                return row[0]
            self._check_workload_names(db, name, origin)
            cur = db.execute("INSERT INTO devices (name, origin, profile_json, created_at) VALUES (?, ?, ?, ?)",
                             (name, origin, json.dumps(profile) if profile is not None else None, utcnow()))
            return int(cur.lastrowid)

    @staticmethod
    def _check_workload_names(db: sqlite3.Connection, name: str, origin: str) -> None:
        """An imported ``gpu@bs8`` (an exported workload) and a measured ``gpu`` with batch 8 would both be the
        table's ``gpu@bs8``: refuse the second of them, naming both."""
        if origin == "imported" and "@" in name:
            base = name.split("@", 1)[0]
            clash = db.execute("SELECT name FROM devices WHERE name = ? AND origin = 'measured'", (base,)).fetchone()
            if clash:
                raise StoreError(f"imported device {name!r} would share its name with the workload {name!r} of "
                                 f"{base!r}, which this store measured; import it under another name (harness import "
                                 "--prefix vm-) or into another store (--store)")
        elif origin == "measured":
            prefix = f"{name}@"
            clash = db.execute("SELECT name FROM devices WHERE substr(name, 1, ?) = ? AND origin = 'imported'",
                               (len(prefix), prefix)).fetchone()
            if clash:
                raise StoreError(f"device {name!r}: this store holds an imported {clash[0]!r}, which its workloads "
                                 "would be named too; measure into another store (--store) (and import such tables "
                                 "under another name next time: harness import --prefix vm-)")

    @_guarded
    def arch_id(self, arch: Arch) -> int:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO architectures (space, key, columns_json) VALUES (?, ?, ?)",
                       (arch.space, arch.key, json.dumps(arch.columns, sort_keys=True)))
            return db.execute("SELECT id FROM architectures WHERE space = ? AND key = ?",
                              (arch.space, arch.key)).fetchone()[0]

    @_guarded
    def devices(self) -> pd.DataFrame:
        q = """SELECT d.name, d.origin,
                      (SELECT COUNT(DISTINCT m.arch_id) FROM measurements m
                        WHERE m.device_id = d.id AND m.status = 'ok')
                      + (SELECT COUNT(*) FROM imported_latencies i WHERE i.device_id = d.id
                         AND i.import_id IN (SELECT id FROM imports WHERE state = 'done')) AS architectures,
                      d.created_at
               FROM devices d ORDER BY d.name"""
        return pd.read_sql_query(q, self.db)

    # --- campaigns -----------------------------------------------------------------------
    @_guarded
    def start_campaign(self, device: str, space: str, profile: dict, profile_digest: str,
                       planned: int, command: str = "") -> int:
        dev = self.device_id(device, "measured", profile)
        with self.transaction() as db:
            self._close_abandoned(db, dev)
            cur = db.execute(
                """INSERT INTO campaigns (device_id, space, command, profile_json, profile_digest,
                   harness_version, host, pid, planned, status, started_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)""",
                (dev, space, command, json.dumps(profile), profile_digest, __version__,
                 socket.gethostname(), os.getpid(), planned, utcnow()))
            return int(cur.lastrowid)

    def _close_abandoned(self, db: sqlite3.Connection, device_id: int) -> None:
        """Campaigns left 'running' by a killed process on this host become 'interrupted'."""
        rows = db.execute("SELECT id, host, pid FROM campaigns WHERE device_id = ? AND status = 'running'",
                          (device_id,)).fetchall()
        for cid, host, pid in rows:
            if host == socket.gethostname() and not _pid_alive(pid):
                db.execute("UPDATE campaigns SET status = 'interrupted', message = ?, finished_at = ? "
                           "WHERE id = ?", ("process ended without closing the campaign", utcnow(), cid))

    @_guarded
    def close_own_campaigns(self, device: str, status: str, message: str = "") -> None:
        """Close this process's campaigns on ``device`` still marked running (when the id was never returned)."""
        with self.transaction() as db:
            db.execute("""UPDATE campaigns SET status = ?, message = ?, finished_at = ?
                          WHERE status = 'running' AND host = ? AND pid = ?
                            AND device_id = (SELECT id FROM devices WHERE name = ?)""",
                       (status, message or None, utcnow(), socket.gethostname(), os.getpid(), device))

    @_guarded
    def set_campaign_conditions(self, campaign_id: int, conditions: dict) -> None:
        with self.transaction() as db:
            db.execute("UPDATE campaigns SET conditions_json = ? WHERE id = ?",
                       (json.dumps(conditions, default=str), campaign_id))

    @_guarded
    def finish_campaign(self, campaign_id: int, status: str, message: str = "") -> None:
        with self.transaction() as db:
            db.execute("UPDATE campaigns SET status = ?, message = ?, finished_at = ? WHERE id = ?",
                       (status, message or None, utcnow(), campaign_id))

    @_guarded
    def measured_profiles(self, device: str, space: str, workload: dict | None = None) -> dict[str, list[str]]:
        """The profiles (as JSON text) behind each architecture's latest successful measurement on ``device`` in
        ``space`` at ``workload`` (default: bs1, the space's resolution, fp32), with the architectures (keys)
        each one measured: what the store's latencies of that series were measured with."""
        rows = self.db.execute(
            f"""SELECT m.campaign_id, a.key FROM measurements m JOIN architectures a ON a.id = m.arch_id
               WHERE m.id IN (
                   SELECT MAX(m.id) FROM measurements m JOIN devices d ON d.id = m.device_id
                   JOIN architectures a2 ON a2.id = m.arch_id
                   WHERE d.name = ? AND a2.space = ? AND m.status = 'ok' AND {self._SAME_WORKLOAD}
                   GROUP BY m.arch_id)""", (device, space, *self._workload_params(_workload(workload)))).fetchall()
        by_campaign: dict[int, list[str]] = {}
        for cid, key in rows:
            by_campaign.setdefault(cid, []).append(key)
        out: dict[str, list[str]] = {}
        for cid, keys in by_campaign.items():  # each campaign's profile read once (the JSON is kilobytes)
            text = self.db.execute("SELECT profile_json FROM campaigns WHERE id = ?", (cid,)).fetchone()[0]
            out.setdefault(text, []).extend(keys)
        return out

    @_guarded
    def campaigns(self, exporter_version: int | None = None) -> pd.DataFrame:
        """One row per campaign; ``stale`` counts its successful measurements of models from an exporter
        older than ``exporter_version`` (0 when it is not given). A campaign still marked 'running' whose
        process on this host is gone is shown as 'abandoned' (read-only: the store is relabelled when that
        device's next campaign starts)."""
        q = f"""SELECT c.id, d.name AS device, c.space, c.status, c.planned,
                      SUM(m.status = 'ok') AS ok, SUM(m.status = 'failed') AS failed,
                      SUM(m.status = 'ok' AND m.suspect IS NOT NULL) AS suspect,
                      SUM(m.status = 'ok' AND ? IS NOT NULL AND {_exporter_version("c.space")} < ?) AS stale,
                      AVG(m.n_runs) AS runs_per_model, MIN(m.per_run) AS per_run,
                      MAX(m.graph_mode) AS graph_mode, MAX(m.batch_size) AS batch_size,
                      MAX(m.input_shape) AS input_shape, MAX(m.precision) AS precision,
                      c.started_at, c.finished_at, c.message, c.host, c.pid
               FROM campaigns c JOIN devices d ON d.id = c.device_id
               LEFT JOIN measurements m ON m.campaign_id = c.id
               GROUP BY c.id ORDER BY c.id"""
        df = pd.read_sql_query(q, self.db, params=(exporter_version, exporter_version))
        df[["ok", "failed", "suspect", "stale"]] = df[["ok", "failed", "suspect", "stale"]].fillna(0).astype(int)
        here = socket.gethostname()
        gone = [s == "running" and h == here and not _pid_alive(int(p))
                for s, h, p in zip(df.status, df.host, df.pid)]
        df.loc[gone, "status"] = "abandoned"
        df.loc[gone, "message"] = "process ended without closing the campaign"
        df["message"] = df["message"].astype(object).where(df["message"].notna(), None)
        # the series it measured: a non-default workload is its own device (local-onnx@int8), as export names it
        df["device"] = [d if b != b or b is None else measured_name(d, int(b), s if isinstance(s, str) else "",
                                                                     p if isinstance(p, str) else "fp32")
                        for d, b, s, p in zip(df.device, df.batch_size, df.input_shape, df.precision)]
        return df.drop(columns=["host", "pid", "batch_size", "input_shape", "precision"])

    # --- measurements --------------------------------------------------------------------
    @_guarded
    def record_measurement(self, campaign_id: int, device: str, arch: Arch, *, model_format: str | None,
                           model_digest: str | None, started_at: str, duration_s: float,
                           summary: dict[str, float] | None = None, init_ms: float | None = None,
                           timed_ms: Iterable[float] = (), warmup_ms: Iterable[float] = (),
                           conditions: dict | None = None, failure_kind: str | None = None,
                           failure_message: str | None = None, graph_mode: str | None = None,
                           exporter_version: int | None = None, degenerate: bool | None = None,
                           per_run: bool = True, n_runs: int | None = None, workload: dict | None = None,
                           energy_mj: float | None = None, energy_method: str | None = None,
                           round_no: int | None = None, rounds: int | None = None,
                           extra: dict[str, Any] | None = None, run_flags: list[int] | None = None,
                           wait_ms: list[float] | None = None) -> int:
        """One model's outcome (one visit, in a rounds campaign) and all its runs, in one transaction.

        ``graph_mode``, ``exporter_version`` and ``degenerate`` say which model was measured
        (harness.models.cache); ``per_run`` False: ``timed_ms`` is the device's aggregate and ``n_runs`` how
        many runs it summarises. ``workload``: at which batch size, input shape ('' = the space's own),
        precision and int8 calibration. ``energy_mj`` is per inference, with the method that measured it.
        ``extra`` fills the trust columns (stop_rule, ci_low_ms, ci_high_ms, n_used, n_preempted,
        n_outliers, suspect, gate_wait_s, ref_median_ms); ``run_flags``/``wait_ms`` go with the timed runs.
        """
        timed, warm = list(timed_ms), list(warmup_ms)
        flags = run_flags if run_flags is not None and len(run_flags) == len(timed) else [0] * len(timed)
        waits = wait_ms if wait_ms is not None and len(wait_ms) == len(timed) else [None] * len(timed)
        x = {k: (extra or {}).get(k) for k in TRUST_COLUMNS}
        ok = failure_kind is None
        if ok and (summary is None or not timed):
            raise StoreError("a successful measurement needs its timed runs")
        if energy_mj is not None and not energy_method:
            raise StoreError("an energy figure needs the method that produced it")
        w = _workload(workload)
        s = summary or {}
        with self.transaction() as db:
            dev = self.device_id(device)
            aid = self.arch_id(arch)
            cur = db.execute(
                """INSERT INTO measurements (campaign_id, device_id, arch_id, model_format, model_digest, status,
                   failure_kind, failure_message, n_runs, median_ms, mean_ms, std_ms, min_ms, p90_ms, init_ms,
                   conditions_json, started_at, duration_s, graph_mode, exporter_version, degenerate, per_run,
                   batch_size, input_shape, precision, calibration, energy_mj, energy_method)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (campaign_id, dev, aid, model_format, model_digest, "ok" if ok else "failed",
                 failure_kind, failure_message, (n_runs or len(timed)) if ok else None, s.get("median_ms"),
                 s.get("mean_ms"), s.get("std_ms"), s.get("min_ms"), s.get("p90_ms"), init_ms,
                 json.dumps(conditions or {}, default=str), started_at, duration_s, graph_mode, exporter_version,
                 None if degenerate is None else int(degenerate), int(per_run) if ok else None,
                 int(w["batch_size"]), str(w["input_shape"] or ""), w["precision"], w["calibration"], energy_mj,
                 energy_method if energy_mj is not None else None))
            mid = int(cur.lastrowid)
            db.execute(f"UPDATE measurements SET round = ?, rounds = ?, "
                       f"{', '.join(f'{k} = ?' for k in TRUST_COLUMNS)} WHERE id = ?",
                       (round_no, rounds, *x.values(), mid))
            db.executemany("INSERT INTO runs (measurement_id, warmup, seq, latency_ms, flag, wait_ms) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           [(mid, 1, i, v, 0, None) for i, v in enumerate(warm)]
                           + [(mid, 0, i, v, f, wt) for i, (v, f, wt) in enumerate(zip(timed, flags, waits))])
            return mid

    @_guarded
    def measured_keys(self, device: str, space: str, workload: dict | None = None) -> set[str]:
        """Keys of architectures with a successful measurement on ``device`` at ``workload`` (default: bs1,
        the space's resolution, fp32; int8 counts only with the same calibration)."""
        rows = self.db.execute(
            f"""SELECT DISTINCT a.key FROM measurements m
               JOIN devices d ON d.id = m.device_id JOIN architectures a ON a.id = m.arch_id
               WHERE d.name = ? AND a.space = ? AND m.status = 'ok' AND {self._SAME_WORKLOAD}""",
            (device, space, *self._workload_params(_workload(workload))))
        return {r[0] for r in rows}

    _SAME_WORKLOAD = "m.batch_size = ? AND m.input_shape = ? AND m.precision = ? AND m.calibration IS ?"

    @staticmethod
    def _workload_params(w: dict) -> tuple:
        return int(w["batch_size"]), str(w["input_shape"] or ""), w["precision"], w["calibration"]

    _VERSION = _exporter_version("a.space")

    @_guarded
    def measured_versions(self, device: str, space: str, graph_mode: str,
                          workload: dict | None = None) -> dict[str, int | None]:
        """Key -> exporter version of the latest successful measurement of that architecture on ``device``
        in ``graph_mode`` at ``workload`` (measurements from before graph modes were recorded count for
        either mode, as exporter version 1; from before workloads, as the default one). What resume skips,
        and what it reports as stale."""
        rows = self.db.execute(
            f"""SELECT a.key, {self._VERSION} FROM measurements m
               JOIN devices d ON d.id = m.device_id JOIN architectures a ON a.id = m.arch_id
               WHERE d.name = ? AND a.space = ? AND m.status = 'ok' AND (m.graph_mode = ? OR m.graph_mode IS NULL)
                 AND {self._SAME_WORKLOAD}
               ORDER BY m.id""", (device, space, graph_mode, *self._workload_params(_workload(workload))))
        return {k: v for k, v in rows}

    @_guarded
    def measurements(self, device: str | None = None, space: str | None = None) -> pd.DataFrame:
        q = """SELECT m.id, d.name AS device, a.space, a.key, m.status, m.failure_kind, m.failure_message,
                      m.n_runs, m.per_run, m.median_ms, m.mean_ms, m.std_ms, m.min_ms, m.p90_ms, m.init_ms,
                      m.model_format, m.model_digest, m.graph_mode, m.exporter_version, m.degenerate,
                      m.batch_size, m.input_shape, m.precision, m.calibration, m.energy_mj, m.energy_method,
                      m.campaign_id, m.started_at, m.duration_s
               FROM measurements m JOIN devices d ON d.id = m.device_id JOIN architectures a ON a.id = m.arch_id
               WHERE (? IS NULL OR d.name = ?) AND (? IS NULL OR a.space = ?) ORDER BY m.id"""
        return pd.read_sql_query(q, self.db, params=(device, device, space, space))

    @_guarded
    def runs(self, measurement_id: int, warmup: bool = False) -> list[float]:
        rows = self.db.execute("SELECT latency_ms FROM runs WHERE measurement_id = ? AND warmup = ? ORDER BY seq",
                               (measurement_id, int(warmup)))
        return [r[0] for r in rows]

    _LATEST_OK = """m.status = 'ok' AND m.id = (
        SELECT MAX(m2.id) FROM measurements m2 WHERE m2.device_id = m.device_id AND m2.arch_id = m.arch_id
          AND m2.batch_size = m.batch_size AND m2.input_shape = m.input_shape AND m2.precision = m.precision
          AND m2.status = 'ok')"""

    def _measured_latest(self, space: str, value: str) -> pd.DataFrame:
        """The latest successful measurement per (device, workload, architecture), with ``value``; the
        device column names non-default workloads ``device@bs32.fp16`` so they sit apart in analyses."""
        q = f"""SELECT d.name AS device, m.batch_size, m.input_shape, m.precision, a.key, a.columns_json,
                       {value} FROM measurements m JOIN devices d ON d.id = m.device_id
                JOIN architectures a ON a.id = m.arch_id WHERE a.space = ? AND {self._LATEST_OK}"""
        df = pd.read_sql_query(q, self.db, params=(space,))
        df["device"] = [measured_name(*r) for r in zip(df.device, df.batch_size, df.input_shape, df.precision)]
        return df.drop(columns=["batch_size", "input_shape", "precision"])

    @_guarded
    def latencies(self, space: str, devices: list[str] | None = None, graph: str | None = None) -> pd.DataFrame:
        """Long table (device, origin, key, columns_json, latency_ms, graph_mode, exporter_version, degenerate,
        suspect: how many of the visits behind a measured latency were marked suspect, visits: how many rounds' visits
        it is the median of) of every device with data in ``space``.

        Measured devices give the median over rounds of each round's latest successful visit (one round:
        the latest measurement's median; per workload, non-default ones as ``device@bs32.fp16``;
        reference-normalised where a paired reference ran, see
        :func:`normalized`), with the model's identity (graph mode, exporter version, degenerate); imported
        devices give the imported value (identity columns empty). Both sit side by side in every analysis.
        ``graph``: measured latencies of that graph mode only (imported ones have none and all stay).
        """
        q = """SELECT d.name AS device, 'imported' AS origin, a.key, a.columns_json, i.latency_ms,
                      NULL AS graph_mode, NULL AS exporter_version, NULL AS degenerate, NULL AS suspect,
                      NULL AS visits
               FROM imported_latencies i JOIN devices d ON d.id = i.device_id JOIN architectures a ON a.id = i.arch_id
               WHERE a.space = ? AND i.import_id IN (SELECT id FROM imports WHERE state = 'done')"""
        imported = pd.read_sql_query(q, self.db, params=(space,))
        visits = self.visits(space, graph=graph)
        cols = ["device", "origin", "key", "columns_json", "latency_ms", "graph_mode", "exporter_version", "degenerate",
                "suspect", "visits"]
        measured = pd.DataFrame(columns=cols)
        if not visits.empty:
            visits = visits.assign(median_ms=normalized(visits), suspect=visits.suspect.notna().astype(int))
            g = visits.groupby(["device", "key"], sort=False)
            measured = g.agg(columns_json=("columns_json", "first"), latency_ms=("median_ms", "median"),
                             graph_mode=("graph_mode", "last"), exporter_version=("exporter_version", "last"),
                             degenerate=("degenerate", "last"), suspect=("suspect", "sum"),
                             visits=("median_ms", "size")).reset_index()
            measured.insert(1, "origin", "measured")
            measured = measured[cols]
        parts = [d for d in (measured, imported) if not d.empty]
        df = pd.concat(parts, ignore_index=True) if parts else measured
        df["latency_ms"] = df["latency_ms"].astype(float)
        if devices:
            df = df[df.device.isin(devices)]
        return df.reset_index(drop=True)

    @_guarded
    def visits(self, space: str, device: str | None = None, graph: str | None = None) -> pd.DataFrame:
        """The visits that make up each measured architecture's latency: per round, the latest ok one
        (``graph``: of that graph mode only; rows from before modes were recorded count for either).

        Only rounds of the same plan (``rounds``) and int8 calibration as the architecture's latest visit count,
        so a re-measurement with another rounds setting or int8 recipe replaces the old one instead of mixing
        with it. Each
        workload is its own series: the device column names non-default ones ``device@bs32.fp16``, and ``device``
        selects one series by that name (the plain name is the default workload alone: it once took every
        workload's visits, so `compare` and `srcc --ci` resampled batch-8 runs as batch-1 noise).
        """
        q = f"""WITH ok AS (SELECT m.*, COALESCE(m.round, 1) AS rnd, COALESCE(m.rounds, 1) AS plan
                          FROM measurements m WHERE m.status = 'ok'
                          AND (? IS NULL OR m.graph_mode IS NULL OR m.graph_mode = ?)),
                    last AS (SELECT device_id, arch_id, batch_size, input_shape, precision, MAX(id) AS last_id
                             FROM ok GROUP BY device_id, arch_id, batch_size, input_shape, precision),
                    pick AS (SELECT MAX(ok.id) AS id FROM ok JOIN last l ON l.device_id = ok.device_id
                             AND l.arch_id = ok.arch_id AND l.batch_size = ok.batch_size
                             AND l.input_shape = ok.input_shape AND l.precision = ok.precision
                             JOIN ok lo ON lo.id = l.last_id
                             WHERE ok.plan = lo.plan AND ok.calibration IS lo.calibration
                             GROUP BY ok.device_id, ok.arch_id, ok.batch_size, ok.input_shape, ok.precision, ok.rnd)
               SELECT m.id, d.name AS device, m.batch_size, m.input_shape, m.precision, a.key, a.columns_json,
                      COALESCE(m.round, 1) AS round,
                      COALESCE(m.rounds, 1) AS rounds, m.median_ms, m.ci_low_ms, m.ci_high_ms, m.n_runs,
                      m.n_used, m.n_preempted, m.n_outliers, m.stop_rule, m.suspect, m.started_at, m.duration_s,
                      m.campaign_id, m.ref_median_ms, m.graph_mode, {self._VERSION} AS exporter_version,
                      m.degenerate
               FROM pick JOIN measurements m ON m.id = pick.id JOIN devices d ON d.id = m.device_id
               JOIN architectures a ON a.id = m.arch_id
               WHERE a.space = ? ORDER BY m.id"""
        df = pd.read_sql_query(q, self.db, params=(graph, graph, space))
        df["device"] = [measured_name(*r) for r in zip(df.device, df.batch_size, df.input_shape, df.precision)]
        df = df.drop(columns=["batch_size", "input_shape", "precision"])
        if device is not None:
            df = df[df.device == device].reset_index(drop=True)
        return df

    @_guarded
    def measured_rounds(self, device: str, space: str, rounds: int | None, graph_mode: str | None = None,
                        workload: dict | None = None) -> dict[tuple[str, int], int | None]:
        """(key, round) -> exporter version of visits already measured under a ``rounds``-round plan (None: under
        any plan; in ``graph_mode``; older rows without a mode count for either; at ``workload``, default bs1
        fp32): what resume skips."""
        rows = self.db.execute(
            f"""SELECT a.key, COALESCE(m.round, 1), {self._VERSION} FROM measurements m
               JOIN devices d ON d.id = m.device_id JOIN architectures a ON a.id = m.arch_id
               WHERE d.name = ? AND a.space = ? AND m.status = 'ok' AND (? IS NULL OR COALESCE(m.rounds, 1) = ?)
                 AND (? IS NULL OR m.graph_mode = ? OR m.graph_mode IS NULL) AND {self._SAME_WORKLOAD}
               ORDER BY m.id""",
            (device, space, rounds, rounds, graph_mode, graph_mode, *self._workload_params(_workload(workload))))
        return {(r[0], int(r[1])): r[2] for r in rows}

    @_guarded
    def run_table(self, measurement_id: int) -> pd.DataFrame:
        """Timed runs of one measurement with their flags (1 preempted, 2 outlier) and CPU waits."""
        return pd.read_sql_query("SELECT seq, latency_ms, flag, wait_ms FROM runs WHERE measurement_id = ? "
                                 "AND warmup = 0 ORDER BY seq", self.db, params=(measurement_id,))

    @_guarded
    def runs_of(self, ids: Iterable[int], used_only: bool = True) -> dict[int, list[float]]:
        """Timed runs of many measurements at once; ``used_only`` leaves out preempted runs."""
        ids = list(ids)
        out: dict[int, list[float]] = {i: [] for i in ids}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            q = (f"SELECT measurement_id, latency_ms, flag FROM runs WHERE warmup = 0 AND measurement_id IN "
                 f"({','.join('?' * len(part))}) ORDER BY measurement_id, seq")
            for mid, v, flag in self.db.execute(q, part):
                if not (used_only and flag & 1):
                    out[mid].append(v)
        for mid, xs in out.items():  # every run preempted: the estimate used them all, so do we
            if not xs:
                out[mid] = [r[0] for r in self.db.execute(
                    "SELECT latency_ms FROM runs WHERE warmup = 0 AND measurement_id = ?", (mid,))]
        return out

    @_guarded
    def suspect_visits(self, campaign_id: int) -> int:
        """Successful visits of the campaign marked suspect, when they ran or later (by a sentinel)."""
        return int(self.db.execute("SELECT COUNT(*) FROM measurements WHERE campaign_id = ? AND status = 'ok' "
                                   "AND suspect IS NOT NULL", (campaign_id,)).fetchone()[0])

    @_guarded
    def mark_suspect(self, ids: Iterable[int], reason: str) -> None:
        """Add ``reason`` to the suspect marks of these measurements (a sentinel left its band meanwhile)."""
        with self.transaction() as db:
            for mid in ids:
                db.execute("UPDATE measurements SET suspect = CASE WHEN suspect IS NULL THEN ? "
                           "ELSE suspect || '; ' || ? END WHERE id = ?", (reason, reason, mid))

    @_guarded
    def record_sentinel(self, campaign_id: int, device: str, arch: Arch, *, models_done: int, median_ms: float,
                        baseline_ms: float | None, in_band: bool, phase: str = "check", band: float | None = None) -> int:
        """``band``: the relative deviation the check was judged by (the profile's, or wider: twice its own CI)."""
        with self.transaction() as db:
            cur = db.execute("INSERT INTO sentinel_checks (campaign_id, device_id, arch_id, at, models_done, "
                             "median_ms, baseline_ms, in_band, phase, band) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (campaign_id, self.device_id(device), self.arch_id(arch), utcnow(), models_done,
                              median_ms, baseline_ms, int(in_band), phase, band))
            return int(cur.lastrowid)

    @_guarded
    def sentinel_series(self, device: str | None = None, space: str | None = None) -> pd.DataFrame:
        """Sentinel checks with the series their campaign measured as ``device`` (``dev@bs4`` for a batch-4
        campaign: its checks are of batch-4 models and drift; they were drawn and divided out as the default's)."""
        band = "s.band" if self.schema_version >= 9 else "NULL AS band"  # a read-only schema-8 store has none
        q = f"""SELECT s.id, s.campaign_id, d.name AS device, c.profile_json, a.key, s.at, s.models_done,
                      s.median_ms, s.baseline_ms, s.in_band, s.phase, {band}
               FROM sentinel_checks s JOIN devices d ON d.id = s.device_id JOIN architectures a ON a.id = s.arch_id
               LEFT JOIN campaigns c ON c.id = s.campaign_id
               WHERE (? IS NULL OR a.space = ?) ORDER BY s.id"""
        df = pd.read_sql_query(q, self.db, params=(space, space))
        df["device"] = [campaign_series(d, p) for d, p in zip(df.device, df.profile_json)]
        df = df.drop(columns=["profile_json"])
        return (df[df.device == device] if device is not None else df).reset_index(drop=True)

    @_guarded
    def record_event(self, campaign_id: int, kind: str, detail: dict | None = None) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO campaign_events (campaign_id, at, kind, detail_json) VALUES (?, ?, ?, ?)",
                       (campaign_id, utcnow(), kind, json.dumps(detail or {}, default=str)))

    @_guarded
    def events(self, campaign_id: int | None = None) -> pd.DataFrame:
        return pd.read_sql_query("SELECT id, campaign_id, at, kind, detail_json FROM campaign_events "
                                 "WHERE (? IS NULL OR campaign_id = ?) ORDER BY id", self.db,
                                 params=(campaign_id, campaign_id))

    @_guarded
    def energies(self, space: str, devices: list[str] | None = None) -> pd.DataFrame:
        """Long table (device, key, energy_mj, energy_method): per (device, workload, architecture) the latest
        successful measurement that has energy (policy.energy_visits: first meters only the first visit of each
        architecture, so the latest visit of a campaign usually has none)."""
        q = """SELECT d.name AS device, m.batch_size, m.input_shape, m.precision, a.key, m.energy_mj, m.energy_method
               FROM measurements m JOIN devices d ON d.id = m.device_id
               JOIN architectures a ON a.id = m.arch_id WHERE a.space = ? AND m.id = (
                 SELECT MAX(m2.id) FROM measurements m2 WHERE m2.device_id = m.device_id AND m2.arch_id = m.arch_id
                   AND m2.batch_size = m.batch_size AND m2.input_shape = m.input_shape
                   AND m2.precision = m.precision AND m2.status = 'ok' AND m2.energy_mj IS NOT NULL)"""
        df = pd.read_sql_query(q, self.db, params=(space,))
        df["device"] = [measured_name(*r) for r in zip(df.device, df.batch_size, df.input_shape, df.precision)]
        df = df.drop(columns=["batch_size", "input_shape", "precision"])
        if devices:
            df = df[df.device.isin(devices)]
        return df.reset_index(drop=True)

    @_guarded
    def arch_metrics(self, space: str, kind: str | None = None) -> pd.DataFrame:
        """Wide table: architecture key -> one column per accuracy / metadata metric."""
        q = """SELECT a.key, x.name, x.value FROM arch_metrics x JOIN architectures a ON a.id = x.arch_id
               WHERE a.space = ? AND (? IS NULL OR x.kind = ?)
                 AND (x.import_id IS NULL OR x.import_id IN (SELECT id FROM imports WHERE state = 'done'))"""
        long = pd.read_sql_query(q, self.db, params=(space, kind, kind))
        return long.pivot(index="key", columns="name", values="value") if not long.empty else pd.DataFrame()

    @_guarded
    def save_predictor(self, space: str, device: str, method: str, model: dict, provenance: dict,
                       metrics: dict | None = None) -> int:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO predictors (space, device, method, model_json, provenance_json, "
                             "metrics_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (space, device, method, json.dumps(model), json.dumps(provenance, default=str),
                              json.dumps(metrics or {}, default=float), utcnow()))
            return int(cur.lastrowid)

    @_guarded
    def latest_predictor(self, space: str, device: str) -> dict | None:
        row = self.db.execute("SELECT id, method, model_json, provenance_json, metrics_json, created_at "
                              "FROM predictors WHERE space = ? AND device = ? ORDER BY id DESC LIMIT 1",
                              (space, device)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "method": row[1], "model": json.loads(row[2]), "provenance": json.loads(row[3]),
                "metrics": json.loads(row[4]), "created_at": row[5]}

    @_guarded
    def imports(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT id, file, source, space, rows, devices_json, imported_at, sha256 "
                                 "FROM imports WHERE state = 'done' ORDER BY id", self.db)

    @_guarded
    def spaces(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT space FROM architectures ORDER BY space")]

    @_guarded
    def info(self) -> dict[str, Any]:
        count = lambda t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: E731
        return {"path": str(self.path), "schema_version": SCHEMA_VERSION,
                **{t: count(t) for t in ("devices", "architectures", "campaigns", "measurements", "runs")}}
