"""The one interface every driver implements, and the registry of drivers (and their connection models) by kind.

A measurement is four steps (as in TVM's RPC runner): ``prepare`` the device once, ``push`` each model,
``run`` it, ``cleanup``. What ``run`` returns is a declared capability, checked by the conformance suite:
``per_run_timings`` drivers return every timed and warm-up run; the others (a phone's ``benchmark_model``
prints statistics only) return the tool's own statistics, one aggregate value and the run count — never
invented runs. Failures are typed
:class:`~harness.errors.DriverError` subclasses with a kind, never a made-up latency.
"""

from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.devices.profile import Connection, Profile
from harness.errors import UnknownNameError
from harness.models.cache import Artifact
from harness.models.spaces.base import Arch


@dataclass
class RunResult:
    """Everything one model's measurement produced on the device."""

    timed_ms: list[float]   # every timed run; for a statistics-only driver its one aggregate (see per_run)
    warmup_ms: list[float] = field(default_factory=list)
    init_ms: float | None = None
    conditions_before: dict[str, Any] = field(default_factory=dict)
    conditions_after: dict[str, Any] = field(default_factory=dict)
    wait_ms: list[float] | None = None  # per run: time our threads waited for a CPU (None: not observable)
    stop_rule: str | None = None  # fixed | ci_reached | max_runs | max_seconds
    neighbours: dict[str, Any] | None = None  # other processes' CPU and steal during the model
    reference_ms: list[float] | None = None  # the paired reference model, one run before each timed run
    reference_wait_ms: list[float] | None = None
    energy_mj: float | None = None  # per inference (per batch), when the device exposes energy
    energy_method: str | None = None  # how: nvml-energy, jetson-ina, rapl, battery (coarse)
    energy_facts: dict[str, Any] | None = None  # the energy pass: runs, window_s, counter steps; why when no energy
    per_run: bool = True        # False: timed_ms holds an aggregate, not runs
    n_runs: int | None = None   # timed runs done on the device; len(timed_ms) when per_run

    def __post_init__(self) -> None:
        if not self.timed_ms:
            raise ValueError("a RunResult needs at least one timed run")
        if self.n_runs is None:
            if not self.per_run:
                raise ValueError("a statistics-only RunResult must say how many runs it summarises (n_runs)")
            self.n_runs = len(self.timed_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.timed_ms)

    def summary(self) -> dict[str, float | None]:
        return run_stats(self.timed_ms)


def _times(values: Any, positive: bool = True) -> bool:
    """A list of finite real numbers (above 0, or at least 0)."""
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 if positive else v >= 0)
        for v in values)


def result_problem(result: Any) -> str | None:
    """What makes a driver's answer no measurement, said before anything reaches the store (None: sound).

    The runner drivers' answers are checked on the wire (harness.devices.protocol); a plug-in driver returns a
    RunResult directly, and its NaN, text or negative runs were tracebacks deep in the statistics or "a bug:
    please report it" from the store, while a negative init time, a run count of 1000 beside 5 runs or a NaN
    energy went in."""
    if not isinstance(result, RunResult):
        return f"a {type(result).__name__} instead of a RunResult"
    if not result.timed_ms or not _times(result.timed_ms):
        return f"timed runs that are not all finite numbers above 0 ms: {str(result.timed_ms)[:80]}"
    for name in ("warmup_ms", "reference_ms", "wait_ms", "reference_wait_ms"):
        value = getattr(result, name)
        if value is not None and not _times(value, positive=name not in ("wait_ms", "reference_wait_ms")):
            return f"{name} that are not all finite numbers (ms): {str(value)[:80]}"
    if result.init_ms is not None and not _times([result.init_ms], positive=False):
        return f"init_ms {result.init_ms!r}: a load time is a finite number of ms, at least 0"
    if result.energy_mj is not None and not _times([result.energy_mj]):
        return f"energy_mj {result.energy_mj!r}: energy per inference is a finite number of mJ above 0"
    n = result.n_runs
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or (result.per_run and n != len(result.timed_ms)):
        return (f"n_runs {n!r} beside {len(result.timed_ms)} timed run(s): with per_run it is their count, "
                "otherwise how many runs the aggregate summarises")
    return None


def run_stats(runs: Sequence[float]) -> dict[str, float | None]:
    """Median, mean, spread, min and p90 of a list of timed runs. One run has no spread (None, not 0)."""
    xs = sorted(runs)
    return {
        "median_ms": statistics.median(xs),
        "mean_ms": statistics.fmean(xs),
        "std_ms": statistics.pstdev(xs) if len(xs) > 1 else None,
        "min_ms": xs[0],
        "p90_ms": xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))],
    }


@dataclass
class CheckReport:
    """Outcome of ``harness devices check``: reachable, runtime present, versions."""

    ok: bool
    reachable: bool | None  # None: not tried (the profile stopped the driver before it contacted the device)
    runtime: str
    runtime_version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    warnings: list[str] = field(default_factory=list)  # measurable, but the conditions need attention


class Driver(ABC):
    """Base class; subclasses set ``kind`` to the profile's ``connection.kind``."""

    kind: ClassVar[str]
    # True: run() returns every timed and warm-up run. False: the device's tool reports statistics only;
    # run() returns a RunResult with per_run=False, n_runs and the tool's own summary().
    per_run_timings: ClassVar[bool] = True
    # True: run() obeys an adaptive policy (stops between adaptive.min_runs and max_runs, by the CI rule). False:
    # the device's tool times a fixed count, ``policy.timed_runs`` per visit whatever ``adaptive`` says (the
    # campaign says so); the conformance suite checks whichever the driver declares.
    stops_adaptively: ClassVar[bool] = False

    def __init__(self, profile: Profile):
        self.profile = profile
        # whether the next run() meters energy (policy.energy): the campaign turns it off for visits that need no
        # energy pass (policy.energy_visits) and for sentinel checks; drivers whose energy costs a pass read it
        self.meter_energy = True

    @abstractmethod
    def check(self) -> CheckReport:
        """Probe the device without measuring; reports problems instead of raising."""

    @abstractmethod
    def prepare(self) -> dict[str, Any]:
        """Connect and return the session's static conditions (runtime version, threads, CPU, OS...)."""

    def push_arch(self, arch: Arch) -> str | None:
        """Drivers that answer by architecture rather than by model file (replay) return a reference here,
        and the campaign skips the export; every other driver returns None."""
        return None

    def cannot_answer(self, space: str, archs: list[Arch]) -> str | None:
        """Why a campaign of ``archs`` would be nothing but failures, when the device can tell before it starts
        (a replay table of another space); None to go ahead, as every device that measures models does."""
        return None

    @abstractmethod
    def push(self, artifact: Artifact) -> str:
        """Make the model available on the device; returns the device-side reference."""

    @abstractmethod
    def run(self, model_ref: str) -> RunResult:
        """Time the model per the profile's policy; raises DriverError subclasses on failure."""

    def stability(self) -> dict[str, Any]:
        """Facts that endanger stable timing (see harness.measure.stability); {} when not observable."""
        return {}

    def state(self) -> dict[str, Any]:
        """Dynamic conditions now (temperatures_c, cpu_freq_mhz, loadavg_1m, ...) for device-state gating.

        Drivers that cannot observe the device return {} and gating records "not observable".
        """
        return {}

    @abstractmethod
    def cleanup(self) -> None:
        """Release the connection and worker processes. Safe to call twice."""

    def abort(self) -> None:
        """Stop at once, abandoning a model in flight (after Ctrl-C). Drivers that can, override it."""
        self.cleanup()

    def __enter__(self) -> Driver:
        self.prepare()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# connection kind -> (driver, the pydantic model of its profile's `connection:` block), each a class or a
# "module:Class" imported only when used. Adding a driver is one module plus one line here (or one
# register_driver call from your own code, or a plug-in: harness.plugins).
DRIVERS: dict[str, tuple[str | type, str | type]] = {
    "local": ("harness.devices.local:LocalDriver", "harness.devices.profile:LocalConnection"),
    "ssh": ("harness.devices.ssh:SSHDriver", "harness.devices.profile:SSHConnection"),
    "adb": ("harness.devices.adb:ADBDriver", "harness.devices.profile:ADBConnection"),
    "replay": ("harness.devices.replay:ReplayDriver", "harness.devices.replay:ReplayConnection"),
    "sleep": ("harness.sim.sleep:SleepDriver", "harness.sim.sleep:SleepConnection"),
}


def checked(driver: Driver) -> CheckReport:
    """``driver.check()``, with a driver's own bug (a plug-in's KeyError, an OSError, a None) as a failed report
    that names the driver, not a traceback (or "error: cannot open /dev/fake" naming no device)."""
    from harness.errors import HarnessError

    kind = driver.profile.connection.kind
    try:
        report = driver.check()
    except HarnessError:
        raise
    except Exception as e:
        return CheckReport(False, None, driver.profile.runtime.name,
                           message=f"{driver.profile.name}: the {kind} driver's check raised {type(e).__name__}: {e}")
    if not isinstance(report, CheckReport):
        return CheckReport(False, None, driver.profile.runtime.name,
                           message=f"{driver.profile.name}: the {kind} driver's check returned a "
                                   f"{type(report).__name__}, not a CheckReport")
    return report


def prepared(driver: Driver) -> dict[str, Any]:
    """``driver.prepare()``, with a driver's own bug as DriverUnavailable naming it (a traceback before)."""
    from harness.errors import DriverUnavailable, HarnessError

    kind = driver.profile.connection.kind
    try:
        conditions = driver.prepare()
    except (HarnessError, OSError):  # OSError: the machine's (a full disk), said with its file as the CLI says it
        raise
    except Exception as e:
        raise DriverUnavailable(f"{driver.profile.name}: the {kind} driver's prepare raised {type(e).__name__}: "
                                f"{e}") from e
    if not isinstance(conditions, dict):
        raise DriverUnavailable(f"{driver.profile.name}: the {kind} driver's prepare returned a "
                                f"{type(conditions).__name__}, not a dict of conditions")
    return conditions


# (connection kind, runtime) pairs measured by a tool on the device rather than the Python runner
RUNTIME_DRIVERS: dict[tuple[str, str], str] = {
    ("local", "trtexec"): "harness.devices.trtexec:LocalTrtexecDriver",
    ("ssh", "trtexec"): "harness.devices.trtexec:SSHTrtexecDriver",
    ("ssh", "tflite:benchmark_model"): "harness.devices.ssh_benchmark:SSHBenchmarkModelDriver",
}


def driver_key(profile: Profile) -> tuple[str, str]:
    """(connection kind, runtime) — ``tflite:benchmark_model`` when an SSH profile names the binary."""
    conn, runtime = profile.connection, profile.runtime.name
    if conn.kind == "ssh" and runtime == "tflite" and getattr(conn, "benchmark_model", None):
        return conn.kind, "tflite:benchmark_model"
    return conn.kind, runtime

def register_driver(kind: str, driver: str | type, connection: str | type, *, replace: bool = False) -> None:
    """Add a driver: profiles with ``connection.kind: KIND`` validate against ``connection`` (a
    :class:`~harness.devices.profile.Connection` subclass) and are measured by ``driver``; each a class or its
    ``"module:Class"`` path. A kind that is taken is replaced only with ``replace=True``."""
    import typing

    from harness.plugins import PluginError, check_new_name

    if isinstance(driver, type):  # checked here, where the plug-in is named, not at its first measurement
        import inspect

        if not issubclass(driver, Driver):
            raise PluginError(f"register_driver({kind!r}, ...): {driver.__qualname__} is no "
                              "harness.devices.driver.Driver subclass")
        if inspect.isabstract(driver):
            raise PluginError(f"register_driver({kind!r}, ...): {driver.__qualname__} does not implement "
                              f"{', '.join(sorted(driver.__abstractmethods__))} (every method Driver marks abstract)")
    check_new_name(DRIVERS, kind, (driver, connection), "connection kind", replace)
    field = getattr(connection, "model_fields", {}).get("kind") if isinstance(connection, type) else None
    allowed = typing.get_args(field.annotation) if field is not None else ()
    if allowed and kind not in allowed:  # profiles of this kind would fail with "Input should be 'local'"
        raise PluginError(f"register_driver({kind!r}, ...): its connection model {connection.__qualname__} "
                          f"declares kind {' or '.join(map(repr, allowed))}; give it its own subclass with "
                          f"kind: Literal[{kind!r}]")
    DRIVERS[kind] = (driver, connection)


def _load(ref: str | type, what: str = "a driver") -> type:
    from harness.plugins import load_ref

    return load_ref(ref, what)


def _registered(kind: str) -> tuple[str | type, str | type]:
    if kind not in DRIVERS:
        from harness.plugins import load_plugins

        load_plugins()
    if kind not in DRIVERS:
        raise UnknownNameError("connection kind", kind, list(DRIVERS))
    return DRIVERS[kind]


def driver_class(kind: str) -> type[Driver]:
    return _load(_registered(kind)[0], f"the driver of connection kind {kind!r}")


def connection_model(kind: str) -> type[Connection]:
    return _load(_registered(kind)[1], f"the connection model of kind {kind!r}")


def make_driver(profile: Profile) -> Driver:
    special = RUNTIME_DRIVERS.get(driver_key(profile))
    if special:
        return _load(special)(profile)
    return driver_class(profile.connection.kind)(profile)
