"""The upload step every remote driver shares: copy a file to the device only when it changed.

Skip when ``remote`` already holds the same size and SHA-256; otherwise copy to ``remote.part`` and move it
into place, so that an interrupted copy never looks finished. The drivers supply the transport (SFTP for
SSH, the sync service for ADB) and map its errors to theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def upload_if_changed(local: Path, remote: str, *, local_sha256: Callable[[], str],
                      remote_size: Callable[[str], int | None], remote_sha256: Callable[[str], str | None],
                      copy: Callable[[Path, str], None], rename: Callable[[str, str], None]) -> bool:
    """True if ``local`` was copied; hashes only when the sizes already match."""
    if remote_size(remote) == local.stat().st_size and remote_sha256(remote) == local_sha256():
        return False
    part = f"{remote}.part"
    copy(local, part)
    rename(part, remote)
    return True
