"""Turn a user's choice (--sample / --all / --arch / --arch-file) into a list of architectures."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError, SpaceError
from harness.models.spaces import Arch, SearchSpace


def read_arch_file(space: SearchSpace, path: str | Path) -> list[Arch]:
    """A CSV with any of the space's key columns (e.g. picks.csv), or a text file with one key per line."""
    path = Path(path)
    if path.is_dir():
        raise SpaceError(f"--arch-file {path} is a folder; name a .csv with the space's key columns, or a text file "
                         "with one architecture per line")
    if not path.is_file():
        raise SpaceError(f"architecture file {path} does not exist")
    if path.name.lower().endswith((".csv", ".csv.gz", ".parquet")):
        # read and checked as import reads a table: UTF-8, a damaged .gz, ragged rows, key columns that disagree
        from harness.results.importer import _archs, read_table

        try:
            df = read_table(path)
            if not set(space.key_columns) & set(df.columns):
                raise SpaceError(f"{path} has none of the {space.name} key columns "
                                 f"{', '.join(space.key_columns)} (columns: {', '.join(map(str, df.columns))})")
            archs = _archs(df, space.name, path, unique=False)
        except HarnessError as e:
            raise SpaceError(f"--arch-file {e}") from None
        if not archs:
            raise SpaceError(f"--arch-file {path} has a header but no rows")
        return list(dict.fromkeys(archs))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpaceError(f"--arch-file {path}: not UTF-8 text (byte {e.start}); one architecture key per line, or "
                         "a .csv with the space's key columns") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise SpaceError(f"--arch-file {path} names no architecture (one key or index per line; # comments)")
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
        # an OFA arch dict in JSON has commas of its own, as FBNet's |-joined blocks may: neither is a list
        tokens = [t for a in archs for t in (a.split(",") if "|" not in a and not a.lstrip().startswith("{") else [a])
                  if t.strip()]
        if not tokens:
            raise SpaceError(f"--arch names no architecture (got {', '.join(map(repr, archs))}); give indices or "
                             "keys, e.g. --arch 0,1,9930")
        try:
            return space.parse_many(tokens)
        except SpaceError as e:
            raise SpaceError(f"{e}{_other_space_hint(space, tokens)}") from None
    return read_arch_file(space, arch_file)  # type: ignore[arg-type]


def _other_space_hint(space: SearchSpace, tokens: list[str]) -> str:
    """'; they are fbnet keys: add --space fbnet' when every key parses in another space (a forgotten --space
    said only "not a NAS-Bench-201 arch_str")."""
    from harness.models.spaces import SPACES, get_space

    for name in SPACES:
        if name == space.name:
            continue
        try:
            get_space(name).parse_many(tokens)
        except (SpaceError, ValueError, KeyError):
            continue
        return f"; they are {name} keys: add --space {name}"
    return ""
