"""Options shared by every command, and the one place library errors become messages.

Kept light on purpose (typer and rich only): every command module imports its heavy dependencies inside
the command, so `harness --help` never loads pandas, scipy or matplotlib.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from harness.errors import HarnessError, NoPredictorError, ParameterError
from harness.paths import TABLE_SUFFIXES, WORKSPACE, nearest_existing

console = Console()
err = Console(stderr=True)

StoreOpt = Annotated[Path, typer.Option(
    "--store", envvar="HARNESS_STORE", help="Results store (SQLite file); measuring and importing create it, "
    "reading commands need it to exist.")]
DevicesDirOpt = Annotated[Path, typer.Option(
    "--devices-dir", envvar="HARNESS_DEVICES", help="Folder of your device profiles (*.yaml); they add to "
    "and override the built-ins.")]


def cache_folder(value: Path) -> Path:
    """The model cache is a folder: a file there (or on its path) failed mid-campaign as "Not a directory"."""
    try:
        found = nearest_existing(value)
    except OSError as e:  # a folder on the way this user may not search (EACCES): say so, no traceback
        raise typer.BadParameter(f"{value}: cannot look at it ({e.strerror or e})") from None
    if found is not None and not found.is_dir():
        raise typer.BadParameter(f"{value}: {found} is a file; the model cache is a folder")
    return value


CacheOpt = Annotated[Path, typer.Option(
    "--cache-dir", envvar="HARNESS_CACHE", callback=cache_folder, help="Exported-model cache (content-addressed).")]

def one_name(value: str | None) -> str | None:
    """An option that takes one device: a comma list there is a clear error, not "no measurements for 'a,b'"."""
    if value is not None and "," in value:
        raise typer.BadParameter(f"{value!r}: one device here, not a list")
    return value.strip() if value is not None else None


def names_list(values: list[str] | None) -> list[str] | None:
    """A repeatable name option that also takes comma-separated names (``-d a,b`` = ``-d a -d b``): device
    and proxy names never contain a comma, and `--target a,b` read as one unknown device was a dead end."""
    if values is None:
        return None
    names = list(dict.fromkeys(part.strip() for v in values for part in v.split(",") if part.strip()))  # once each
    if values and not names:  # `-d ,` or `-d ""`: typer would pass None, i.e. "all devices" or a crash
        raise typer.BadParameter(f"no name in {', '.join(map(repr, values))}; give one or more, comma-separated")
    return names


def table_path(value: Path | None) -> Path | None:
    """An --out table file, checked before any work (demo and transfer measured first, then refused `x.txt`)."""
    if value is None:
        return None
    if not str(value).lower().endswith(TABLE_SUFFIXES):
        raise typer.BadParameter(f"{value}: use a file name ending in .csv, .csv.gz or .parquet (the format)")
    if value.is_dir():
        raise typer.BadParameter(f"{value} is a folder; name a file in it (e.g. {value / 'table.csv'})")
    folder = nearest_existing(value.parent)
    if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        raise typer.BadParameter(f"{value}: {folder} is not a folder this user can write to (or a read-only file "
                                 "system); name another place")
    return value


def html_path(value: Path) -> Path:
    """An --out HTML file: `report --out r.pdf` wrote HTML into r.pdf without a word."""
    if not str(value).lower().endswith((".html", ".htm")):
        raise typer.BadParameter(f"{value}: the report is HTML; use a file name ending in .html")
    if value.is_dir():
        raise typer.BadParameter(f"{value} is a folder; name a file in it (e.g. {value / 'report.html'})")
    return value


def print_json(obj: Any) -> None:
    """Strict JSON on stdout: NaN and infinities become null (Python's json writes NaN, which JavaScript's
    and most other parsers reject), numpy scalars become numbers, anything else its text."""
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
            try:
                v = v.item()
            except (TypeError, ValueError):
                return str(v)
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        return str(v)

    print(json.dumps(clean(obj), indent=1, allow_nan=False))


DEFAULT_STORE = WORKSPACE.store
DEFAULT_DEVICES = WORKSPACE.devices
DEFAULT_CACHE = WORKSPACE.cache

F = TypeVar("F", bound=Callable)


def esc(value: object) -> str:
    """Anything user-supplied (names, paths, messages) printed as text, never as rich markup."""
    return escape(str(value))


# a cell that is a figure: a number with an optional unit, or a placeholder for none
_NUMBER = r"[-+]?\d[\d.,]*(?:e[-+]?\d+)?"
_FIGURE = re.compile(rf"^(?:[-–]|nan|{_NUMBER}(?:\s*[–-]\s*{_NUMBER})?\s*(?:%|ms|s|x|×)?)$")  # 0.95, 12 ms, 0.9–1.0


def table_width(table) -> int:
    """The columns a rich table needs to be drawn whole (to choose a layout that fits the terminal)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def print_table(table, to: Console | None = None) -> None:
    """Print a rich table without cutting a figure: in a narrow terminal rich shortens cells to "0.99…" or
    folds them over two lines, and a number cut is a number lost. Columns of figures keep their widest cell
    whole on one line; text columns fold onto more lines instead of ending in "…"."""
    from rich.text import Text

    for col in table.columns:
        cells = [c.plain if isinstance(c, Text) else Text.from_markup(c).plain if isinstance(c, str) else None
                 for c in getattr(col, "_cells", [])]  # rich keeps a column's cells there (no public accessor)
        cells = [c.strip() for c in cells if c is not None]
        if cells and all(_FIGURE.match(c) for c in cells if c):  # as wide as its widest figure; the header folds
            col.min_width = max(col.min_width or 0, *map(len, cells))
        if col.overflow == "ellipsis":
            col.overflow = "fold"
    (to or console).print(table, crop=False)  # a table that still cannot fit runs past the edge rather than lose it


@contextlib.contextmanager
def reachable(profile) -> Iterator:
    """The profile, pointed at a stand-in served for the command when it asks for one (ADB serial ``virtual``:
    a virtual phone on a free loopback port, storage in a temp folder). Drivers only ever dial addresses."""
    conn = profile.connection
    if conn.kind == "adb" and conn.serial == "virtual":
        from harness.sim.adb.server import serving

        with serving(profile) as served:
            yield served
    else:
        yield profile


# library parameter name -> this CLI's parameter name, where they differ
PARAM_ALIASES = {"proxies": "proxy", "what_if_proxies": "adapt_proxy", "pairs": "pair"}


def _flags(fn: Callable, param: str) -> list[str]:
    """The command-line flags of ``fn``'s parameter ``param`` (from its typer.Option), [] if it has none."""
    name = PARAM_ALIASES.get(param, param)
    if name not in inspect.signature(fn).parameters:
        return []
    try:
        hint = typing.get_type_hints(fn, include_extras=True).get(name)
    except (NameError, TypeError):  # an annotation naming what the module imports lazily (measure.run's return)
        return []
    for meta in getattr(hint, "__metadata__", ()):
        if isinstance(meta, typer.models.OptionInfo):
            # in Annotated form typer reads a leading "--flag" as the first declaration, stored as the default
            decls = [meta.default, *(meta.param_decls or ())]
            return [d for d in decls if isinstance(d, str) and d.startswith("-")] or ["--" + name.replace("_", "-")]
    return []


def flag_hint(e: HarnessError, fn: Callable) -> str:
    """What to type next: the flag behind a bad parameter, the command that makes a missing predictor."""
    if isinstance(e, ParameterError) and (flags := _flags(fn, e.param)):
        return f" (see {'/'.join(flags)})"
    if isinstance(e, NoPredictorError):
        if e.needs == "measurements":
            if "did you mean" in str(e):  # a typo: measuring the misspelt name is not the fix
                return ""
            return f"; pick them with `harness suggest`, then `harness measure --device {e.device} --arch-file ...`"
        return f"; run `harness train --device {e.device}` or `harness adapt --target {e.device} --proxy ...`"
    return ""


@contextlib.contextmanager
def working(description: str) -> Iterator[Callable[..., None]]:
    """A spinner with elapsed time on stderr for steps that may take more than ~2 s; it disappears when
    done. Yields ``step(text=None, done=None, total=None)``: a new description and, when known, a count."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not err.is_terminal:  # logs and pipes get no spinner (and no blank line where it was)
        yield lambda *args, **kwargs: None
        return
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=16),
                        TextColumn("{task.fields[count]}"), TimeElapsedColumn(), console=err, transient=True)
    with progress:
        task = progress.add_task(description, total=None, count="")

        def step(text: str | None = None, done: int | None = None, total: int | None = None) -> None:
            progress.update(task, description=text or description, completed=done or 0, total=total,
                            count=f"{done:,}/{total:,}" if total else "")

        yield step


_interrupt_said = False


def say_interrupted(message: str = "[yellow]interrupted[/]; nothing after this point was done.") -> None:
    """Tell the user Ctrl-C was honoured, once per command."""
    global _interrupt_said
    import signal
    import threading

    from harness import interrupts

    # exiting now: a second Ctrl-C (the terminal's and `timeout`'s reach the process twice) must not cut the
    # exit short; only where the command owns the process (the `harness` entry point installed the handler)
    if interrupts.installed() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _interrupt_said:
        _interrupt_said = True
        err.print(message, highlight=False)


def cli_errors(fn: F) -> F:
    """Turn the library's typed errors into a red message and exit code 2 (3: the device is busy; no traceback);
    Ctrl-C into exit 130;
    a reader that left into a quiet 141; and say what opening a store set aside."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError as e:
            from harness.devices.lease import DeviceBusy

            if isinstance(e, DeviceBusy):  # another command measures the device: 3, as `measure` says it
                err.print(f"[bold red]busy:[/] {esc(e)}", highlight=False)
                raise typer.Exit(3) from None
            err.print(f"[bold red]error:[/] {esc(e)}{esc(flag_hint(e, fn))}", highlight=False)
            raise typer.Exit(2) from None
        except BrokenPipeError:  # the reader left (`| head -1`), also from a plain print (--json)
            quiet_broken_pipe()
        except OSError as e:  # a file the user named cannot be read or written
            where = f"{e.filename}: " if e.filename else ""
            err.print(f"[bold red]error:[/] {esc(where)}{esc(e.strerror or e)}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:  # typer would exit 130 without a word; say so (campaigns say more)
            say_interrupted()
            raise typer.Exit(130) from None
        except Exception:
            if not after_ctrl_c():
                raise
            say_interrupted()
            raise typer.Exit(130) from None
        finally:
            _say_store_warnings()

    return wrapper  # type: ignore[return-value]


def _say_store_warnings() -> None:
    """What opening a store set aside (a pending measurement it could not add), said once per command."""
    import sys

    store = sys.modules.get("harness.results.store")  # never imported just for this: --help stays instant
    for w in store.take_warnings() if store else []:
        err.print(f"[yellow]warning:[/] {esc(w)}", highlight=False)


def quiet_broken_pipe() -> None:
    """The reader of our output went away (`harness srcc | head -1`): stop as a shell tool killed by SIGPIPE
    does, silently with status 141, whichever command it was and however it printed."""
    import sys

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout again at exit
    except (OSError, ValueError, AttributeError):  # not a real file (a test's captured output)
        pass
    sys.exit(141)


def after_ctrl_c() -> bool:
    """Has the user pressed Ctrl-C (counted by the `harness` entry point)? Then an unexpected error is its
    consequence, not a bug: Python re-raises a KeyboardInterrupt that lands in a class body being created
    (a command's lazy import) as ``RuntimeError: Error calling __set_name__``."""
    from harness import interrupts

    return interrupts.requested()
