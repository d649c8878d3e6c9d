"""Turn a user's choice (--sample / --all / --arch / --arch-file) into a list of architectures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.errors import SpaceError
from harness.models.spaces import Arch, SearchSpace


def read_arch_file(space: SearchSpace, path: str | Path) -> list[Arch]:
    """A CSV with any of the space's key columns (e.g. picks.csv), or a text file with one key per line."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"architecture file {path} does not exist")
    if path.suffix.lower() in (".csv", ".gz"):
        df = pd.read_csv(path, dtype=str)
        if not set(space.key_columns) & set(df.columns):
            raise SpaceError(f"{path} has none of the {space.name} key columns "
                             f"{', '.join(space.key_columns)} (columns: {', '.join(df.columns)})")
        archs = []
        for i, row in enumerate(df.to_dict("records")):
            try:
                archs.append(space.from_columns(row))
            except SpaceError as e:
                raise SpaceError(f"{path}, row {i + 2}: {e}") from None
        return list(dict.fromkeys(archs))
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return space.parse_many(lines)


def select(space: SearchSpace, *, sample: int | None = None, seed: int = 0, all_archs: bool = False,
           archs: list[str] | None = None, arch_file: str | Path | None = None) -> list[Arch]:
    chosen = [name for name, on in (("--sample", sample is not None), ("--all", all_archs),
                                    ("--arch", bool(archs)), ("--arch-file", arch_file is not None)) if on]
    if len(chosen) != 1:
        raise SpaceError("choose the architectures with exactly one of --sample N, --all, --arch, --arch-file"
                         + (f" (got {', '.join(chosen)})" if chosen else ""))
    if sample is not None:
        return space.sample(sample, seed)
    if all_archs:
        return list(space.all())
    if archs:
        tokens = [t for a in archs for t in (a.split(",") if "|" not in a else [a]) if t.strip()]
        return space.parse_many(tokens)
    return read_arch_file(space, arch_file)  # type: ignore[arg-type]
