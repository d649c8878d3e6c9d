"""The benchmark scripts' shared command-line pieces (benchmarks/_cli.py): bad input is one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _cli  # noqa: E402

from harness.errors import HarnessError  # noqa: E402


def test_types_refuse_what_ran_into_tracebacks_or_nonsense():
    assert _cli.nonnegative("0") == 0 and _cli.fraction("1") == 1.0 and _cli.positive("3") == 3
    for kind, bad in ((_cli.nonnegative, "-1"), (_cli.fraction, "2"), (_cli.fraction, "0"), (_cli.positive, "0"),
                      (_cli.nonnegative, "x")):
        with pytest.raises(argparse.ArgumentTypeError):
            kind(bad)


def test_a_file_that_is_no_table_is_named_not_a_traceback(tmp_path):
    (tmp_path / "README.md").write_text("# title\n\nsome text, with a comma\nand, two, more\n")
    with pytest.raises(HarnessError, match="README.md: not a readable CSV table"):
        _cli.read_table(tmp_path / "README.md")


def test_help_describes_the_whole_first_paragraph_with_defaults(capsys):
    doc = "Line one of the description\ncontinues here.\n\nDetails nobody needs in --help."
    ap = _cli.parser(doc)
    ap.add_argument("--k", type=int, default=20, help="samples")
    with pytest.raises(SystemExit):
        ap.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Line one of the description continues here." in out and "Details" not in out
    assert "(default: 20)" in out


def test_run_turns_a_missing_column_into_one_line(capsys):
    import pandas as pd

    def main():
        pd.read_csv(__file__, usecols=["no_such_column"], sep="\x01")

    with pytest.raises(SystemExit) as e:
        _cli.run(main)
    assert e.value.code == 2 and "no such column" in capsys.readouterr().err


def test_transfer_names_the_ks_too_large_for_a_table(capsys):
    import transfer  # benchmarks/transfer.py

    assert transfer.usable_ks([5, 20, 1000], 1999, "oneproxy") == [5, 20]
    assert "K = 1000 left out" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--k 1000: oneproxy has 1999 architectures; K must be below half"):
        transfer.usable_ks([1000], 1999, "oneproxy")
