"""Options shared by every command, and the one place library errors become messages."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from harness.errors import HarnessError

console = Console()
err = Console(stderr=True)

StoreOpt = Annotated[Path, typer.Option(
    "--store", envvar="HARNESS_STORE", help="Results store (SQLite file); created if missing.")]
DevicesDirOpt = Annotated[Path, typer.Option(
    "--devices-dir", envvar="HARNESS_DEVICES", help="Folder of your device profiles (*.yaml); they add to "
    "and override the built-ins.")]
CacheOpt = Annotated[Path, typer.Option(
    "--cache-dir", envvar="HARNESS_CACHE", help="Exported-model cache (content-addressed).")]

DEFAULT_STORE = Path("results/harness.db")
DEFAULT_DEVICES = Path("devices")
DEFAULT_CACHE = Path(os.environ.get("HARNESS_CACHE", "models/cache"))

F = TypeVar("F", bound=Callable)


@contextmanager
def working(description: str) -> Iterator[Callable[..., None]]:
    """A spinner with elapsed time on stderr for steps that may take more than ~2 s; it disappears when
    done. Yields ``step(text=None, done=None, total=None)``: a new description and, when known, a count."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=16),
                        TextColumn("{task.fields[count]}"), TimeElapsedColumn(), console=err, transient=True)
    with progress:
        task = progress.add_task(description, total=None, count="")

        def step(text: str | None = None, done: int | None = None, total: int | None = None) -> None:
            progress.update(task, description=text or description, completed=done or 0, total=total,
                            count=f"{done:,}/{total:,}" if total else "")

        yield step


def cli_errors(fn: F) -> F:
    """Turn the library's typed errors into a red message and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
