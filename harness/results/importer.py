"""Import public latency tables (the tidy format of ``../shared/data``) into the store.

Every ``*_ms`` column becomes an imported device named after the column without ``_ms``; ``acc_*``
columns become accuracy metrics of the architecture; other numeric columns are kept as metadata.
The whole file is validated before anything is written, and written in one transaction: a bad file
changes nothing. Re-importing identical values is a no-op; the same device+architecture arriving with a
different value is an error naming both sources.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import sqlite3
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.devices.profile import is_valid_name
from harness.errors import HarnessError, SpaceError, StoreError
from harness.models.spaces import SPACES, Arch, SearchSpace, get_space
from harness.results.store import Store, _pid_alive, describe_sqlite_error, is_workload_label, utcnow


def key_signatures() -> list[tuple[frozenset[str], str]]:
    """(key columns, space) for every registered space, from its ``key_columns``: each column alone, or all
    together for a ``composite_key`` space. The first signature fully present in a file wins."""
    out: list[tuple[frozenset[str], str]] = []
    for name, cls in SPACES.items():
        if cls.detect_from_columns:
            sigs = [frozenset(cls.key_columns)] if cls.composite_key else [frozenset({c}) for c in cls.key_columns]
            out += [(sig, name) for sig in sigs]
    return out

CHUNK_ROWS = 50_000  # rows per write transaction: a few tens of milliseconds of lock at most
REL_TOL = 1e-6  # values written with 8 significant digits compare equal within this


class ImportFileError(HarnessError):
    """A file that cannot be imported; nothing of it was written."""


@dataclass
class ImportReport:
    file: str
    source: str
    space: str
    rows: int
    devices: dict[str, int] = field(default_factory=dict)  # device -> values in the file
    new_values: int = 0
    already_present: int = 0
    metrics: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # skipped columns: reported, not fatal
    skipped_file: bool = False  # the identical file was imported before


def _rows(idx: pd.Index, limit: int = 5) -> str:
    """File line numbers (header is line 1) of the offending rows."""
    lines = [str(int(i) + 2) for i in idx[:limit]]
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return ", ".join(lines) + more


def read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            df = pd.read_parquet(path)
            header = [str(c) for c in df.columns]
        elif name.endswith((".csv", ".csv.gz")):
            # index_col=False: pandas would make surplus leading fields of a row the index and shift every value
            # one column right (arch 0 = 1 ms stored as arch 5 = 7 ms); a ragged row is an error instead
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                try:
                    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], index_col=False)
                except (pd.errors.ParserWarning, pd.errors.ParserError) as e:
                    if isinstance(e, pd.errors.ParserError) and "fields in line" not in str(e):
                        raise
                    raise ImportFileError(_ragged(path)) from None
            # pandas renames a repeated header (x_ms, x_ms.1): read the header as written to see repeats
            header = [str(c) for c in pd.read_csv(path, header=None, nrows=1, dtype=str,
                                                  keep_default_na=False).iloc[0]]
        else:
            raise ImportFileError(f"{path}: unknown format; use .csv, .csv.gz or .parquet")
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ImportFileError(f"{path}: the compressed file is truncated or damaged ({e}); fetch it again") from None
    except UnicodeDecodeError:  # pandas reads in chunks: its offset is not the file's, so none is given
        raise ImportFileError(f"{path}: not UTF-8 text; save it as UTF-8 CSV") from None
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        hint = " (the compressed file may be truncated or damaged)" if name.endswith(".gz") else ""
        raise ImportFileError(f"{path}: cannot read{hint}: {e}") from None
    seen: set[str] = set()
    repeated = sorted({c for c in header if c in seen or seen.add(c)})  # type: ignore[func-returns-value]
    if repeated:
        raise ImportFileError(f"{path}: column(s) {', '.join(repr(c) for c in repeated)} appear more than once "
                              "in the header; each column must have its own name")
    return df


def _ragged(path: Path) -> str:
    """Which lines have more fields than the header (the message for a ragged CSV)."""
    import csv

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:  # type: ignore[operator]
        rows = csv.reader(f)
        first = next(rows, [])
        width = len(first)
        if width == 1 and ";" in first[0]:  # a European spreadsheet: ; between columns, , in the numbers
            return (f"{path}: the header separates columns with ;, not commas (and the numbers' commas read as "
                    "more columns): save it as comma-separated CSV with . as the decimal point")
        bad = [(i, len(r)) for i, r in enumerate(rows, start=2) if len(r) > width]
    shown = ", ".join(f"{i} ({n})" for i, n in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return (f"{path}: rows with more fields than the header's {width}, on lines {shown or '?'}; every row needs "
            "exactly one value per column (a stray comma, or a column without a header?)")


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets run as a formula (CSV injection)


def is_table_device_name(name: str) -> bool:
    """A profile-style name, or ``name@label`` with a workload label as `harness export` names non-default
    workloads (``gpu@bs32.fp16``): an exported table imports again."""
    base, at, label = name.partition("@")
    return is_valid_name(base) and (not at or is_workload_label(label))


def check_column_names(columns: list[str], path: Path) -> None:
    """Device names come from headers, so they follow the profile name rule; no header may look like a
    spreadsheet formula (it would reach exported CSV headers)."""
    for col in columns:
        # export's companions of a workload column (dev@bs4_ci_low_ms) are no device names, and are set aside later
        if col.endswith("_ms") and not is_table_device_name(col[:-3]) and \
                not _beside_latency(col, columns, COMPANION_SUFFIXES):
            raise ImportFileError(f"{path}: column {col!r}: {col[:-3]!r} is not a valid device name (letters, "
                                  "digits, '.', '_' and '-', starting with a letter or digit, optionally with a "
                                  "workload as `harness export` writes it: name@bs8, name@bs32.fp16); rename the column")
        if col.startswith(FORMULA_START):
            raise ImportFileError(f"{path}: column {col!r} starts with {col[0]!r}, which spreadsheets run as a "
                                  "formula; rename the column")


def detect_space(columns: list[str], path: Path) -> str:
    cols = set(columns)
    for attempt in range(2):
        signatures = key_signatures()
        for signature, space in signatures:
            if signature <= cols:
                return space
        if attempt == 0:  # a space a plug-in adds: plug-ins load when a name is not known, as for every registry
            from harness.plugins import load_plugins

            load_plugins()
    wanted = "; ".join(", ".join(sorted(s)) + f" ({sp})" for s, sp in signatures)
    raise ImportFileError(f"{path}: no recognisable architecture key column. Expected one of: {wanted}. "
                       f"Columns: {', '.join(columns)}. Use --space if the key columns have these names; a space "
                       "of your own is registered by a plug-in (HARNESS_PLUGINS=path/to/it.py).")


# new latencies of a device whose median is this many times off its values already imported: a unit mistake
# (a subset of one space spans ~10x between its fastest and slowest architectures; s vs ms is 1000x)
SCALE_JUMP = 100.0
SECONDS_SUSPECT_MS = 0.05  # a device's median below this (50 us) is a table in seconds, not in ms
MAX_LATENCY_MS = 86_400_000.0  # one inference taking over a day is a unit or parsing mistake, not a latency


# what harness export writes beside a <device>_ms column: the measured model's identity (skipped silently) and
# figures about its latencies (skipped with a note: an interval or a drift-corrected series is no device, energy
# per inference no architecture's metric)
IDENTITY_SUFFIXES = ("_graph", "_exporter", "_degenerate", "_suspect", "_visits")
COMPANION_SUFFIXES = ("_ci_low_ms", "_ci_high_ms", "_drift_corrected_ms", "_mj")


def _beside_latency(col: str, columns, suffixes: tuple[str, ...]) -> bool:
    """Is ``col`` ``<device><suffix>`` for one of ``suffixes`` with a ``<device>_ms`` column in ``columns``?"""
    return any(col.endswith(sfx) and f"{col[:-len(sfx)]}_ms" in columns for sfx in suffixes)


def _numeric(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.any():
        examples = ", ".join(repr(v) for v in raw[bad].head(3))
        missing = raw[bad].astype(str).str.strip().str.lower().isin(["nan", "na", "n/a", "none", "null", "-", "?"])
        hint = "; leave a missing value empty (NaN, NA, - and the like are text here)" if missing.any() else ""
        raise ImportFileError(f"{path}: column {col}: non-numeric values ({examples}) on lines "
                              f"{_rows(df.index[bad])}{hint}")
    return values.astype(float)


def _composite_archs(df: pd.DataFrame, space: SearchSpace) -> tuple[list[Arch], list[str]]:
    """Rows of a space whose key columns only together name an architecture (ofa_mbv3: ks, e, d,
    resolution): each row goes whole to ``space.from_columns``."""
    missing = [c for c in space.key_columns if c not in df.columns]
    if missing:
        return [], [f"missing key column(s) {', '.join(missing)}; space {space.name} needs all of "
                    f"{', '.join(space.key_columns)}"]
    archs: list[Arch] = []
    problems: list[str] = []
    for i, row in enumerate(df[list(space.key_columns)].to_dict("records")):
        try:
            archs.append(space.from_columns({k: (None if isinstance(v, float) and np.isnan(v) else v)
                                             for k, v in row.items()}))
        except SpaceError as e:
            problems.append(f"line {i + 2}: {e}")
            if len(problems) >= 5:
                break
    return archs, problems


def _archs(df: pd.DataFrame, space_name: str, path: Path, unique: bool = True) -> list[Arch]:
    """Each row's architecture, from every key column present (they must agree); ``unique``: a repeated one is an
    error (a table holds one value per architecture; an architecture list, --arch-file, may repeat)."""
    space = get_space(space_name)
    if space.composite_key:
        archs, problems = _composite_archs(df, space)
        if problems:
            raise ImportFileError(f"{path}: bad architecture keys:\n  " + "\n  ".join(problems))
        return _no_duplicates(archs, df, path, " (rows that differ only in inactive blocks' ks/e are the "
                                               "same network)") if unique else archs
    keys = [c for c in (*space.key_columns, *space.alias_columns) if c in df.columns]
    archs: list[Arch] = []
    problems: list[str] = []
    for i, row in enumerate(df[keys].itertuples(index=False)):
        parsed = None
        for col, value in zip(keys, row):
            if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "":
                continue
            try:
                a = space.parse(str(value))
            except SpaceError as e:
                problems.append(f"line {i + 2}: {col}: {e}")
                break
            if parsed is not None and a != parsed:
                problems.append(f"line {i + 2}: {col} {value!r} is not the same architecture as "
                                f"{parsed.columns} from the other key column")
                break
            parsed = a
        else:
            if parsed is None:
                problems.append(f"line {i + 2}: all key columns ({', '.join(keys)}) are empty")
            else:
                archs.append(parsed)
        if len(problems) >= 5:
            break
    if problems:
        raise ImportFileError(f"{path}: bad architecture keys:\n  " + "\n  ".join(problems))
    return _no_duplicates(archs, df, path) if unique else archs


def _no_duplicates(archs: list[Arch], df: pd.DataFrame, path: Path, note: str = "") -> list[Arch]:
    dup = pd.Series([a.key for a in archs]).duplicated(keep=False)
    if dup.any():
        raise ImportFileError(f"{path}: duplicate architectures on lines {_rows(df.index[dup.values])}; "
                           f"each architecture may appear once{note}")
    return archs


def import_table(store: Store, path: str | Path, source: str | None = None,
                 space: str | None = None, allow_zero: bool = False, prefix: str = "") -> ImportReport:
    """Import one table (see :func:`_import_table`); a damaged store file is a typed error saying how to salvage
    it, as every other command's, not a sqlite3 traceback."""
    try:
        return _import_table(store, path, source, space, allow_zero, prefix)
    except sqlite3.DatabaseError as e:
        raise describe_sqlite_error(e, store.path) from e


def _import_table(store: Store, path: str | Path, source: str | None, space: str | None, allow_zero: bool,
                  prefix: str) -> ImportReport:
    """``prefix`` goes before every device name (``vm-`` makes ``local-onnx_ms`` the device ``vm-local-onnx``): a
    copy of a device this store also measures, or two tables that use one name for different devices."""
    path = Path(path)
    if prefix and not is_valid_name(prefix):
        raise ImportFileError(f"--prefix {prefix!r}: use letters, digits, '.', '_' and '-', starting with a letter or "
                              "digit (e.g. --prefix vm-)")
    if path.is_dir():
        raise ImportFileError(f"{path} is a folder; name the table files in it (e.g. {path}/*.csv.gz)")
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    df = read_table(path)
    if df.empty:
        raise ImportFileError(f"{path}: the table has no rows")
    if len(df.columns) == 1 and any(sep in str(df.columns[0]) for sep in (";", "\t")):
        sep = ";" if ";" in str(df.columns[0]) else "tab"
        raise ImportFileError(f"{path}: one column named {str(df.columns[0])[:60]!r}: the file separates columns with "
                              f"{sep}, not commas; save it as comma-separated CSV")
    check_column_names([str(c) for c in df.columns], path)
    space_name = space or detect_space(list(df.columns), path)
    if space_name not in SPACES:
        from harness.plugins import load_plugins

        load_plugins()
    if space and space_name not in SPACES:
        get_space(space)  # --space mistyped: the unknown-space error with its did-you-mean, as every command says
    if space_name not in SPACES:
        raise ImportFileError(f"{path}: looks like the {space_name} space, which this harness version does not "
                           f"have yet (available: {', '.join(SPACES)})")
    wanted = get_space(space_name).key_columns
    if space and not set(wanted) & set(df.columns):
        raise ImportFileError(f"{path}: --space {space} needs its key column(s) {', '.join(wanted)}, which the file "
                              f"lacks (its columns: {', '.join(map(str, df.columns[:8]))}"
                              f"{' ...' if len(df.columns) > 8 else ''}); leave out --space to detect it")
    source = source or path.name
    report = ImportReport(str(path), source, space_name, len(df))
    archs = _archs(df, space_name, path)

    key_cols = set(get_space(space_name).key_columns) | set(get_space(space_name).alias_columns)
    companions = [c for c in df.columns if _beside_latency(str(c), df.columns, COMPANION_SUFFIXES)]
    if companions:
        report.warnings.append(f"{path}: {', '.join(map(str, companions))} describe(s) the latency column beside "
                               "it (harness export's --ci, --drift-correct, energy): not imported as devices or "
                               "metrics (rename a column to import it as its own device)")
    latency_cols = [c for c in df.columns if c.endswith("_ms") and c not in companions]
    # `dev_MS`, `dev_ms ` (a trailing space): latencies by intent, metadata (or "no latency columns") by the rule
    near = [str(c) for c in df.columns if c not in latency_cols and c not in companions
            and str(c).strip().lower().endswith("_ms")]
    near_note = (f"column(s) {', '.join(repr(c) for c in near)} look like latencies, but a latency column's name ends "
                 "in exactly '_ms' (lower case, no space after it); rename to import as a device") if near else ""
    latencies: dict[str, pd.Series] = {}
    for col in latency_cols:
        values = _numeric(df, col, path)
        if values.isna().all():
            report.warnings.append(f"{path}: column {col} is empty in every row; skipped")
            continue
        inf = np.isinf(values)
        if inf.any():
            examples = ", ".join(repr(v) for v in df[col][inf].head(3))
            raise ImportFileError(f"{path}: column {col}: infinite or out-of-range latencies ({examples}) on lines "
                                  f"{_rows(df.index[inf])}; leave a missing value empty")
        neg = values < 0
        if neg.any():
            raise ImportFileError(f"{path}: column {col}: negative latencies on lines {_rows(df.index[neg])}")
        huge = values > MAX_LATENCY_MS
        if huge.any():
            examples = ", ".join(f"{v:g}" for v in values[huge].head(3))
            raise ImportFileError(f"{path}: column {col}: latencies over {MAX_LATENCY_MS:g} ms (a day per inference: "
                                  f"{examples}) on lines {_rows(df.index[huge])}; columns ending in _ms are "
                                  "milliseconds (seconds or microseconds? convert them first)")
        zero = values == 0
        flag = f"{col[:-3]}_degenerate"  # harness export: 1 where the measured model's output ignores its input
        if flag in df.columns:  # such a model can run below a tool's 1 us resolution: its 0 is a measurement
            zero &= pd.to_numeric(df[flag], errors="coerce").fillna(0) != 1
        if zero.any() and not allow_zero:
            raise ImportFileError(f"{path}: column {col}: zero latencies on lines {_rows(df.index[zero])}; 0 ms is a "
                                  "failed or missing measurement: leave the cell empty, or pass --allow-zero to "
                                  "import them as 0")
        med = float(values[values > 0].median()) if (values > 0).any() else 0.0
        if 0 < med < SECONDS_SUSPECT_MS:  # a table in seconds reads as microsecond models: said, not refused
            report.warnings.append(f"{path}: column {col} has a median of {med:g} ms, which no whole network "
                                   "runs in: seconds in an _ms column? Latencies are milliseconds: ranks and SRCC "
                                   "do not notice, but `search --max-ms`, the Pareto regrets and predicted ms would "
                                   "be off 1000x")
        latencies[prefix + col[:-3]] = values
    metrics: dict[str, tuple[str, pd.Series]] = {}
    for col in df.columns:
        if col in key_cols or col.endswith("_ms") or col in companions:
            continue
        if _beside_latency(str(col), df.columns, IDENTITY_SUFFIXES):
            continue  # the identity of a measured model beside its latency (harness export), not a metric
        values = pd.to_numeric(df[col], errors="coerce")
        if values.notna().sum() == 0 or (values.isna() & df[col].notna()).any():
            report.warnings.append(f"{path}: column {col} is not numeric; not imported")
            continue
        inf = np.isinf(values.astype(float))
        if inf.any():
            raise ImportFileError(f"{path}: column {col}: infinite or out-of-range values on lines "
                                  f"{_rows(df.index[inf])}; leave a missing value empty")
        metrics[col] = ("accuracy" if col.startswith("acc_") else "metadata", values.astype(float))
        if col.startswith("acc_") and ((values < 0) | (values > 100)).any():  # 150 and 0.7 both went in unsaid
            report.warnings.append(f"{path}: column {col} has values outside 0-100 (min {values.min():g}, max "
                                   f"{values.max():g}); an accuracy is read as a percentage")
        elif col.startswith("acc_") and values.max() <= 1.0:
            report.warnings.append(f"{path}: column {col} is at most {values.max():g}: a fraction? harness reads "
                                   "accuracies as percentages (the public tables' 0-100); search and pareto rank "
                                   "the same either way, but keep one scale per column")
    report.metrics = list(metrics)
    if not latencies and not any(kind == "accuracy" for kind, _ in metrics.values()):
        what = "every _ms column is empty" if latency_cols else "no latency (_ms) or accuracy (acc_) columns"
        raise ImportFileError(f"{path}: {what}; nothing to import" + (f" ({near_note})" if near_note else ""))
    if near_note:
        report.warnings.append(f"{path}: {near_note}")

    db = store.db
    prev = db.execute("SELECT id FROM imports WHERE sha256 = ? AND space = ? AND state = 'done' AND devices_json = ?",
                      (digest, space_name, json.dumps(list(latencies)))).fetchone()
    if prev:
        report.skipped_file = True
        report.devices = {d: int(v.notna().sum()) for d, v in latencies.items()}
        report.already_present = sum(report.devices.values())
        return report
    _forget_abandoned(store)
    # Checks first, with reads only (WAL readers block nobody); then chunked writes of at most CHUNK_ROWS
    # rows per transaction, so a campaign writing beside a large import waits milliseconds, not minutes.
    # The rows count only once the import is marked done; a failure or Ctrl-C removes them again.
    with store.transaction() as tx:
        tx.executemany("INSERT OR IGNORE INTO architectures (space, key, columns_json) VALUES (?, ?, ?)",
                       [(a.space, a.key, json.dumps(a.columns, sort_keys=True)) for a in archs])
        cur = tx.execute("INSERT INTO imports (file, source, sha256, space, rows, devices_json, imported_at, state, "
                         "host, pid) VALUES (?, ?, ?, ?, ?, ?, ?, 'writing', ?, ?)",
                         (str(path.resolve()), source, digest, space_name, len(df),
                          json.dumps(list(latencies)), utcnow(), socket.gethostname(), os.getpid()))
        import_id = int(cur.lastrowid)
    try:
        ids = dict(db.execute("SELECT key, id FROM architectures WHERE space = ?", (space_name,)).fetchall())
        arch_ids = np.array([ids[a.key] for a in archs])
        pending: list[tuple[str, list[tuple]]] = []
        for device, values in latencies.items():
            dev_id = store.device_id(device, "imported")
            mask = values.notna().to_numpy()
            rows, same = _new_rows(db, "imported_latencies", "device_id", dev_id, "latency_ms",
                                   arch_ids[mask], values.to_numpy()[mask], import_id, device, path, source,
                                   scale_check=True)
            pending.append(("imported_latencies", rows))
            report.devices[device] = int(mask.sum())
            report.new_values += len(rows)
            report.already_present += same
        for name, (kind, values) in metrics.items():
            mask = values.notna().to_numpy()
            rows, _ = _new_rows(db, "arch_metrics", "name", name, "value", arch_ids[mask], values.to_numpy()[mask],
                                import_id, name, path, source)
            pending.append(("arch_metrics", [(*r, kind) for r in rows]))
        for table, rows in pending:
            for i in range(0, len(rows), CHUNK_ROWS):
                _write_chunk(store, table, rows[i:i + CHUNK_ROWS])
        with store.transaction() as tx:
            tx.execute("UPDATE imports SET state = 'done' WHERE id = ?", (import_id,))
    except BaseException:
        _remove_import(store, import_id)
        raise
    return report


_INSERT = {
    "imported_latencies": "INSERT INTO imported_latencies (device_id, arch_id, latency_ms, import_id) VALUES (?, ?, ?, ?)",
    "arch_metrics": "INSERT INTO arch_metrics (name, arch_id, value, import_id, kind) VALUES (?, ?, ?, ?, ?)",
}


def _write_chunk(store: Store, table: str, rows: list[tuple]) -> None:
    try:
        with store.transaction() as tx:
            tx.executemany(_INSERT[table], rows)
    except StoreError as e:
        if isinstance(e.__cause__, sqlite3.IntegrityError):  # another import wrote the same cells meanwhile
            raise ImportFileError(f"another import wrote some of the same values while this one ran ({e}); "
                                  "nothing was imported; run the import again") from None
        raise


def _remove_import(store: Store, import_id: int) -> None:
    """Take back every row of an unfinished import, chunk by chunk (Ctrl-C here is finished first)."""
    for table in ("imported_latencies", "arch_metrics"):
        while True:
            with store.transaction() as tx:
                n = tx.execute(f"DELETE FROM {table} WHERE (arch_id, {_OWNER[table]}) IN (SELECT arch_id, "
                               f"{_OWNER[table]} FROM {table} WHERE import_id = ? LIMIT {CHUNK_ROWS})",
                               (import_id,)).rowcount
            if n < CHUNK_ROWS:
                break
    with store.transaction() as tx:
        tx.execute("DELETE FROM imports WHERE id = ?", (import_id,))
        tx.execute("DELETE FROM devices WHERE origin = 'imported' AND id NOT IN "
                   "(SELECT DISTINCT device_id FROM imported_latencies)")


_OWNER = {"imported_latencies": "device_id", "arch_metrics": "name"}


def _forget_abandoned(store: Store) -> None:
    """Rows of an import whose process died on this host (SIGKILL, power) never count; remove them."""
    rows = store.db.execute("SELECT id, host, pid FROM imports WHERE state = 'writing'").fetchall()
    for import_id, host, pid in rows:
        if host == socket.gethostname() and pid is not None and not _pid_alive(pid):
            _remove_import(store, import_id)


def _new_rows(db, table: str, owner_col: str, owner, value_col: str, arch_ids: np.ndarray, values: np.ndarray,
              import_id: int, label: str, path: Path, source: str, scale_check: bool = False) -> tuple[list[tuple], int]:
    """Rows to insert for (owner, arch): equal existing values are kept; different ones abort the import, and
    so (``scale_check``) do new values whose median is ``SCALE_JUMP`` times off the ones already there."""
    existing = dict(db.execute(f"SELECT arch_id, {value_col} FROM {table} WHERE {owner_col} = ? AND import_id IN "
                               "(SELECT id FROM imports WHERE state = 'done')", (owner,)))
    old = np.array([existing.get(int(a), np.nan) for a in arch_ids], dtype=float)
    present = ~np.isnan(old)
    clash = present & ~np.isclose(old, values, rtol=REL_TOL, atol=0.0)
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        key = db.execute("SELECT key FROM architectures WHERE id = ?", (int(arch_ids[i]),)).fetchone()[0]
        prev = db.execute(f"SELECT i.source, i.file FROM {table} t JOIN imports i ON i.id = t.import_id "
                          f"WHERE t.{owner_col} = ? AND t.arch_id = ?", (owner, int(arch_ids[i]))).fetchone()
        raise ImportFileError(
            f"{path}: {label} for {key}: {values[i]:g} conflicts with {old[i]:g} already imported from "
            f"{prev[0]} ({prev[1]}); {int(clash.sum())} value(s) differ. Nothing was imported from {source}.")
    if scale_check and existing and (~present).any():
        before, now = float(np.median(list(existing.values()))), float(np.median(values[~present]))
        ratio = max(before, now) / max(min(before, now), 1e-12)
        if ratio >= SCALE_JUMP:  # seconds beside ms merged silently into one device, 1000x apart
            raise ImportFileError(
                f"{path}: {label}: the new values' median {now:g} ms is {ratio:,.0f}x "
                f"{'above' if now > before else 'below'} the {before:g} ms of the {len(existing)} value(s) already "
                f"imported for it; a unit mistake (seconds or microseconds in an _ms column)? Convert the column to "
                f"ms, or import it under another device name (--prefix). Nothing was imported from {source}.")
    rows = [(owner, int(a), float(v), import_id) for a, v in zip(arch_ids[~present], values[~present])]
    return rows, int(present.sum())
