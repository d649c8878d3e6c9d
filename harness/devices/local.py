"""Local driver: onnxruntime and LiteRT on this machine, in a worker process.

The worker (``runner.py --serve``) is a separate interpreter so that the runtime's threads and memory
are isolated from the campaign, TensorFlow is never imported on the timing path, a model that hangs
can be killed at the policy's timeout, and a crashing runtime is a device error rather than a crash
of the campaign.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
from collections import deque
from pathlib import Path
from threading import Thread

from harness.devices.runner_client import RunnerDriver
from harness.models.cache import Artifact

RUNNER = Path(__file__).with_name("runner.py")


class PipeChannel:
    """Line channel to a local ``runner.py --serve`` subprocess."""

    def __init__(self) -> None:
        # -P: don't put harness/devices on sys.path (its profile.py would shadow the stdlib module).
        # process_group=0: the terminal's Ctrl-C goes to harness's process group only; harness stops the
        # worker itself (a worker killed by it while starting used to be recorded as a device error).
        self.proc = subprocess.Popen([sys.executable, "-P", str(RUNNER), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                     process_group=0)
        self._stderr: deque[str] = deque(maxlen=40)
        Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self._stderr.append(line.rstrip())

    def send(self, line: str) -> None:
        self.proc.stdin.write(line)  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def receive(self, timeout: float) -> str | None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
            if not sel.select(timeout):
                return None
        return self.proc.stdout.readline()  # type: ignore[union-attr]

    def diagnostics(self) -> str:
        code = self.proc.poll()
        return "\n".join([*list(self._stderr)[-10:], f"(exit code {code})" if code is not None else ""])

    def close(self, force: bool = False) -> None:
        try:
            if self.proc.poll() is None and not force:
                try:
                    self.proc.stdin.close()  # type: ignore[union-attr]
                    self.proc.wait(timeout=2)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        finally:  # even when a second Ctrl-C lands in the wait above: never leave a worker behind
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()


class LocalDriver(RunnerDriver):
    kind = "local"

    def _open_channel(self) -> PipeChannel:
        return PipeChannel()

    def push(self, artifact: Artifact) -> str:
        return str(artifact.path.resolve())
