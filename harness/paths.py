"""The workspace layout: where the CLI reads and writes when no flag or environment variable says otherwise.

Only the CLI resolves these; the library always takes explicit paths. Everything is relative to the
folder the command runs in (the top-level folders of a checkout hold exactly these things):

    devices/            your device profiles (*.yaml)                  --devices-dir / HARNESS_DEVICES
    models/cache/       exported models and graph features (git-ignored) --cache-dir  / HARNESS_CACHE
    models/engines/     TensorRT engines built by trtexec (git-ignored)  HARNESS_ENGINE_CACHE (or HARNESS_CACHE/engines)
    results/harness.db  the results store (git-ignored)                 --store       / HARNESS_STORE
    results/            tables written by `harness export` / `demo`
    .<store>.locks/     device leases of the campaigns writing to a store   HARNESS_LOCK_DIR (one folder for all)
    analysis/           HTML reports (`harness report`)
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")  # the formats tables are written in, told by the file name
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path = Path(".")

    @property
    def devices(self) -> Path:
        return self.root / "devices"

    @property
    def cache(self) -> Path:
        return self.root / "models" / "cache"

    @property
    def engines(self) -> Path:
        return self.root / "models" / "engines"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def store(self) -> Path:
        return self.results / "harness.db"

    @property
    def reports(self) -> Path:
        return self.root / "analysis"


WORKSPACE = Workspace()


def nearest_existing(path: Path) -> Path | None:
    """``path`` itself or its nearest ancestor that exists: what decides whether a file can be made there (a file
    where a folder of the path should be, a folder this user cannot write). May raise OSError (EACCES)."""
    return next((p for p in (path, *path.parents) if p.exists()), None)
