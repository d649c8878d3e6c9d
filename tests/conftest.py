"""Shared fixtures: fast device profiles in a temp ./devices, a temp store and model cache, and `harness()`,
which runs the real entry point in a subprocess."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One model cache for the session: exports are deterministic, so tests may share it."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def cli_env(devices_dir: Path, store_path: Path, cache_dir: Path) -> dict[str, str]:
    """Environment for running the real `harness` entry point in a subprocess."""
    return {**os.environ, "HARNESS_DEVICES": str(devices_dir), "HARNESS_STORE": str(store_path),
            "HARNESS_CACHE": str(cache_dir), "COLUMNS": "120"}


def harness(*args: str, env: dict, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m harness ARGS`` (the real entry point, as a user would); raise with its output on failure."""
    proc = subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True, text=True,
                          timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


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
