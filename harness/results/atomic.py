"""Files users keep (exports, reports, pending measurements) are replaced whole or not at all.

Writing straight over an export destroyed the good file on a full disk or a kill and left a truncated one that
still parsed (a CSV cut mid-row reads as NaN), and a reader could see old and new rows mixed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it is flushed to disk and renamed over ``path``,
    on any error (disk full, Ctrl-C) removed, and ``path`` keeps what it had. The temporary name ends with
    ``path``'s name, so writers that read the format or compression from it (pandas: ``.csv.gz``) still do."""
    asked = Path(path)
    if asked.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder; name a file to write", str(asked))
    path = asked.resolve() if asked.is_symlink() else asked  # through a link, as a plain write would
    _remove_abandoned(path)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        if path.exists():  # a shared file keeps its mode (the temp file has the umask's)
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)  # the rename itself reaches the disk
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and (e.filename in (str(tmp), tmp) or e.filename is None):
            # the user named `path`, never the temp file; and a full disk's error names no file at all
            raise type(e)(e.errno, e.strerror or str(e), str(asked)) from None
        raise


ABANDONED_S = 3600.0  # a temporary file this old beside its target was left by a writer that was killed


# folder -> target name -> its abandoned temporary files, listed once per folder per process: `harness models
# --all` writes 15,625 files into one folder, and a listing per file would be quadratic
_abandoned: dict[Path, dict[str, list[Path]]] = {}


def _remove_abandoned(path: Path) -> None:
    """Temporary files of earlier writes of ``path`` that were killed (SIGTERM, kill -9) before they could clean
    up: an hour old, no writer is still at it."""
    folder = path.parent
    if folder not in _abandoned:
        _abandoned[folder] = {}
        now = time.time()
        for old in folder.glob(".tmp-????????-*") if folder.is_dir() else ():
            with contextlib.suppress(OSError):
                if now - old.stat().st_mtime > ABANDONED_S:
                    _abandoned[folder].setdefault(old.name[len(".tmp-12345678-"):], []).append(old)
    for old in _abandoned[folder].pop(path.name, []):
        with contextlib.suppress(OSError):
            old.unlink()


def _fsync(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:  # a folder some systems cannot open: the data itself is synced already
        return
    try:
        os.fsync(fd)
    except OSError:
        if not p.is_dir():
            raise
    finally:
        os.close(fd)
