"""The virtual phone's ``benchmark_model``: times a .tflite for real with LiteRT, in a worker process.

The virtual phone (``harness.sim.adb.server``) cannot run TFLite's arm64 binary, so when its shell is asked to run
the stand-in it has pushed, it hands the parsed flags to this worker: model loading and input set-up
are ``runner.load`` (the local driver's code: LiteRT, never TensorFlow), and the two timed phases follow
``BenchmarkModel::Run`` exactly (at least N runs and at least S seconds, stop past M seconds; integer
microseconds). A separate process, like the real binary: a model that crashes LiteRT kills the worker,
not the phone, and a command cancelled by the host (timeout, closed stream) kills it mid-run.

    python -m harness.sim.adb.bench     # JSON lines on stdin/stdout (started by BenchWorker)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

MAGIC = b"#!/system/bin/sh\n# harness virtual phone: benchmark_model stand-in"


def stand_in_binary() -> bytes:
    """Content of the file the driver pushes as ``benchmark_model`` to a virtual phone."""
    return MAGIC + b"\n# The virtual phone's shell runs harness.sim.adb.bench for this file.\nexit 1\n"


def _now_us() -> int:
    return time.perf_counter_ns() // 1000


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def phase(invoke, min_runs: int, min_secs: float, max_secs: float) -> list[int]:
    """``BenchmarkModel::Run``: run while (runs < min_runs or time < min_secs) and time <= max_secs."""
    now = _now_us()
    min_finish, max_finish = now + int(min_secs * 1e6), now + int(max_secs * 1e6)
    values: list[int] = []
    while (len(values) < min_runs or now < min_finish) and now <= max_finish:
        start = _now_us()
        invoke()
        values.append(_now_us() - start)
        now = _now_us()
    return values


def bench(req: dict[str, Any]) -> dict[str, Any]:
    from harness.devices import runner

    rss0 = _rss_mb()
    t0 = _now_us()
    invoke, _ = runner.load({"runtime": "tflite", "model": req["graph"], "threads": req["threads"],
                             "delegate": req["delegate"], "seed": req.get("seed", 0)})
    init_us = _now_us() - t0
    rss1 = _rss_mb()
    warm = phase(invoke, req["warmup_runs"], req["warmup_min_secs"], req["max_secs"])
    timed = phase(invoke, req["num_runs"], req["min_secs"], req["max_secs"])
    rss2 = _rss_mb()
    mem = {} if None in (rss0, rss1, rss2) else {"mem_init_mb": rss1 - rss0, "mem_overall_mb": rss2 - rss0}
    return {"ok": True, "init_us": init_us, "warmup_us": warm, "timed_us": timed,
            "model_size": os.path.getsize(req["graph"]), **mem}


def handle(req: dict[str, Any]) -> dict[str, Any]:
    try:
        return bench(req)
    except Exception as e:  # the runtime's own errors: a file that is not a model, a bad delegate
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def serve() -> None:
    """The runner's JSON-lines loop (library chatter on stdout goes to stderr), answering with :func:`handle`."""
    from harness.devices import runner

    runner.serve(handle)


class Cancelled(Exception):
    """The command was cancelled (stream closed, connection gone) while the model ran."""


class BenchWorker:
    """One long-lived worker process per virtual phone; killed and restarted when a run is cancelled."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, "-m", "harness.sim.adb.bench"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)

    def run(self, req: dict[str, Any], cancelled: threading.Event) -> dict[str, Any]:
        """Run one request; raises Cancelled (and kills the worker) if ``cancelled`` is set meanwhile."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            done = threading.Event()
            watcher = threading.Thread(target=self._watch, args=(proc, cancelled, done), daemon=True)
            watcher.start()
            try:
                proc.stdin.write(json.dumps(req) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
            finally:
                done.set()
            if cancelled.is_set():
                self._kill()
                raise Cancelled()
            if not line:
                code = proc.wait()
                self._proc = None
                return {"ok": False, "crashed": True, "error": f"worker died with exit code {code}"}
            return json.loads(line)

    def _watch(self, proc: subprocess.Popen, cancelled: threading.Event, done: threading.Event) -> None:
        while not done.is_set():
            if cancelled.wait(0.05):
                proc.kill()
                return

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    serve()
