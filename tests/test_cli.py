"""The CLI through its real entry point: help, devices, measure, export, and the crash cases."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app
from tests.conftest import harness, write_profile

runner = CliRunner()
COMMANDS = [[], ["devices"], ["devices", "list"], ["devices", "show"], ["devices", "check"], ["measure"],
            ["export"], ["campaigns"], ["spaces"], ["demo"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_useful_help(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output) > 200
    uses_store = bool(cmd) and cmd[0] not in ("devices", "spaces")
    assert ("--store" in result.output) == uses_store, f"{cmd}: --store only where the command reads the store"


def test_devices_list_show_check(cli_env):
    out = harness("devices", "list", env=cli_env).stdout
    for name in ("local-onnx", "local-tflite", "s5e", "pixel3", "pixel4", "jetson-nano", "jetson-tx2", "raspi4",
                 "fast-onnx"):
        assert name in out
    shown = harness("devices", "show", "local-onnx", env=cli_env).stdout
    assert "timed_runs: 50" in shown and "built-in" in shown
    checked = harness("devices", "check", "local-onnx", env=cli_env).stdout
    assert "ok" in checked and "onnxruntime" in checked
    # real-phone profiles are not contacted here; the virtual phone answers like one
    assert "s5e.local:5555" in harness("devices", "show", "s5e", env=cli_env).stdout
    vp = harness("devices", "check", "virtual-phone", env=cli_env)
    assert "ok" in vp.stdout and "benchmark_model sha256:" in vp.stdout


def test_broken_profile_gives_one_clear_error(cli_env, devices_dir):
    (devices_dir / "oops.yaml").write_text("name: oops\nconnection: {kind: local}\nruntime: {name: tflite, thred: 1}\n")
    p = harness("measure", "--device", "oops", "--sample", "1", env=cli_env, check=False)
    assert p.returncode == 2
    assert "oops.yaml" in p.stderr and "runtime.thred" in p.stderr and "did you mean 'threads'" in p.stderr
    assert "Traceback" not in p.stderr
    listed = harness("devices", "list", env=cli_env, check=False)
    assert listed.returncode == 1 and "local-onnx" in listed.stdout and "oops.yaml" in listed.stderr


@pytest.mark.slow
def test_measure_then_export_csv_and_parquet(cli_env, tmp_path):
    harness("measure", "--device", "fast-onnx", "--space", "nb201", "--sample", "3", "--seed", "0", env=cli_env)
    harness("measure", "--device", "fast-tflite", "--arch", "0,9930", "--arch",
            "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", env=cli_env)
    again = harness("measure", "--device", "fast-onnx", "--sample", "3", "--seed", "0", env=cli_env)
    assert "nothing to do" in " ".join(again.stdout.split())  # wrapped anywhere by the console
    csv = tmp_path / "out.csv"
    harness("export", "--out", str(csv), env=cli_env)
    df = pd.read_csv(csv)
    ident = ["graph", "exporter", "degenerate", "suspect", "visits"]  # identity of each measured model; suspect visits
    assert df.columns.tolist() == ["nb201_index", "arch_str", "fast-onnx_ms", *[f"fast-onnx_{c}" for c in ident],
                                   "fast-tflite_ms", *[f"fast-tflite_{c}" for c in ident]]
    assert set(df["fast-tflite_graph"].dropna()) == {"prune"} and df["fast-tflite_degenerate"].sum() == 1
    assert df["fast-onnx_ms"].notna().sum() == 3 and df["fast-tflite_ms"].notna().sum() == 3
    assert (df[["fast-onnx_ms", "fast-tflite_ms"]].stack().dropna() > 0).all()
    pq = tmp_path / "out.parquet"
    harness("export", "--out", str(pq), "--device", "fast-tflite", env=cli_env)
    assert pd.read_parquet(pq).columns.tolist() == ["nb201_index", "arch_str", "fast-tflite_ms",
                                                    *[f"fast-tflite_{c}" for c in ident]]
    bad = harness("export", "--out", str(tmp_path / "x.xlsx"), env=cli_env, check=False)
    assert bad.returncode == 2 and "csv" in bad.stderr


def test_stale_measurements_are_reported_and_remeasured_on_request(cli_env, tmp_path, store_path):
    def cli(*args: str) -> str:
        res = runner.invoke(app, list(args), env=cli_env)
        assert res.exit_code == 0, res.output
        return " ".join(res.output.split())  # rich wraps lines

    cli("measure", "--device", "fast-onnx", "--arch", "0,1")
    with sqlite3.connect(store_path) as db:  # as if measured before exporter version 2
        db.execute("UPDATE measurements SET exporter_version = NULL, graph_mode = NULL WHERE id = 1")
    camps = cli("campaigns")
    assert "1 measurement(s) are stale" in camps and "--remeasure-stale" in camps
    out = cli("export", "--out", str(tmp_path / "t.csv"))
    assert "stale" in out and "--remeasure-stale" in out
    again = cli("measure", "--device", "fast-onnx", "--arch", "0,1")
    assert "nothing to do" in again and "1 of these architectures were measured" in again
    assert "1 measured" in cli("measure", "--device", "fast-onnx", "--arch", "0,1", "--remeasure-stale")
    keep = cli("measure", "--device", "fast-onnx", "--arch", "1", "--graph", "keep")
    assert "(graph: keep): 1 measured" in keep
    bad = runner.invoke(app, ["measure", "--device", "fast-onnx", "--arch", "0", "--graph", "fold"], env=cli_env)
    assert bad.exit_code != 0 and "prune, keep" in bad.output and "Traceback" not in bad.output


def test_arch_file(cli_env, tmp_path):
    picks = tmp_path / "picks.csv"
    pd.DataFrame({"nb201_index": [5, 6], "arch_str": ["", ""]}).to_csv(picks, index=False)
    harness("measure", "--device", "fast-onnx", "--arch-file", str(picks), env=cli_env)
    with sqlite3.connect(cli_env["HARNESS_STORE"]) as db:
        assert db.execute("SELECT COUNT(*) FROM measurements WHERE status='ok'").fetchone()[0] == 2
    listed = harness("campaigns", env={**cli_env, "COLUMNS": "200"}).stdout
    assert "runs/model" in listed and "per-run" in listed and " yes " in listed  # the store says runs are kept


def _committed(store: str) -> int:
    if not Path(store).exists():
        return 0
    try:
        with sqlite3.connect(store, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM measurements WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _start_slow_campaign(cli_env, devices_dir, n: int) -> subprocess.Popen:
    # a cool-down makes each model take ~0.3 s, so the kill lands mid-campaign
    write_profile(devices_dir, "slowish", {"name": "onnxruntime"}, {"cooldown_seconds": 0.3})
    return subprocess.Popen([sys.executable, "-m", "harness", "measure", "--device", "slowish", "--sample", str(n),
                             "--seed", "1"], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(store: str, at_least: int, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.time() + limit
    while _committed(store) < at_least:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "campaign made no progress"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_mid_campaign_loses_nothing_and_resume_completes(cli_env, devices_dir):
    store, n = cli_env["HARNESS_STORE"], 12
    proc = _start_slow_campaign(cli_env, devices_dir, n)
    _wait_for(store, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _committed(store)
    assert 3 <= killed_at < n
    with sqlite3.connect(store) as db:
        before = set(db.execute("SELECT id, arch_id, median_ms FROM measurements").fetchall())
    resumed = harness("measure", "--device", "slowish", "--sample", str(n), "--seed", "1", env=cli_env)
    assert f"{n - killed_at} measured" in resumed.stdout and f"{killed_at} already" in resumed.stdout
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT id, arch_id, median_ms FROM measurements WHERE status = 'ok'").fetchall()
        statuses = dict(db.execute("SELECT id, status FROM campaigns").fetchall())
        orphans = db.execute("SELECT COUNT(*) FROM runs WHERE measurement_id NOT IN "
                             "(SELECT id FROM measurements)").fetchone()[0]
    assert before <= set(rows), "a committed measurement was lost or changed"
    assert len(rows) == n and len({r[1] for r in rows}) == n, "duplicates or missing architectures"
    assert orphans == 0
    assert statuses == {1: "interrupted", 2: "finished"}


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resumes(cli_env, devices_dir):
    store, n = cli_env["HARNESS_STORE"], 12
    proc = _start_slow_campaign(cli_env, devices_dir, n)
    _wait_for(store, 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and "rerun the same command" in err and "Traceback" not in err
    done = _committed(store)
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT status FROM campaigns").fetchone()[0] == "interrupted"
    resumed = harness("measure", "--device", "slowish", "--sample", str(n), "--seed", "1", env=cli_env)
    assert f"{n - done} measured" in resumed.stdout
    assert _committed(store) == n
