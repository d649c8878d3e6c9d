"""How a benchmark script ends on bad input: one line naming the problem and exit 2, never a traceback (the
library's typed errors and a file that is not there); a bug still shows its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run(main: Callable[[], int | None]) -> None:
    from harness.errors import HarnessError

    try:
        code = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (HarnessError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def positive(text: str) -> int:
    """argparse type: a whole number >= 1 (0 samples, seeds or models gave tracebacks or tables of NaN)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
