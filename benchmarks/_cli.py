"""How a benchmark script ends on bad input: one line naming the problem and exit 2, never a traceback (the
library's typed errors and a file that is not there); a bug still shows its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


def parser(doc: str | None):
    """An ArgumentParser whose description is the script docstring's whole first paragraph (the first line alone
    stopped mid-sentence) and whose --help shows each flag's default."""
    import argparse

    first = (doc or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(description=" ".join(first.split()),
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def run(main: Callable[[], int | None]) -> None:
    from pandas.errors import EmptyDataError, ParserError

    from harness.errors import HarnessError

    try:
        code = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (HarnessError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (ParserError, EmptyDataError) as e:  # a file given as a table that is none (a README, say)
        print(f"error: not a readable CSV table: {e}", file=sys.stderr)
        sys.exit(2)
    except ValueError as e:
        if "Usecols do not match columns" not in str(e):  # a column asked for (--accuracy) that the table lacks
            raise
        print(f"error: the table has no such column: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def read_table(path):
    """pandas.read_csv naming the file when it is no table (a README given for --measured gave a traceback)."""
    import pandas as pd
    from pandas.errors import EmptyDataError, ParserError

    from harness.errors import HarnessError

    try:
        return pd.read_csv(path)
    except (ParserError, EmptyDataError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: not a readable CSV table ({str(e).strip()[:120]})") from None


def nonnegative(text: str) -> float:
    """argparse type: a number >= 0."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in (0, 1] (a ratio to reach, such as an HV target)."""
    import argparse

    value = nonnegative(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


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
