"""Shared fixtures: fast device profiles in a temp ./devices, a temp store and model cache, and `harness()`,
which runs the CLI in-process (or the real entry point in a subprocess)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.devices.registry import ProfileRegistry

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FAST_POLICY = {"warmup_runs": 1, "timed_runs": 3, "min_seconds": 0.0, "cooldown_seconds": 0.0,
               "timeout_seconds": 60}


def write_profile(folder: Path, name: str, runtime: dict, policy: dict | None = None, **extra) -> Path:
    body = {"name": name, "description": f"test profile {name}", "connection": {"kind": "local"},
            "runtime": runtime, "policy": {**FAST_POLICY, **(policy or {})}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture
def devices_dir(tmp_path: Path) -> Path:
    """A user devices folder with quick local profiles (1 thread: this machine has 2 cores)."""
    d = tmp_path / "devices"
    d.mkdir()
    write_profile(d, "fast-onnx", {"name": "onnxruntime", "threads": 1})
    write_profile(d, "fast-tflite", {"name": "tflite", "threads": 1})
    return d


@pytest.fixture
def registry(devices_dir: Path) -> ProfileRegistry:
    return ProfileRegistry(devices_dir)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "results" / "harness.db"


FEATURE_SEED = Path(__file__).parent / "data" / "features"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One model cache for the session: exports are deterministic, so tests may share it. Seeded with the graph
    features of the whole NB201 space (tests/data/features, checked by test_feature_seed.py): tests that suggest
    or predict over all 15,625 architectures would otherwise rebuild them (~25 CPU-s). A seed whose name no
    longer matches the code's feature version is simply not found, and the features are computed."""
    cache = tmp_path_factory.mktemp("model-cache")
    (cache / "features").mkdir()
    for seed in FEATURE_SEED.glob("*.npz"):
        shutil.copy(seed, cache / "features" / seed.name)
    return cache


@pytest.fixture(autouse=True, scope="session")
def _cli_defaults_in_the_session_cache(cache_dir: Path):
    """CLI commands a test runs without --cache-dir use the session cache, never the checkout's models/cache."""
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(cache_dir)
    yield
    if old is None:
        os.environ.pop("HARNESS_CACHE", None)
    else:
        os.environ["HARNESS_CACHE"] = old


@pytest.fixture
def cli_env(devices_dir: Path, store_path: Path, cache_dir: Path) -> dict[str, str]:
    """Environment for running the real `harness` entry point in a subprocess."""
    return {**os.environ, "HARNESS_DEVICES": str(devices_dir), "HARNESS_STORE": str(store_path),
            "HARNESS_CACHE": str(cache_dir), "COLUMNS": "120"}


def harness(*args: str, env: dict, check: bool = True, subprocess_: bool = False,
            **kw) -> subprocess.CompletedProcess:
    """Run the `harness` CLI with ARGS and ``env``; raise with its output on failure.

    In-process through typer's CliRunner by default (the same typer app, option parsing, error messages and exit
    codes; saves ~1.5 CPU-s of imports per call). ``subprocess_=True`` (or ``cwd=``) runs ``python -m harness``
    for tests where the real entry point or the process itself is what is tested."""
    if subprocess_ or kw:
        proc = subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True, text=True,
                              timeout=300, **kw)
    else:
        proc = _invoke_in_process(list(args), env)
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _invoke_in_process(args: list[str], env: dict) -> subprocess.CompletedProcess:
    from typer.testing import CliRunner

    from harness.cli import app, common

    # Rich reads COLUMNS once, when the console is made: give each call the width its env asks for.
    width = int(env.get("COLUMNS", "80"))
    saved = common.console._width, common.err._width
    common.console.width = common.err.width = width
    try:
        # env is the whole environment the command sees (CliRunner only sets/overrides keys, so unset the rest)
        changes = {k: v for k, v in env.items() if os.environ.get(k) != v}
        changes.update({k: None for k in os.environ if k not in env})
        result = CliRunner().invoke(app, args, env=changes, catch_exceptions=False)
    finally:
        common.console._width, common.err._width = saved
    return subprocess.CompletedProcess(["harness", *args], result.exit_code, result.stdout, result.stderr)


@pytest.fixture(autouse=True)
def _no_leftover_ctrl_c():
    """A test that presses Ctrl-C in this process must not leave it counted for a later test's campaign."""
    yield
    import signal

    from harness import interrupts
    from harness.cli import common

    interrupts.reset()
    common._interrupt_said = False
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
