"""Ctrl-C that always ends with the campaign recorded as interrupted, however it arrives.

Why SIGINT went missing or left a campaign ``running``:

* A terminal's Ctrl-C (and ``timeout -s INT``) signals the whole foreground process group: harness
  *and* its runner worker, and ``timeout`` sends it twice (to the child, then to the group). A worker
  hit while still starting died, its model was recorded as a device error, and the campaign went on.
* Python raises KeyboardInterrupt at whatever bytecode runs next: inside a ``__del__``, a weakref
  callback or a library's bare ``except:`` during the seconds of start-up imports it is swallowed
  ("Exception ignored in ..."), and the campaign runs on for minutes.
* A second SIGINT landing in the clean-up (waiting for the worker, writing the campaign's end)
  aborted it half-way, so the campaign stayed ``running`` until the next one relabelled it.

So the CLI installs :func:`install`: every SIGINT is *counted* as well as raised, and the campaign
calls :func:`check` at each model boundary, so one that something swallowed still stops it within a
model. During start-up and inside :func:`shielded` a SIGINT is only counted and raised afterwards,
so writing the campaign's end is never cut in half. Workers run in their own process group; harness
stops them itself. Library users who never call :func:`install` keep Python's default behaviour.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_count = 0        # SIGINTs seen since install() (or reset())
_deferring = 0    # > 0: start-up or a shielded block; SIGINT is counted, raised later
_pending = False  # a SIGINT arrived while deferring
_installed = False
_starting = False  # install(starting=True) is deferring until started()


def _on_sigint(signum, frame) -> None:  # noqa: ARG001 (signal handler signature)
    global _count, _pending
    if _installed:  # only the CLI's handler remembers: a library user's later campaigns must not stop
        _count += 1
    if _deferring:
        _pending = True
        return
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install(*, starting: bool = False) -> None:
    """Take over SIGINT, and SIGTERM like it (main thread only). ``starting=True``: only count them until
    :func:`started`. SIGTERM (what `timeout`, `kill` and systemd send) ended harness at once: the campaign was
    left ``abandoned`` as by kill -9, without a word; now it stops as Ctrl-C stops it."""
    global _installed, _deferring, _starting
    if not _main_thread():
        return
    signal.signal(signal.SIGINT, _on_sigint)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):  # never override a handler someone chose
        signal.signal(signal.SIGTERM, _on_sigint)
    if starting and not _starting:
        _deferring += 1
        _starting = True
    _installed = True


def reclaim_sigterm() -> None:
    """Take SIGTERM back after a library claimed it (``ray.init`` sets ``sys.exit`` on it, which ended a farm as
    "failed" with exit 15 mid-write instead of stopping it as Ctrl-C does). Only once harness has installed."""
    if _installed and _main_thread() and signal.getsignal(signal.SIGTERM) is not _on_sigint:
        signal.signal(signal.SIGTERM, _on_sigint)


def started() -> bool:
    """End the start-up deferral; True if Ctrl-C was pressed while starting (the caller should stop)."""
    global _deferring, _pending, _starting
    if not _installed:
        install()
    if not _starting:
        return False
    _starting = False
    _deferring -= 1
    was, _pending = _pending, False
    return was


def requested() -> bool:
    """Has the user pressed Ctrl-C since :func:`install`?"""
    return _count > 0


def check() -> None:
    """Raise KeyboardInterrupt if the user pressed Ctrl-C, even if something swallowed the first one."""
    if _count > 0:
        raise KeyboardInterrupt


def installed() -> bool:
    """Has this process handed SIGINT to :func:`install` (the `harness` entry point does)?"""
    return _installed


def reset() -> None:
    """Forget counted interrupts (tests; a long-lived process that handled one)."""
    global _count, _pending
    _count, _pending = 0, False


def uninstall() -> None:
    """Give SIGINT back to Python's default handler and forget everything (tests)."""
    global _installed, _starting, _deferring
    if _main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if signal.getsignal(signal.SIGTERM) is _on_sigint:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _installed = _starting = False
    _deferring = 0
    reset()


def forget_handled_in_string_code() -> None:
    """Let a handled Ctrl-C end ``python -m harness`` with the exit code harness chose (130).

    CPython marks a KeyboardInterrupt as "unhandled" whenever it ends code run from a *string*
    (``exec``/``eval`` of source: dataclasses and namedtuples build their methods that way, so a Ctrl-C
    during a lazy import lands there), even if a caller catches it. Under ``-m``, ``Py_RunMain`` then
    ignores ``sys.exit(130)`` and kills the process with SIGINT (exit -2). The mark is cleared at the
    start of every string evaluation, so one empty one on the way out clears it. A KeyboardInterrupt
    that really escapes still ends the process by SIGINT, as Python intends.
    """
    exec("")  # noqa: S102 (a constant empty string: resets CPython's flag, runs nothing)


@contextmanager
def shielded() -> Iterator[None]:
    """Run a short piece of bookkeeping that a SIGINT must not cut in half; raise it afterwards.

    Works with or without :func:`install` (it installs the counting handler for the duration).
    Outside the main thread it does nothing: only the main thread receives signals.
    """
    global _deferring, _pending
    if not _main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    swap = previous is signal.default_int_handler  # never override a handler someone else chose
    if swap:
        signal.signal(signal.SIGINT, _on_sigint)
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if swap:
            signal.signal(signal.SIGINT, previous)
        fire = _pending and not _deferring
        if fire:
            _pending = False
    if fire:
        raise KeyboardInterrupt
