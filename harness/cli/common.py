"""Options shared by every command, and the one place library errors become messages."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

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


def esc(value: object) -> str:
    """Anything user-supplied (names, paths, messages) printed as text, never as rich markup."""
    return escape(str(value))


def cli_errors(fn: F) -> F:
    """Turn the library's typed errors into a red message and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError as e:
            err.print(f"[bold red]error:[/] {esc(e)}", highlight=False)
            raise typer.Exit(2) from None
        except OSError as e:  # a file the user named cannot be read or written
            where = f"{e.filename}: " if e.filename else ""
            err.print(f"[bold red]error:[/] {esc(where)}{esc(e.strerror or e)}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
