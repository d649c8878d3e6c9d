"""The first hour of a new user: tables that render at 80 and 200 columns, Ctrl-C at any point, clear output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app, common
from harness.models.spaces import get_space
from harness.results.store import Store

runner = CliRunner()
NB201 = get_space("nb201")


@pytest.fixture(params=[80, 200], ids=["80cols", "200cols"])
def width(request):
    """Run the command as if the terminal were this wide (rich reads the console width at print time)."""
    saved = common.console.width, common.err.width
    common.console.width = common.err.width = request.param
    yield request.param
    common.console.width, common.err.width = saved


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def assert_fits(output: str, width: int) -> None:
    too_wide = [line for line in output.splitlines() if len(line) > width]
    assert not too_wide, f"lines wider than {width}: {too_wide[:3]}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_campaigns_lists_every_status_without_crashing(tmp_path: Path, width: int):
    store = tmp_path / "h.db"
    with Store(store) as st:
        ids = {}
        for status, message in [("finished", ""), ("failed", "5 models failed in a row on [bold]x[/]"),
                                ("interrupted", "stopped by the user"), ("running", "")]:
            cid = st.start_campaign("local-onnx", "nb201", {}, "d", 10, "harness measure")
            ids[status] = cid
            if status != "running":
                st.finish_campaign(cid, status, message)
        st.db.execute("UPDATE campaigns SET pid = ? WHERE id = ?", (_dead_pid(), ids["running"]))
    out = invoke("campaigns", "--store", str(store))
    assert_fits(out, width)
    for status in ("finished", "failed", "interrupted", "abandoned"):
        assert status in out
    assert "[bold]x[/]" in out  # messages are shown as written, never read as markup
    assert "#4 abandoned: process ended without closing the campaign" in out
    assert re.search(r"\b1\s+local-onnx\s+nb201\s+finished\s+0/10\b", out)


def test_campaigns_on_an_empty_store_says_what_to_do(tmp_path: Path):
    out = invoke("campaigns", "--store", str(tmp_path / "h.db"))
    assert "no campaigns" in out and "harness measure" in out


def _summary(n_ok: int, cvs: dict[str, float]):
    from harness.campaign import CampaignSummary

    s = CampaignSummary("local-onnx", "nb201", n_ok, 0, ok=n_ok, status="finished")
    s.unstable, s.unstable_cv = list(cvs), dict(cvs)
    return s


@pytest.mark.parametrize("cols", [80, 200])
def test_unsteady_models_are_named_worst_first_with_a_hint(cols):
    from rich.console import Console

    from harness.cli import measure

    saved = measure.console
    measure.console = Console(width=cols, record=True, file=open(os.devnull, "w"))
    try:
        measure.print_summary(_summary(50, {"3": 0.12, "77": 0.41, "9": 0.25, "11": 0.11}))
        few = measure.console.export_text()
        measure.console = Console(width=cols, record=True, file=open(os.devnull, "w"))
        measure.print_summary(_summary(4, {"3": 0.12, "77": 0.41, "9": 0.25, "11": 0.11}))
        most = measure.console.export_text()
    finally:
        measure.console = saved
    flat = " ".join(few.split())
    assert "4 of 50 model(s)" in flat and "77 (CV 41 %), 9 (CV 25 %), 3 (CV 12 %)" in flat
    assert "11 (CV" not in flat  # only the worst three
    assert "--remeasure --arch" in flat
    assert "machine is the likely cause" in " ".join(most.split())
    assert_fits(few + most, cols)
