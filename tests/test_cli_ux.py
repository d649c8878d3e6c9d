"""The first hour of a new user: tables that render at 80 and 200 columns, Ctrl-C at any point, clear output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
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


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


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
    if width == 80:  # at 60 columns the device and space columns went blank: the start time gives way instead
        common.console.width = common.err.width = 60
        narrow = invoke("campaigns", "--store", str(store))
        assert_fits(narrow, 60)
        assert re.search(r"\b1\s+local-onnx\s+nb201\s+finished\s+0/10\b", narrow), narrow


def test_campaigns_keeps_long_device_names_whole_between_96_and_120_columns(tmp_path: Path):
    """The wide form came at a fixed 96 columns: with a 24-character name it dropped the device and space columns
    at 96-115 and cut headers ("ok/planne")."""
    store = tmp_path / "h.db"
    with Store(store) as st:
        cid = st.start_campaign("proxy-onnx-int8-longname", "nb201", {}, "d", 10, "harness measure")
        st.finish_campaign(cid, "finished", "")
    for width in (96, 100, 110, 130):
        common.console.width = common.err.width = width
        out = invoke("campaigns", "--store", str(store))
        assert_fits(out, width)
        assert re.search(r"\b1\s+proxy-onnx-int8-longname\s+nb201\s+finished\s+0/10\b", out), (width, out)
        assert ("ok/planned" in out) == (width >= 110) and "ok/planne " not in out


def test_campaigns_on_an_empty_store_says_what_to_do(tmp_path: Path):
    Store(tmp_path / "h.db").close()  # imports only, say
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


# --- a small imported store: 6 devices on 120 NB201 architectures, one device on only 8 of them ------------
@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    import numpy as np
    import pandas as pd

    from harness.results.importer import import_table

    rng = np.random.default_rng(0)
    n = 120
    base = rng.lognormal(0, 0.6, n)
    cols = {**{k: [NB201.parse(str(i)).columns[k] for i in range(n)] for k in NB201.key_columns}}
    names = ["nnmeter_cortexa76_cpu", "hwnb_raspi4", "eagle_gtx1080ti", "hwnb_pixel3", "helpx_titanrtx_bs256",
             "eagle_jetson_nano_fp16", "nnmeter_adreno640_gpu", "hwnb_edgetpu", "eagle_sd855_dsp_int8",
             "nnmeter_myriad_vpu", "hwnb_fpga"]
    for j, name in enumerate(names):
        cols[f"{name}_ms"] = base * rng.lognormal(0, 0.1 + 0.08 * j, n)
    few = np.full(n, np.nan)
    few[:8] = rng.lognormal(0, 1, 8)  # 8 common architectures: a pair that must not dominate
    cols["tiny_overlap_dev_ms"] = few
    cols["acc_cifar100_test_200ep"] = 70 - 5 * np.log(base) + rng.normal(0, 1, n)
    d = tmp_path_factory.mktemp("small")
    csv = d / "small.csv"
    pd.DataFrame(cols).to_csv(csv, index=False)
    with Store(d / "h.db") as st:
        import_table(st, csv)
    return d / "h.db"


def test_proxy_takes_target_and_the_old_targets_spelling(small_store):
    for flag in ("--target", "--targets", "-t"):
        out = invoke("proxy", flag, "hwnb_raspi4", "--store", str(small_store))
        assert "proxies for hwnb_raspi4" in out and "nnmeter_cortexa76_cpu" in out


def test_suggest_prints_a_table_not_a_dataframe(small_store, width):
    out = invoke("suggest", "--proxy", "hwnb_pixel3", "--samples", "5", "--store", str(small_store))
    assert "architectures to measure" in out and "nb201_index" in out
    assert_fits(out, width)


def test_spaces_sizes_are_readable(width):
    out = invoke("spaces")
    assert "15,625" in out and "× 10^" in out
    assert not re.search(r"\d{10,}", out)
    assert_fits(out, width)
    # a key to type per space: the column names alone did not say how one is written
    flat = "".join(out.split())
    from harness.models.spaces import get_space

    for name in ("nb201", "fbnet", "ofa_mbv3"):
        assert f"{name}:{get_space(name).sample(1, 0)[0].key}" in flat


def test_devices_show_prints_yaml_that_loads_back_at_any_width(width):
    """At 80 columns rich broke the built-in's long description line mid-scalar: the printed profile did not load."""
    import yaml

    from harness.devices.registry import ProfileRegistry

    for name in ("local-onnx", "local-tflite", "jetson-tx2"):
        shown = yaml.safe_load(invoke("devices", "show", name).split("\n", 1)[1])
        assert shown["description"] == ProfileRegistry().get(name).description


def test_devices_show_hides_the_other_runtimes_settings():
    onnx = invoke("devices", "show", "local-onnx")
    assert "execution_provider" in onnx and "delegate" not in onnx
    tflite = invoke("devices", "show", "local-tflite")
    assert "delegate" in tflite and "execution_provider" not in tflite


def test_a_misspelt_device_gets_a_did_you_mean(tmp_path):
    result = runner.invoke(app, ["measure", "--device", "local-onx", "--sample", "1", "--store",
                                 str(tmp_path / "h.db")])
    assert result.exit_code == 2
    assert "did you mean 'local-onnx'?" in result.output


def test_help_shows_no_type_for_flags():
    out = invoke("measure", "--help") + invoke("srcc", "--help")
    assert "<bool>" not in out and "--all" in out and "--json" in out


def test_cli_starts_with_a_typer_that_lacks_the_help_internal(monkeypatch):
    """The flag-type tweak patches a typer internal; a typer without it (the one on a GPU image was) must
    leave --help as typer draws it, not stop every command with an AttributeError."""
    from typer.core import TyperOption

    import harness.cli as cli

    monkeypatch.delattr(TyperOption, "display_type_rich", raising=False)
    cli._no_type_for_flags()  # raised AttributeError before
    assert "--json" in invoke("srcc", "--help")


def test_report_png_folder_is_ignored_by_git():
    repo = Path(__file__).resolve().parents[1]
    ignored = subprocess.run(["git", "check-ignore", "-q", "analysis/figures/srcc_heatmap.png"], cwd=repo)
    assert ignored.returncode == 0


def test_srcc_fits_the_terminal_and_masks_tiny_overlaps(small_store, width):
    out = invoke("srcc", "--store", str(small_store))
    assert_fits(out, width)
    flat = " ".join(out.split())
    if width == 80:  # 12 devices need ~110 columns: the ranked pair list instead
        assert "weakest pairs" in out and "ranked pairs instead" in flat and "…" not in out
        forced = invoke("srcc", "--store", str(small_store), "--layout", "matrix")  # squeezed '#' and names to '…'
        assert "…" not in forced and re.search(r"┃\s+#\s+┃ device", forced)
    else:
        assert "clustered order" in out and "n=8" in out
    assert "11 pairs on fewer than 30 common architectures (n=8)" in flat
    weakest = re.search(r"weakest: (\S+) vs (\S+) = \S+ on (\d+) architectures", flat)
    assert weakest and "tiny_overlap_dev" not in weakest.group(0) and weakest.group(3) == "120"


def test_srcc_min_overlap_is_configurable_and_in_json(small_store):
    import json

    loose = " ".join(invoke("srcc", "--store", str(small_store), "--min-overlap", "5", "--layout", "pairs").split())
    assert "fewer than" not in loose and "tiny_overlap_dev" in loose
    pairs = json.loads(invoke("srcc", "--store", str(small_store), "--json"))
    low = [p for p in pairs if p["low_overlap"]]
    assert len(low) == 11 and all(p["n_common_archs"] == 8 for p in low)


def test_srcc_says_one_pair(small_store):
    out = invoke("srcc", "--store", str(small_store), "--device", "hwnb_raspi4", "--device", "hwnb_pixel3")
    assert "1 pair;" in out and "1 pairs" not in out


@pytest.mark.parametrize("cols", [80, 200])
def test_campaign_progress_keeps_count_elapsed_and_eta(cols):
    from rich.console import Console

    from harness.cli.measure import campaign_progress

    con = Console(width=cols, record=True, file=open(os.devnull, "w"))  # not a tty: the final frame only
    progress = campaign_progress(con)
    with progress:
        task = progress.add_task("a-rather-long-device-profile-name", total=15625, status="")
        progress.update(task, advance=1234, status="ok 1234 · failed 3 · last 12.345 ms · median 10.111 ms")
        progress.refresh()
    lines = [line for line in con.export_text().splitlines() if "1234/15625" in line]
    assert lines, con.export_text()
    line = lines[-1]
    assert len(line) <= cols and re.search(r"\d:\d\d:\d\d eta (\d:\d\d:\d\d|-:--:--)", line), line
    if cols == 200:
        assert "median 10.111 ms" in line


@pytest.fixture
def with_target(small_store, tmp_path) -> Path:
    """The small store plus a new device measured on 12 architectures."""
    import shutil

    import pandas as pd

    from harness.results.importer import import_table

    store = tmp_path / "h.db"
    shutil.copy(small_store, store)
    keys = [str(i) for i in range(0, 120, 10)]
    with Store(store) as st:
        wide = st.latencies("nb201", ["hwnb_raspi4"]).set_index("key").latency_ms
        rows = [{**NB201.parse(k).columns, "new_dev_ms": 3 * wide[NB201.parse(k).key] ** 1.1} for k in keys]
        pd.DataFrame(rows).to_csv(tmp_path / "target.csv", index=False)
        import_table(st, tmp_path / "target.csv")
    return store


def test_adapt_prints_its_quality_and_reuses_identical_predictors(with_target, tmp_path, monkeypatch):
    args = ["adapt", "--proxy", "hwnb_raspi4", "--proxy", "hwnb_pixel3", "--target", "new_dev",
            "--store", str(with_target), "--cache-dir", str(tmp_path / "cache")]
    first = " ".join(invoke(*args).split())
    assert "adapted predictor #1 for new_dev (the first for this device)" in first
    m = re.search(r"quality on the 12 target samples \(leave-one-out, whole fit redone each time\): "
                  r"SRCC (\S+), median error (\S+) %", first)
    assert m and 0.8 < float(m.group(1)) <= 1.0, first
    assert re.search(r"ensemble: \d+ source\(s\).*own structure model \(\d+%\)", first), first
    again = " ".join(invoke(*args).split())
    assert "predictor #1 for new_dev already fits these inputs" in again and "reused" in again
    swapped = args[:1] + ["--proxy", "hwnb_pixel3", "--proxy", "hwnb_raspi4"] + args[5:]  # the same set, reordered
    assert "predictor #1 for new_dev already fits these inputs" in " ".join(invoke(*swapped).split())
    assert m.group(0) in again  # the same figure, from the saved predictor
    # a predictor of another structure layout (as before the edge-activity model) is refitted, not reused
    monkeypatch.setattr("harness.analysis.workflow.STRUCTURE_VERSION", -1)
    layout = " ".join(invoke(*args).split())
    assert "adapted predictor #2 for new_dev (the proxies' data, harness or its features changed since #1)" in layout, layout
    monkeypatch.undo()
    other = " ".join(invoke(*args, "--method", "target-only").split())
    assert "adapted predictor #3 for new_dev (#2 used multiproxy)" in other
    # target-only reads no proxy: naming others changes nothing it fits, so the same predictor is reused
    fewer = args[:3] + args[5:]  # --proxy hwnb_raspi4 only
    assert fewer.count("--proxy") == 1
    same = " ".join(invoke(*fewer, "--method", "target-only").split())
    assert "predictor #3 for new_dev already fits these inputs" in same, same
    with Store(with_target) as st:
        assert st.db.execute("SELECT COUNT(*) FROM predictors").fetchone()[0] == 3


def test_working_shows_a_step_with_its_count(monkeypatch):
    from rich.console import Console

    con = Console(width=80, record=True, file=open(os.devnull, "w"), force_terminal=True)
    monkeypatch.setattr(common, "err", con)
    with common.working("adapting") as step:
        step("building architectures for their graph features", 500, 15625)
        import time

        time.sleep(0.3)  # let the live display draw
    text = con.export_text()
    assert "building architectures for their graph features" in text and "500/15,625" in text


# --- measure any model file ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_files(tmp_path_factory, cache_dir):
    import shutil

    from harness.models.cache import ModelCache

    d = tmp_path_factory.mktemp("models")
    cache = ModelCache(cache_dir)
    graph = NB201.build(NB201.parse("77"))
    shutil.copy(cache.get(graph, "onnx").path, d / "my.onnx")
    shutil.copy(cache.get(graph, "tflite").path, d / "my.tflite")
    (d / "fake.onnx").write_text("this is not a model")
    return d


def test_measure_a_model_file_resumes_by_content(model_files, devices_dir, tmp_path):
    import shutil

    store = tmp_path / "h.db"
    common_args = ["--store", str(store), "--devices-dir", str(devices_dir)]
    first = flat(invoke("measure", "--device", "fast-onnx", "--model", str(model_files / "my.onnx"), *common_args))
    assert "1 measured" in first and "model files on fast-onnx" in first and "median ms" in first
    assert "graph:" not in first  # a model file is measured as given: no graph mode was applied
    again = flat(invoke("measure", "--device", "fast-onnx", "--model", str(model_files / "my.onnx"), *common_args))
    assert "already in" in again and "nothing to do" in again
    renamed = tmp_path / "renamed.onnx"
    shutil.copy(model_files / "my.onnx", renamed)  # same content, new name: a new entry sharing the hash
    invoke("measure", "-d", "fast-onnx", "-m", str(renamed), "-m", str(model_files / "my.onnx"), *common_args)
    tfl = invoke("measure", "-d", "fast-tflite", "-m", str(model_files / "my.tflite"), *common_args)
    assert "1 measured" in tfl
    with Store(store) as st:
        m = st.measurements(space="file")
        camp = st.db.execute("SELECT conditions_json FROM campaigns").fetchone()[0]
    assert len(m) == 3 and set(m.status) == {"ok"} and m.model_digest.nunique() == 2
    assert {k.split("@")[0] for k in m.key} == {"my.onnx", "renamed.onnx", "my.tflite"}
    assert "runtime_version" in camp
    assert "stale" not in invoke("campaigns", "--store", str(store))  # files are measured as given
    out = tmp_path / "files.csv"
    exported = flat(invoke("export", "--space", "file", "--out", str(out), "--store", str(store)))
    assert "stale" not in exported and "3 model file(s)" in exported  # nor by export (it once said so)
    import pandas as pd

    table = pd.read_csv(out)
    assert {"file", "sha256", "fast-onnx_ms", "fast-tflite_ms"} <= set(table.columns) and len(table) == 3
    assert table["fast-onnx_exporter"].isna().all()  # no exporter of ours made them
    assert table["fast-onnx_degenerate"].isna().all()  # nor do we know their graphs: unknown, not 0


def test_measure_model_file_errors_name_the_file_and_the_fix(model_files, devices_dir, tmp_path):
    import shutil

    args = ["--store", str(tmp_path / "h.db"), "--devices-dir", str(devices_dir)]
    shutil.copy(model_files / "my.tflite", tmp_path / "tflite-inside.onnx")  # uploaded, then InvalidProtobuf
    (tmp_path / "folder.onnx").mkdir()
    cases = [(["-d", "fast-onnx", "-m", str(tmp_path / "tflite-inside.onnx")], "does not look like a onnx model"),
             (["-d", "fast-onnx", "-m", str(tmp_path / "folder.onnx")], "is a folder; name the model files in it"),
             (["-d", "fast-tflite", "-m", str(model_files / "my.onnx")], "use a onnxruntime profile"),
             (["-d", "fast-onnx", "-m", str(model_files / "fake.onnx")], "does not look like a onnx model"),
             (["-d", "fast-onnx", "-m", str(tmp_path / "nope.onnx")], "no such file"),
             (["-d", "fast-onnx", "-m", str(model_files / "my.onnx"), "--sample", "3"], "leave out --sample")]
    for extra, message in cases:
        result = runner.invoke(app, ["measure", *extra, *args])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output


# --- reports -------------------------------------------------------------------------------------------
def test_report_masks_low_overlap_pairs_and_says_how_to_read_and_where_numbers_come_from(
        small_store, registry, cache_dir, tmp_path):
    import shutil

    from harness.campaign import run_campaign
    from harness.models.cache import ModelCache

    store = tmp_path / "h.db"
    shutil.copy(small_store, store)
    with Store(store) as st:  # one measured device: its runtime, policy, machine and dates belong in the report
        run_campaign(st, registry.get("fast-onnx"), NB201, NB201.parse_many(["1", "2", "3"]), cache=ModelCache(cache_dir))
    out = tmp_path / "r.html"
    invoke("report", "--out", str(out), "--store", str(store))
    page = out.read_text()
    assert page.count("How to read this:") == page.count("<h2") >= 5  # every figure and table
    assert "Where the numbers come from" in page and "onnxruntime 1." in page and "1 warm-up + 3 timed runs" in page
    assert "share fewer than 30 architectures: hatched" in page
    scatter_title = re.search(r"most and the two least correlated pairs", page)
    assert scatter_title
    # the default scatter pairs skip pairs on 3 or 8 architectures
    import harness.analysis as ha
    from harness.analysis.report import default_pairs

    corr = ha.correlate(ha.latencies(str(store)))
    assert all("tiny_overlap_dev" not in p and "fast-onnx" not in p for p in default_pairs(corr, min_overlap=30))
    pairs = ha.srcc(str(store))  # the notebook API flags what the CLI masks (it returned SRCC 1.0 on 3, unflagged)
    thin = pairs[(pairs.device_a == "tiny_overlap_dev") | (pairs.device_b == "tiny_overlap_dev")]
    assert len(thin) and thin.low_overlap.all() and not pairs[pairs.n_common_archs >= 30].low_overlap.any()
    assert "<td>None</td>" not in page  # an imported device's threads
    invoke("report", "--out", str(out), "--store", str(store), "--method", "kendall")
    assert "<th>Kendall tau</th>" in out.read_text()  # the coefficient's column was headed srcc
    bad = runner.invoke(app, ["report", "--out", str(tmp_path / "r.pdf"), "--store", str(store)])
    assert bad.exit_code == 2 and "report is HTML" in " ".join(re.sub("[│╭╮╰╯─]", " ", bad.output).split())


def test_pareto_report_clips_degenerate_architectures_and_sorts_regret():
    import numpy as np
    import pandas as pd

    from harness.analysis import pareto
    from harness.analysis.report import pareto_report

    rng = np.random.default_rng(1)
    lat = rng.lognormal(1, 0.5, 300)
    acc = 40 + 10 * np.log(lat) + rng.normal(0, 2, 300)
    lat[:4], acc[:4] = 0.011, 1.0  # dead cells: fastest and useless
    proxy = lat * rng.lognormal(0, 0.2, 300)
    frame = pd.DataFrame({"p": proxy, "t": lat, "acc": acc})
    from harness.analysis.workflow import ParetoResult

    result = ParetoResult("p", "t", "acc", pareto.check(proxy, lat, acc), frame)
    rep = pareto_report(result, "nb201")
    assert "4 off-scale architecture(s)" in rep.figures[0].caption
    levels = rep.tables[-1].frame
    assert list(levels.accuracy) == sorted(levels.accuracy, reverse=True) and "regret_pct" in levels
    assert all(t.how_to_read for t in rep.tables) and rep.figures[0].how_to_read


def test_devices_list_fits(width):
    out = invoke("devices", "list")
    assert_fits(out, width)
    assert re.search(r"local-onnx\s+local\s+onnxruntime ×1\s+built-in\s+this machine's CPU", out)


def test_tables_never_cut_a_figure_in_a_narrow_terminal():
    """rich shortens cells to '0.99…' when a table is wider than the terminal: a figure cut is a figure lost."""
    import io

    from rich.console import Console
    from rich.table import Table

    from harness.cli.common import print_table

    def table() -> Table:
        t = Table(title="Pareto check")
        for col in ("front from", "size", "recall", "HV ratio", "mean regret ms", "max regret ms", "mean regret %"):
            t.add_column(col)
        t.add_row("the target's saved predictor", "7", "0.778", "0.9992", "0.068", "0.557", "1.5")
        t.add_row("proxy hwnb_pixel3", "8", "0.778", "0.9961", "-", "12.345", "2.2")
        return t

    def shown(printer) -> str:
        out = Console(width=60, file=io.StringIO(), color_system=None, legacy_windows=False)
        printer(out)
        return out.file.getvalue()

    plain = shown(lambda c: c.print(table()))
    assert "…" in plain  # what rich does on its own at this width
    text = shown(lambda c: print_table(table(), to=c))
    assert "…" not in text
    for figure in ("0.9992", "0.9961", "0.068", "12.345", "0.557", "0.778"):
        assert figure in text, figure
    assert max(map(len, text.splitlines())) <= 60


def test_unsteady_models_on_a_quiet_machine_are_not_blamed_on_the_machine():
    """When most visits end unsteady but every visit was watched and none saw other processes, the load is not the
    cause (onnxruntime int8 on a quiet machine: 7 of 9 unsteady): say so, and what helps."""
    from harness.campaign import CampaignSummary
    from harness.cli.common import console
    from harness.cli.measure import print_unstable

    def hint(**kw) -> str:
        s = CampaignSummary("dev", "nb201", 3, 0, ok=9, rounds=3, unstable=[f"k{i}" for i in range(7)],
                            unstable_cv={f"k{i}": 0.1 for i in range(7)}, **kw)
        with console.capture() as cap:
            print_unstable(s)
        return " ".join(cap.get().split())

    quiet = hint(watched=9, suspect=0)
    assert "7 of 9 visit(s)" in quiet and "own run-to-run jitter" in quiet and "max_runs" in quiet
    assert "machine is the likely cause" not in quiet
    assert "machine is the likely cause" in hint(watched=9, suspect=3)  # some visits saw others' load
    assert "machine is the likely cause" in hint(watched=0, suspect=0)  # nobody watched (e.g. a phone)


def test_results_of_a_workload_get_their_confidence_intervals_and_bad_or_empty_asks_are_errors(cli_env, tmp_path):
    from tests.conftest import harness

    harness("measure", "-d", "fast-onnx", "--arch", "0,1,2", "--precision", "fp16", env=cli_env)
    harness("measure", "-d", "fast-onnx", "--arch", "0,1,2", env=cli_env)
    harness("export", "-o", str(tmp_path / "t.csv"), "--ci", "50", env=cli_env)
    import pandas as pd

    df = pd.read_csv(tmp_path / "t.csv")
    # the workload's column is named fast-onnx@fp16; its runs were once skipped as "not measured"
    assert {"fast-onnx@fp16_ci_low_ms", "fast-onnx@fp16_ci_high_ms"} <= set(df.columns), list(df.columns)
    # a visit whose runs were mostly preempted has no noise estimate (an empty cell, seen on a loaded machine)
    known = df["fast-onnx@fp16_ci_low_ms"].notna()
    assert known.any() and (df["fast-onnx@fp16_ci_low_ms"][known] <= df["fast-onnx@fp16_ms"][known]).all()
    cmp = harness("compare", "fast-onnx", "fast-onnx@fp16", "--ci", "20", env=cli_env)
    assert "runs resampled for: fast-onnx, fast-onnx@fp16" in " ".join(cmp.stdout.split()), cmp.stdout
    same = harness("compare", "fast-onnx", "fast-onnx", env=cli_env, check=False)
    assert same.returncode == 2 and "two different devices" in same.stderr
    bad = harness("export", "-o", str(tmp_path / "u.csv"), "--ci", "-3", env=cli_env, check=False)
    assert bad.returncode == 2 and "--ci" in bad.stderr and "Traceback" not in bad.stderr
    empty = harness("export", "-o", str(tmp_path / "e.csv"), "--space", "fbnet", env=cli_env, check=False)
    assert empty.returncode == 2 and "no latencies in space 'fbnet'" in " ".join(empty.stderr.split())
    assert not (tmp_path / "e.csv").exists()


def test_a_campaign_whose_every_visit_failed_exits_nonzero(cli_env):
    from tests.conftest import harness, write_profile

    # a per-model limit no model can meet: every visit is a timeout failure, the campaign still "finishes"
    write_profile(Path(cli_env["HARNESS_DEVICES"]), "too-strict", {"name": "onnxruntime", "threads": 1},
                  policy={"min_seconds": 0.99, "timeout_seconds": 1})
    out = harness("measure", "-d", "too-strict", "--arch", "0,1", env=cli_env, check=False)
    assert out.returncode == 1 and "nothing was measured" in out.stderr, out.stdout + out.stderr
    assert "timeout=2" in out.stdout
    # `campaigns` says what the failures were, not only how many
    listed = " ".join(harness("campaigns", env={**cli_env, "COLUMNS": "200"}).stdout.split())
    assert "failed: every one of 2 visit(s) failed: timeout=2; last: timeout:" in listed, listed
    ok = harness("measure", "-d", "fast-onnx", "--arch", "0", env=cli_env)
    assert ok.returncode == 0


def test_a_litert_delegate_python_cannot_load_is_refused_by_check_and_before_any_model(cli_env):
    from tests.conftest import harness, write_profile

    write_profile(Path(cli_env["HARNESS_DEVICES"]), "no-gpu", {"name": "tflite", "delegate": "gpu"})
    check = harness("devices", "check", "no-gpu", env=cli_env, check=False)
    assert check.returncode != 0 and "runtime.delegate gpu" in " ".join((check.stdout + check.stderr).split())
    out = harness("measure", "-d", "no-gpu", "--arch", "0,1", env=cli_env, check=False)
    flat = " ".join((out.stdout + out.stderr).split())
    assert out.returncode != 0 and "benchmark_model" in flat and "device_error" not in flat, flat
    with Store(cli_env["HARNESS_STORE"]) as st:
        assert st.measurements().empty  # nothing was tried in vain


def test_devices_list_says_when_the_profile_folder_is_missing_or_a_file(cli_env, tmp_path):
    from tests.conftest import harness, write_profile

    gone = harness("devices", "list", env={**cli_env, "HARNESS_DEVICES": str(tmp_path / "typo")})
    assert "built-in profiles only" in " ".join(gone.stdout.split())
    afile = tmp_path / "a-file"
    afile.write_text("x")
    bad = harness("devices", "list", env={**cli_env, "HARNESS_DEVICES": str(afile)}, check=False)
    assert bad.returncode == 2 and "is a file" in " ".join(bad.stderr.split())
    write_profile(Path(cli_env["HARNESS_DEVICES"]), "local-onnx", {"name": "onnxruntime", "threads": 2})
    mine = harness("devices", "list", env={**cli_env, "COLUMNS": "200"})
    assert "overrides built-in" in mine.stdout and "built-in profiles only" not in mine.stdout


def test_resuming_with_a_changed_runtime_says_the_kept_ones_were_measured_with_another(cli_env):
    from tests.conftest import harness, write_profile

    harness("measure", "-d", "fast-onnx", "--arch", "0,1", env=cli_env)
    same = harness("measure", "-d", "fast-onnx", "--arch", "0,1,2", env=cli_env)
    assert "changed:" not in same.stdout  # a plain resume says nothing
    write_profile(Path(cli_env["HARNESS_DEVICES"]), "fast-onnx", {"name": "onnxruntime", "threads": 2})
    out = harness("measure", "-d", "fast-onnx", "--arch", "0,1,2", env={**cli_env, "COLUMNS": "250"})
    assert "nothing to do" in out.stdout
    assert "were measured with another profile (runtime.threads: 1 -> 2)" in out.stdout, out.stdout
    harness("measure", "-d", "fast-onnx", "--arch", "0", "--remeasure", env=cli_env)
    mixed = harness("measure", "-d", "fast-onnx", "--arch", "0,1,2", env={**cli_env, "COLUMNS": "250"})
    assert "(runtime.threads: 1 -> 1)" not in mixed.stdout and "runtime.threads: 1 -> 2" in mixed.stdout  # 1, 2 still
    # the count is of the kept architectures measured otherwise (1 and 2), not of every kept one (it said 3)
    assert "2 architecture(s) kept as measured" in " ".join(mixed.stdout.split()), mixed.stdout
    harness("measure", "-d", "fast-onnx", "--arch", "1,2", "--remeasure", env=cli_env)
    now = harness("measure", "-d", "fast-onnx", "--arch", "0,1,2", env=cli_env)
    assert "changed:" not in now.stdout  # every kept latency is of this setup now
    # another workload is another series: its kept latencies are compared with its own setup only (the batch-1
    # series, measured with 2 threads, was reported against a batch-2 series measured with 3, on every rerun)
    write_profile(Path(cli_env["HARNESS_DEVICES"]), "fast-onnx", {"name": "onnxruntime", "threads": 3})
    harness("measure", "-d", "fast-onnx", "--arch", "0", "--batch-size", "2", env=cli_env)
    bs2 = harness("measure", "-d", "fast-onnx", "--arch", "0", "--batch-size", "2", env=cli_env)
    flat = " ".join(bs2.stdout.split())
    assert "nothing to do" in flat and "changed:" not in flat, bs2.stdout


def test_export_picks_one_graph_mode_when_a_device_was_measured_in_both(cli_env, tmp_path):
    import pandas as pd

    from tests.conftest import harness

    harness("measure", "-d", "fast-onnx", "--arch", "0,1", env=cli_env)
    harness("measure", "-d", "fast-onnx", "--arch", "0", "--graph", "keep", env=cli_env)
    mixed = harness("export", "-o", str(tmp_path / "m.csv"), env={**cli_env, "COLUMNS": "200"})
    assert "both graph modes" in mixed.stdout and "--graph prune" in mixed.stdout
    assert sorted(pd.read_csv(tmp_path / "m.csv")["fast-onnx_graph"]) == ["keep", "prune"]
    harness("export", "-o", str(tmp_path / "p.csv"), "--graph", "prune", "--ci", "20", env=cli_env)
    prune = pd.read_csv(tmp_path / "p.csv")
    assert len(prune) == 2 and set(prune["fast-onnx_graph"]) == {"prune"} and "fast-onnx_ci_low_ms" in prune
    keep = pd.read_csv(harness("export", "-o", str(tmp_path / "k.csv"), "--graph", "keep", env=cli_env) and
                       tmp_path / "k.csv")
    assert list(keep["nb201_index"]) == [0] and set(keep["fast-onnx_graph"]) == {"keep"}
    bad = harness("export", "-o", str(tmp_path / "x.csv"), "--graph", "pruned", env=cli_env, check=False)
    assert bad.returncode == 2 and "graph mode 'pruned'" in bad.stderr


def test_unsteady_nb201_models_are_named_by_the_index_that_arch_takes():
    """An arch_str is ~90 characters and folded mid-token at 80 columns; the index is what --arch takes."""
    from harness.campaign import CampaignSummary, Measured, count_outcome
    from harness.cli.common import console
    from harness.cli.measure import print_unstable
    from harness.devices.driver import RunResult

    arch = get_space("nb201").parse("9930")
    s = CampaignSummary("dev", "nb201", 1, 0)
    jittery = RunResult(timed_ms=[1.0, 2.0, 1.0, 3.0, 1.0, 2.0, 1.5, 2.5])
    count_outcome(s, Measured(arch, "onnx", "2026-11-30T00:00:00", 0.1, "d", False, jittery), 1, 1)
    assert s.unstable == [arch.key] and s.labels[arch.key] == "9930"
    with console.capture() as cap:
        print_unstable(s)
    flat = " ".join(cap.get().split())
    assert "worst: 9930 (CV" in flat and "|nor_conv" not in flat


def test_json_output_is_strict_json_and_a_bad_correlation_method_is_a_usage_error(cli_env, tmp_path):
    import json

    from tests.conftest import harness

    # one device constant on the shared architectures: its SRCC is undefined (NaN in Python, null in JSON)
    (tmp_path / "t.csv").write_text("nb201_index,flat_ms,vary_ms\n1,2.0,1.0\n2,2.0,3.0\n3,2.0,2.0\n")
    harness("import", str(tmp_path / "t.csv"), env=cli_env)
    out = harness("srcc", "--json", "--min-overlap", "2", env=cli_env)

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")
    pair = json.loads(out.stdout, parse_constant=refuse)[0]
    assert pair["srcc"] is None and pair["method"] == "spearman"
    table = " ".join(harness("srcc", "--min-overlap", "2", env=cli_env).stdout.split())
    assert "no SRCC (–) for 1 pair where a device's latencies are all equal on the common ones" in table
    one = harness("srcc", "--device", "flat", env=cli_env, check=False)  # was an empty table titled '0 devices'
    thin = harness("proxy", "--target", "flat", env=cli_env, check=False)  # was a table of dashes
    assert thin.returncode == 2 and "no candidate shares 30 or more" in " ".join(thin.stderr.split())
    thin_json = harness("proxy", "--target", "flat", "--json", env=cli_env, check=False)  # was rc 0, every mean null
    assert thin_json.returncode == 2 and not thin_json.stdout
    assert one.returncode == 2 and "SRCC compares devices in pairs" in " ".join(one.stderr.split())
    bad = harness("srcc", "--method", "pearson", env=cli_env, check=False)
    assert bad.returncode == 2 and "'pearson' is not one of spearman, kendall" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("stop", [None, "stable", "budget"])
def test_the_closed_loops_round_table_fits_80_columns_whatever_it_decided(stop):
    """With 'stable' or 'budget' in its last column it was 82 characters wide."""
    from rich.console import Console

    from harness.analysis.closed_loop import Round
    from harness.cli import common
    from harness.cli.transfer import _round_table

    r = Round(12, 150, 0.9876, 12.3, list(range(14)), [0.9] * 14, 1.0, 0.93, 0.0123, 0.9987, 0.87, True, stop,
              [] if stop else [1, 2, 3, 4, 5], 12.3)
    saved = common.console
    common.console = Console(width=80, record=True, file=open(os.devnull, "w"))
    try:
        common.print_table(_round_table(r, "round 12 (K: target samples; SRCC, err%: leave-one-out; E[...]: "
                                           "expected against the truth)"))
        text = common.console.export_text()
    finally:
        common.console = saved
    assert_fits(text, 80)
    assert "0.9987" in text and (stop or "5") in text


def test_a_device_lost_mid_campaign_exits_1_and_says_what_is_kept(cli_env):
    """It exited 2, the code of a bad command; the farm and `measure --help` say 1 when a device stopped."""
    import yaml

    from tests.conftest import harness

    (Path(cli_env["HARNESS_DEVICES"]) / "flaky.yaml").write_text(yaml.safe_dump(
        {"name": "flaky", "connection": {"kind": "sleep", "latency_ms": 1, "drop_after": 1},
         "runtime": {"name": "onnxruntime"}, "policy": {"warmup_runs": 0, "timed_runs": 2}}))
    out = harness("measure", "-d", "flaky", "--arch", "0,1,2", env=cli_env, check=False)
    flat = " ".join(out.stderr.split())
    assert out.returncode == 1 and "stopped:" in flat and "1 of 3 architectures have a measurement in" in flat, flat


def test_the_demo_writes_its_own_architectures_and_their_srcc(cli_env, tmp_path):
    """The README's first command. In a store with other campaigns it wrote their architectures too (31 rows
    for a 20-architecture demo)."""
    import pandas as pd

    from tests.conftest import harness

    harness("measure", "-d", "local-onnx", "--arch", "5000", env=cli_env)  # someone's earlier campaign
    out = harness("demo", "--sample", "3", "--out", str(tmp_path / "demo.csv"), env={**cli_env, "COLUMNS": "200"})
    df = pd.read_csv(tmp_path / "demo.csv")
    assert len(df) == 3 and 5000 not in set(df.nb201_index)
    assert df[["local-onnx_ms", "local-tflite_ms"]].notna().all().all()
    assert "(3 architectures)" in out.stdout and "on 3 architectures" in out.stdout


def test_export_without_space_ignores_measured_model_files(model_files, cli_env, tmp_path):
    """The tour's `harness export --out results/nb201.csv` failed ('holds 2 spaces (file, nb201)') once a model
    file had been measured."""
    import pandas as pd

    from tests.conftest import harness

    harness("measure", "-d", "fast-onnx", "--arch", "0", env=cli_env)
    harness("measure", "-d", "fast-onnx", "-m", str(model_files / "my.onnx"), env=cli_env)
    harness("export", "--out", str(tmp_path / "t.csv"), env=cli_env)
    assert list(pd.read_csv(tmp_path / "t.csv").nb201_index) == [0]


def test_a_model_file_table_shows_the_latency_export_writes(model_files, devices_dir, tmp_path):
    """With 3 rounds the table showed the last visit's median (1.127 ms) while export wrote the median over the
    visits (1.151 ms)."""
    from tests.conftest import write_profile

    write_profile(devices_dir, "three-rounds", {"name": "onnxruntime", "threads": 1}, {"rounds": 3})
    store = tmp_path / "h.db"
    common_args = ["--store", str(store), "--devices-dir", str(devices_dir)]
    out = invoke("measure", "-d", "three-rounds", "-m", str(model_files / "my.onnx"), *common_args)
    assert "median over 3 visits, as exported" in flat(out)
    row = next(line for line in out.splitlines() if "│" in line and "my.onnx" in line)
    shown = float(row.split("│")[2])
    invoke("export", "--space", "file", "--out", str(tmp_path / "f.csv"), "--store", str(store))
    exported = float(pd.read_csv(tmp_path / "f.csv")["three-rounds_ms"].iloc[0])
    with Store(store) as st:
        visits = st.measurements("three-rounds", "file").median_ms
    assert len(visits) == 3 and shown == pytest.approx(exported, abs=5e-4)
    assert shown == pytest.approx(float(np.median(visits)), abs=5e-4)


def test_model_files_on_a_benchmark_model_device_print_their_table(model_files, cli_env, tmp_path):
    """benchmark_model reports no p90: `measure -d virtual-phone --model my.tflite` saved the measurement and then
    ended in a TypeError traceback, on every rerun too."""
    env = {**cli_env, "HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    for _ in range(2):  # the first measures, the rerun only prints
        out = subprocess.run([sys.executable, "-m", "harness", "measure", "-d", "virtual-phone", "-m",
                              str(model_files / "my.tflite")], env=env, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
        assert "model files on virtual-phone" in out.stdout
        row = next(line for line in out.stdout.splitlines() if "my.tflite" in line and "│" in line)
        assert " - " in row  # no p90 from a statistics-only tool


def test_an_out_table_with_an_unknown_format_is_refused_before_any_work(tmp_path):
    """`demo --out x.txt` and `transfer --out x.txt` measured first and refused the file name after."""
    import time

    t = time.perf_counter()
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "x.txt"), "--store", str(tmp_path / "s.db")])
    assert result.exit_code == 2 and "ending in .csv, .csv.gz or .parquet" in flat(result.output)
    assert not (tmp_path / "s.db").exists() and time.perf_counter() - t < 30  # nothing was measured
    (tmp_path / "d.csv").mkdir()
    folder = runner.invoke(app, ["export", "--out", str(tmp_path / "d.csv"), "--store", str(tmp_path / "s.db")])
    assert folder.exit_code == 2 and "folder" in folder.output and "Traceback" not in folder.output


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["spaces"], ["devices", "list"], ["srcc", "--json"]])
def test_a_reader_that_leaves_ends_the_command_quietly_with_141(args, tmp_path):
    """`| head -1` ended commands with exit 0, 1 (rich; click for a plain print: --json, --version) or 2
    ('error: Broken pipe'): now always 141, silently."""
    store = tmp_path / "s.db"
    env = {**os.environ, "HARNESS_DEVICES": str(tmp_path), "HARNESS_STORE": str(store), "COLUMNS": "80"}
    if args[0] == "srcc":
        (tmp_path / "t.csv").write_text("nb201_index,a_ms,b_ms\n" + "".join(f"{i},{i + 1},{i + 2}\n" for i in range(9)))
        subprocess.run([sys.executable, "-m", "harness", "import", str(tmp_path / "t.csv")], env=env, check=True,
                       capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # gone before the first line is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and stderr == ""


def test_where_a_device_is_and_how_long_to_wait_for_it_are_no_change_of_setup():
    """The virtual phone's serial is a new loopback port each command and a timeout changes no latency: resuming
    `-d virtual-phone` said "changed: ... --remeasure" every time."""
    from harness.devices.profile import measurement_changes

    before = {"runtime": {"name": "tflite", "threads": 4},
              "connection": {"kind": "adb", "serial": "127.0.0.1:40485", "connect_timeout_s": 10.0}}
    moved = {"runtime": {"name": "tflite", "threads": 4},
             "connection": {"kind": "adb", "serial": "127.0.0.1:44123", "connect_timeout_s": 30.0}}
    assert measurement_changes(before, moved) == []
    assert measurement_changes(before, {**moved, "runtime": {"name": "tflite", "threads": 2}}) == [
        "runtime.threads: 4 -> 2"]
    # another host or USB serial under one device name may be another machine: said (the farm groups them)
    board = {"runtime": {"name": "onnxruntime", "threads": 1}, "connection": {"kind": "ssh", "host": "board-a"}}
    assert measurement_changes(board, {**board, "connection": {"kind": "ssh", "host": "board-b"}}) == [
        "connection.host: 'board-a' -> 'board-b'"]
    here = {**board, "connection": {"kind": "ssh", "host": "127.0.0.1"}}
    assert measurement_changes(here, {**board, "connection": {"kind": "ssh", "host": "localhost"}}) == []
    assert measurement_changes(before, {**moved, "connection": {"kind": "adb", "serial": "R58M12ABC"}}) == [
        "connection.serial: '127.0.0.1:40485' -> 'R58M12ABC'"]


def test_timing_the_copies_or_not_is_a_change_of_setup():
    """A Jetson campaign resumed after `include_transfers: true` stored 5 GPU-compute-only latencies and 2 with the
    host<->device copies in one column, without a word."""
    from harness.devices.profile import measurement_changes

    gpu = {"runtime": {"name": "trtexec"}, "connection": {"kind": "local"}, "policy": {"include_transfers": False}}
    copies = {**gpu, "policy": {"include_transfers": True}}
    assert measurement_changes(gpu, copies) == ["policy.include_transfers: False -> True"]
    assert measurement_changes(gpu, {**gpu, "policy": {"include_transfers": False, "timed_runs": 99}}) == []
    assert measurement_changes({**gpu, "policy": {}}, gpu) == []  # stored before the field existed: its default


def test_a_port_that_is_no_ssh_server_gives_one_clean_error(cli_env):
    """paramiko's own log of the failed handshake (a traceback) reached the user beside harness's error."""
    import socket
    import threading

    from tests.conftest import harness

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def answer() -> None:  # an HTTP server where the profile says SSH
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    (Path(cli_env["HARNESS_DEVICES"]) / "not-ssh.yaml").write_text(yaml.safe_dump(
        {"name": "not-ssh", "runtime": {"name": "onnxruntime", "threads": 1},
         "connection": {"kind": "ssh", "host": "127.0.0.1", "port": port, "user": "x",
                        "insecure_skip_host_key_check": True, "connect_timeout_s": 3}}))
    try:
        out = harness("devices", "check", "not-ssh", env=cli_env, check=False, subprocess_=True)
    finally:
        srv.close()
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "paramiko" not in out.stderr, out.stderr
    assert f"cannot reach 127.0.0.1:{port}: the port accepted the connection but no SSH server spoke" in " ".join(
        out.stdout.split()), out.stdout


def test_a_stop_says_when_a_rerun_can_go_on_by_why_it_stopped():
    """A phone whose disk filled up was told "rerun when the device is back": it never left."""
    from types import SimpleNamespace

    from harness.campaign import CampaignAborted
    from harness.cli.measure import rerun_when
    from harness.errors import ConnectionLost

    phone = SimpleNamespace(connection=SimpleNamespace(kind="adb", workdir="/data/local/tmp/harness"))
    full = CampaignAborted("5 models failed in a row on p; last: device_error: write failed: No space left on device")
    assert rerun_when(ConnectionLost("gone"), phone) == "when the device is back"
    # never answered: a device that is down, or a wrong port (it only said "when the device is back")
    refused = rerun_when(ConnectionLost("pi: nothing answers on 127.0.0.1:1 (connection refused)"), phone)
    assert "connection.host and connection.port" in refused
    assert rerun_when(full, phone) == ("once the device has free space again (the models harness pushed can go: "
                                       "`adb shell 'rm -f /data/local/tmp/harness/*.tflite'`)")
    spaced = SimpleNamespace(connection=SimpleNamespace(kind="adb", workdir="/sdcard/my models"))
    assert "`adb shell 'rm -f '\"'\"'/sdcard/my models'\"'\"'/*.tflite'`" in rerun_when(full, spaced)
    assert rerun_when(CampaignAborted("5 models failed in a row; last: device_error: no GPU delegate"),
                      phone) == "once the cause above is fixed"


def test_a_port_where_nothing_speaks_ssh_says_so(cli_env):
    """A port that accepts and then says nothing was reported as paramiko's 'No existing session'."""
    import socket

    from tests.conftest import harness

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)  # accepts (the kernel completes the handshake) and never writes
    port = srv.getsockname()[1]
    (Path(cli_env["HARNESS_DEVICES"]) / "silent.yaml").write_text(yaml.safe_dump(
        {"name": "silent", "runtime": {"name": "onnxruntime", "threads": 1},
         "connection": {"kind": "ssh", "host": "127.0.0.1", "port": port, "user": "x",
                        "insecure_skip_host_key_check": True, "connect_timeout_s": 1}}))
    try:
        out = harness("devices", "check", "silent", env=cli_env, check=False)
    finally:
        srv.close()
    flat = " ".join(out.stdout.split())
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "the port accepted the connection but no SSH server spoke within 1 s" in flat, flat


@pytest.mark.parametrize("where", ["store a folder", "store under a file", "cache a file", "cache under a file"])
def test_a_store_or_cache_path_of_the_wrong_kind_is_named_as_such(cli_env, tmp_path, where):
    """A folder as HARNESS_STORE read "no store at ...: measure or import something first" (measuring failed too),
    a file as HARNESS_CACHE "<file>/onnx/a1: Not a directory" mid-campaign, after a failed campaign was opened."""
    from tests.conftest import harness

    afile, adir = tmp_path / "afile", tmp_path / "adir"
    afile.write_text("x")
    adir.mkdir()
    env = dict(cli_env)
    what, _, path = where.partition(" ")
    path = {"a folder": adir, "under a file": afile / "x", "a file": afile}[path]
    env["HARNESS_STORE" if what == "store" else "HARNESS_CACHE"] = str(path)
    for args in (["measure", "-d", "local-onnx", "--arch", "5"], ["campaigns"]):
        r = harness(*args, env=env, check=False)
        text = " ".join(re.sub("[│╭╮╰╯─]", " ", r.stdout + r.stderr).split())  # typer's usage-error panel
        assert r.returncode != 0 and "Traceback" not in text
        if what == "store":
            assert ("is a folder, not a store file" if path == adir else f"{afile} is a file, not a folder") in text
        elif args[0] == "measure":
            assert "the model cache is a folder" in text and "--cache-dir" in text
    if what == "cache":
        assert not Path(cli_env["HARNESS_STORE"]).exists()  # refused before any campaign was opened


def test_a_cached_model_changed_on_disk_is_exported_again_and_the_summary_says_so(cli_env, tmp_path):
    from tests.conftest import harness

    env = {**cli_env, "HARNESS_CACHE": str(tmp_path / "own-cache")}  # not the session's shared cache
    harness("measure", "-d", "fast-onnx", "--arch", "5", env=env)
    files = list((tmp_path / "own-cache").rglob("*.onnx"))
    assert len(files) == 1  # fast-onnx times no paired reference
    for f in files:
        f.write_bytes(f.read_bytes()[:1000])  # truncated on disk
    out = " ".join(harness("measure", "-d", "fast-onnx", "--arch", "5", "--remeasure", env=env).stdout.split())
    assert f"cache: {len(files)} cached model file(s) no longer matched" in out


def test_several_devices_at_once_say_what_their_visits_say_too(cli_env, devices_dir):
    """The no-noise-estimate note (and the cache one) printed for one device's campaign, not for several at once."""
    from tests.conftest import harness, write_profile

    write_profile(devices_dir, "one-run", {"name": "onnxruntime", "threads": 1},
                  {"warmup_runs": 0, "timed_runs": 1, "adaptive": None})
    out = " ".join(harness("measure", "-d", "one-run", "-d", "fast-onnx", "--arch", "5", env=cli_env).stdout.split())
    assert "no noise estimate (one-run): 1 of 1 visit(s)" in out
    from tests.test_interrupts import _runner_children

    assert not _runner_children()  # the lanes' clean-up was cancelled before it ran: workers outlived the command


def test_measures_progress_stays_off_a_redirected_stdout(cli_env):
    """`measure ... > file` left the bar's last frame (or a spinner frame when there was nothing to do) in the file."""
    from tests.conftest import harness

    for _ in range(2):  # a campaign, then "nothing to do"
        out = harness("measure", "-d", "fast-onnx", "--arch", "0,1", env=cli_env)
        assert "━" not in out.stdout and "eta" not in out.stdout and "0/?" not in out.stdout, out.stdout


def test_a_misspelt_device_gets_a_suggestion_everywhere(small_store, cli_env):
    """Only adapt, measure and devices show suggested the right name; predict and search told the user to measure
    or `transfer --target` the misspelt one."""
    from tests.conftest import harness

    env = {**cli_env, "HARNESS_STORE": str(small_store)}
    typo = "hwnb_edgtpu"
    for cmd in (["srcc", "--device", typo, "--device", "hwnb_fpga"], ["predict", "-d", typo],
                ["compare", typo, "hwnb_fpga"], ["proxy", "-t", typo], ["export", "--device", typo, "-o", str(small_store.parent / "x.csv")],
                ["search", "-t", typo, "--max-ms", "5", "--accuracy", "acc_cifar100_test_200ep"]):
        out = harness(*cmd, env=env, check=False)
        flat = " ".join(out.stderr.split())
        assert out.returncode == 2 and "did you mean 'hwnb_edgetpu'" in flat, (cmd, flat)
        assert f"measure --device {typo}" not in flat and f"--target {typo}" not in flat


def test_export_finds_the_space_of_the_devices_it_is_given(cli_env, tmp_path):
    """`export --device local-onnx` exited 2 ("pick one with --space") in a store that also held FBNet tables the
    device never measured."""
    import pandas as pd

    from tests.conftest import harness

    harness("measure", "-d", "fast-onnx", "--arch", "0,1", env=cli_env)
    fb = pd.DataFrame({"op_idx_list": ["[" + ", ".join(["1"] * 22) + "]", "[" + ", ".join(["2"] * 22) + "]"],
                       "pub_fbnet_ms": [1.0, 2.0]})
    fb.to_csv(tmp_path / "fb.csv", index=False)
    harness("import", str(tmp_path / "fb.csv"), env=cli_env)
    harness("export", "--device", "fast-onnx", "-o", str(tmp_path / "x.csv"), env=cli_env)
    assert list(pd.read_csv(tmp_path / "x.csv")["fast-onnx_ms"].notna()) == [True, True]
    both = harness("export", "-o", str(tmp_path / "y.csv"), env=cli_env, check=False)
    assert both.returncode == 2 and "pick one with --space" in " ".join(both.stderr.split())



def test_backup_copies_a_live_store_with_what_its_wal_still_holds(cli_env, tmp_path):
    """`cp store.db` during a campaign lacked 218 committed measurements still in the -wal file (with the -wal
    copied too, the copy was damaged); nothing said how to back up a live store."""
    import sqlite3

    from harness.results.store import Store
    from tests.conftest import harness

    harness("measure", "-d", "fast-onnx", "--arch", "0,1,2", env=cli_env)
    with Store(cli_env["HARNESS_STORE"]) as writer:  # an open writer: its last commit sits in the -wal file
        writer.db.execute("PRAGMA wal_autocheckpoint = 0")
        harness("measure", "-d", "fast-onnx", "--arch", "3,4", env=cli_env)
        out = harness("backup", str(tmp_path / "b" / "copy.db"), env=cli_env)
        assert "consistent copy" in out.stdout
    copy = sqlite3.connect(tmp_path / "b" / "copy.db")
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    live = sqlite3.connect(cli_env["HARNESS_STORE"]).execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    assert copy.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == live > 0  # every committed one
    same = harness("backup", cli_env["HARNESS_STORE"], env=cli_env, check=False)
    assert same.returncode == 2 and "the store itself" in same.stderr
