"""Replay driver: a device that answers from a published latency table, through the ordinary campaign path.

It lets the closed loop (``harness transfer``) be rehearsed and benchmarked on public data before the
real device arrives: campaigns, resume, the store and every analysis see it like any other device. An
architecture the table lacks (or has no value for) is a ``device_error`` failure, never a made-up number.
Noise, when asked for, is log-normal per timed run and seeded by (seed, architecture, run), so a rerun
answers exactly the same.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.devices.driver import CheckReport, Driver, RunResult
from pydantic import Field, field_validator

from harness.devices.profile import Connection, Profile
from harness.errors import DeviceError, NotMeasurable
from harness.measure.policy import adaptive_stop
from harness.models.cache import Artifact, sha256_file
from harness.models.spaces.base import Arch

RUNTIME = "replay"


class ReplayConnection(Connection):
    """A device that answers from a published latency table (rehearsals, the closed loop's benchmark).

    Each architecture's "measurement" is its value in ``column`` of ``table`` (a tidy CSV/Parquet as in
    ``../shared/data``), optionally with seeded log-normal noise per timed run. The runtime block of such a
    profile is optional.
    """

    kind: Literal["replay"]
    table: str = Field(min_length=1, description="CSV/CSV.GZ/Parquet file; relative paths from the working directory")
    column: str = Field(min_length=1, description="the latency column to answer from, e.g. hwnb_pixel3_ms")
    noise: float = Field(0.0, ge=0, le=1, description="relative run-to-run noise (log-normal sigma); 0 = exact")
    seed: int = Field(0, description="seed of the noise (same seed, same answers)")

    @field_validator("column")
    @classmethod
    def _latency_column(cls, v: str) -> str:
        # an accuracy or key column "measured" arch 1 at 70.29 ms, and a whole loop ran on it
        if not v.endswith("_ms"):
            raise ValueError(f"{v!r} is not a latency column: name one that ends in _ms (milliseconds, as harness "
                             "import reads them), e.g. hwnb_pixel3_ms")
        return v


class ReplayTable:
    """``column`` of ``table`` as {architecture key: ms}; NaN cells are left out (the source had no value)."""

    def __init__(self, table: str | Path, column: str):
        from harness.results.importer import ImportFileError, _archs, _numeric, detect_space, read_table

        self.path = Path(table).expanduser()
        if not self.path.is_file():
            where = "" if self.path.is_absolute() else f" (a relative path is read from the working directory: " \
                                                        f"looked for {self.path.resolve()})"
            raise DeviceError(f"replay table {self.path} does not exist{where}; set connection.table to a "
                              "CSV/Parquet latency table (e.g. ../shared/data/hwnasbench/...csv.gz), or an absolute "
                              "path to run from anywhere")
        try:
            df = read_table(self.path)
            if column not in df.columns:
                have = [c for c in df.columns if c.endswith("_ms")]
                raise DeviceError(f"replay table {self.path} has no column {column!r}; latency columns: "
                                  f"{', '.join(have) or '(none)'}")
            self.space = detect_space(list(df.columns), self.path)
            archs = _archs(df, self.space, self.path)
            values = _numeric(df, column, self.path).to_numpy()
        except ImportFileError as e:
            raise DeviceError(f"replay table unusable: {e}") from None
        ok = np.isfinite(values) & (values > 0)
        self.ms = {a.key: float(v) for a, v, good in zip(archs, values, ok) if good}
        # a value that is there but no latency (<= 0, infinite): "no value" would send the user looking for a gap
        self.unusable = {a.key: float(v) for a, v, good in zip(archs, values, ok) if not good and not np.isnan(v)}
        self.column = column

    def lookup(self, arch: Arch) -> float:
        if arch.space != self.space:
            raise DeviceError(f"replay table {self.path.name} holds {self.space} architectures, not {arch.space}")
        if arch.key in self.unusable:
            raise NotMeasurable(f"replay table {self.path.name} has {self.unusable[arch.key]:g} in {self.column} for "
                              f"{arch.label}: not a latency (it must be above 0 ms)")
        if arch.key not in self.ms:
            raise NotMeasurable(f"replay table {self.path.name} has no {self.column} value for {arch.label}")
        return self.ms[arch.key]


class ReplayDriver(Driver):
    kind = "replay"
    stops_adaptively = True

    def __init__(self, profile: Profile):
        super().__init__(profile)
        conn = profile.connection
        assert isinstance(conn, ReplayConnection)
        self.conn = conn
        self._table: ReplayTable | None = None

    @property
    def table(self) -> ReplayTable:
        if self._table is None:
            self._table = ReplayTable(self.conn.table, self.conn.column)
        return self._table

    def check(self) -> CheckReport:
        try:
            t = self.table
        except DeviceError as e:
            return CheckReport(False, False, RUNTIME, message=str(e))
        return CheckReport(True, True, RUNTIME, details={"table": str(t.path), "column": t.column,
                                                         "space": t.space, "architectures": len(t.ms)},
                           message=f"{len(t.ms)} {t.space} architectures in {t.path.name}:{t.column}")

    def prepare(self) -> dict[str, Any]:
        t = self.table
        return {"runtime": RUNTIME, "runtime_version": None, "threads": None, "machine": platform.machine(),
                "replay_table": str(t.path), "replay_table_sha256": sha256_file(t.path), "replay_column": t.column,
                "replay_space": t.space, "noise": self.conn.noise, "noise_seed": self.conn.seed}

    def cannot_answer(self, space: str, archs: list[Arch]) -> str | None:
        """Why this campaign would be all failures, said before it starts: the table is of another space, or it
        has a value for none of the architectures asked for. (Some missing is normal: each is a device_error.)"""
        t = self.table
        if space != t.space:
            return (f"replay table {t.path.name} holds {t.space} architectures, not {space}; measure this device "
                    f"with --space {t.space}")
        if archs and not any(a.key in t.ms for a in archs):
            return (f"replay table {t.path.name}:{t.column} has no value for any of the {len({a.key for a in archs})} {space} "
                    "architecture(s) asked for; pick from the table's rows (harness suggest, or --arch-file with "
                    "its keys)")
        return None

    def push_arch(self, arch: Arch) -> str | None:
        self.table.lookup(arch)  # a missing architecture fails here, before anything is "timed"
        return arch.key

    def push(self, artifact: Artifact) -> str:
        raise DeviceError("the replay driver answers by architecture, not by model file")

    def run(self, model_ref: str) -> RunResult:
        if model_ref not in self.table.ms:
            raise NotMeasurable(f"replay table has no value for {model_ref}")
        value = self.table.ms[model_ref]
        policy = self.profile.policy
        ad = policy.adaptive
        n, warm = (policy.timed_runs if ad is None else ad.max_runs), policy.warmup_runs
        if self.conn.noise > 0:
            digest = hashlib.sha256(f"{self.conn.seed}|{self.conn.column}|{model_ref}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            factors = np.exp(rng.normal(0.0, self.conn.noise, n + warm))
        else:
            factors = np.ones(n + warm)
        runs = (value * factors).tolist()
        timed, stop = runs[warm:], "fixed" if ad is None else "max_runs"
        if ad is not None:  # the runner's rule on the replayed runs (no time passes: max_seconds never stops it)
            for i in range(1, len(timed) + 1):
                rule = adaptive_stop(timed[:i], 0.0, ad)
                if rule:
                    timed, stop = timed[:i], rule
                    break
        return RunResult(timed_ms=timed, warmup_ms=runs[:warm], stop_rule=stop)

    def cleanup(self) -> None:
        pass
