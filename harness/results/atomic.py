"""Files users keep (exports, reports, pending measurements) are replaced whole or not at all.

Writing straight over an export destroyed the good file on a full disk or a kill and left a truncated one that
still parsed (a CSV cut mid-row reads as NaN), and a reader could see old and new rows mixed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it is flushed to disk and renamed over ``path``,
    on any error (disk full, Ctrl-C) removed, and ``path`` keeps what it had. The temporary name ends with
    ``path``'s name, so writers that read the format or compression from it (pandas: ``.csv.gz``) still do."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder; name a file to write", str(path))
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename in (str(tmp), tmp):  # the user named `path`, never the temp file
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise
