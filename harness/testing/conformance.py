"""The driver conformance suite, shipped with the package (as Optuna ships its storage tests).

Every driver's test module subclasses :class:`DriverConformance` and provides two fixtures:

* ``base_profile`` -> a :class:`Profile` for the device under test;
* ``make_driver`` -> a callable ``(profile) -> Driver`` (it may wrap a test server's lifetime).

The suite then checks what the campaign relies on: every timed run comes back, policy is obeyed,
conditions are recorded, failures are typed and the driver recovers from them, hostile file names are
data and never code.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.devices.conditions import check_conditions
from harness.devices.driver import Driver
from harness.devices.profile import Profile
from harness.errors import DeviceError, DriverError, MeasurementTimeout
from harness.measure.policy import Adaptive
from harness.models.cache import Artifact, ModelCache
from harness.models.spaces import get_space

SMALL_ARCH = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
HOSTILE_NAMES = ["model with spaces", "it's \"quoted\"", "semi;colon", "$(touch PWNED)", "`touch PWNED`"]


def with_policy(profile: Profile, **policy) -> Profile:
    if "timed_runs" in policy or "min_seconds" in policy:  # a counted policy is a fixed one (see Policy)
        policy.setdefault("adaptive", None)
    return profile.model_copy(update={"policy": profile.policy.model_copy(update=policy)})


class DriverConformance:
    """Tests every driver must pass. Subclasses provide ``base_profile`` and ``make_driver`` fixtures."""

    fast_policy = {"warmup_runs": 2, "timed_runs": 5, "min_seconds": 0.0, "timeout_seconds": 60.0}

    @pytest.fixture
    def profile(self, base_profile: Profile) -> Profile:
        return with_policy(base_profile, **self.fast_policy)

    @pytest.fixture
    def driver(self, make_driver: Callable[[Profile], Driver], profile: Profile) -> Iterator[Driver]:
        d = make_driver(profile)
        d.prepare()
        yield d
        d.cleanup()

    @pytest.fixture
    def artifact(self, tmp_path_factory, profile: Profile) -> Artifact:
        space = get_space("nb201")
        cache = ModelCache(tmp_path_factory.mktemp("conformance-cache"))
        return cache.get(space.build(space.parse(SMALL_ARCH)), profile.runtime.model_format)

    # --- the contract -------------------------------------------------------------------
    def test_prepare_reports_runtime_and_threads(self, make_driver, profile):
        d = make_driver(profile)
        try:
            cond = d.prepare()
        finally:
            d.cleanup()
        assert cond["runtime"] == profile.runtime.name
        assert cond["runtime_version"], "runtime version must be recorded"
        assert cond["threads"] == profile.runtime.threads
        assert check_conditions(cond) == [], "static conditions must follow harness.devices.conditions"

    def test_run_returns_every_timed_and_warmup_run(self, driver, artifact, profile):
        """Per-run drivers return each run; statistics-only drivers (``per_run_timings = False``) say so, count
        the runs the device did and return its statistics, never invented runs."""
        result = driver.run(driver.push(artifact))
        assert result.per_run is type(driver).per_run_timings
        assert result.n_runs == profile.policy.timed_runs
        s = result.summary()
        if result.per_run:
            assert len(result.timed_ms) == profile.policy.timed_runs
            assert len(result.warmup_ms) == profile.policy.warmup_runs
            assert all(x > 0 for x in result.timed_ms + result.warmup_ms)
            assert min(result.timed_ms) <= result.median_ms <= max(result.timed_ms)
            assert result.median_ms == statistics.median(result.timed_ms)
        else:
            assert len(result.timed_ms) == 1 and result.warmup_ms == []  # one aggregate, no made-up runs
            assert 0 < s["min_ms"] <= s["median_ms"] and s["min_ms"] <= s["mean_ms"]

    def test_an_adaptive_policy_is_obeyed_or_the_driver_says_it_times_a_fixed_count(self, make_driver, profile,
                                                                                      artifact):
        """The default policy is adaptive. A driver that declares ``stops_adaptively`` must stop between
        ``adaptive.min_runs`` and ``max_runs``; one that does not times its fixed ``timed_runs`` (the campaign
        tells the user so), never some third count."""
        ad = Adaptive(target_rel_ci=0.5, min_runs=6, max_runs=8, max_seconds=60.0)
        d = make_driver(profile.model_copy(update={"policy": profile.policy.model_copy(update={"adaptive": ad})}))
        d.prepare()
        try:
            result = d.run(d.push(artifact))
        finally:
            d.cleanup()
        if type(d).stops_adaptively:
            assert ad.min_runs <= result.n_runs <= ad.max_runs, result.n_runs
            assert result.stop_rule in ("ci_reached", "max_runs", "max_seconds")
        else:
            assert result.n_runs == profile.policy.timed_runs

    def test_conditions_recorded_before_and_after(self, driver, artifact):
        result = driver.run(driver.push(artifact))
        assert result.conditions_before and result.conditions_after
        for cond in (result.conditions_before, result.conditions_after):
            assert check_conditions(cond) == [], "conditions must follow harness.devices.conditions"
            assert "temperatures_c" in cond and "cpu_freq_mhz" in cond  # present, None when unobservable

    def test_min_seconds_extends_the_timed_runs(self, make_driver, profile, artifact):
        import time

        d = make_driver(with_policy(profile, timed_runs=1, warmup_runs=0, min_seconds=0.3))
        d.prepare()
        try:
            ref = d.push(artifact)
            t0 = time.perf_counter()
            result = d.run(ref)
            elapsed = time.perf_counter() - t0
        finally:
            d.cleanup()
        assert result.n_runs > 1
        # it kept timing for the 0.3 s (a wall-clock bound: on a loaded machine the runs' own sum is less, since
        # other processes take the CPU between runs; the sum once read 0.19 s beside a busy loop)
        assert elapsed >= 0.3
        # runs are in milliseconds: a driver passing perf_counter deltas (seconds) stored NB201 models at 0.002 ms,
        # one in microseconds 1000x too slow; the runs take at least 5 % of that wall time and never more than it
        timed_ms = (sum(result.timed_ms) if result.per_run
                    else sum(result.timed_ms) / len(result.timed_ms) * result.n_runs)
        assert 0.05 * elapsed * 1000 <= timed_ms <= 1.5 * elapsed * 1000 + 50, (
            f"the timed runs add up to {timed_ms:.4g} ms in {elapsed * 1000:.0f} ms of wall time: are they in ms?")

    def test_push_is_idempotent(self, driver, artifact):
        assert driver.push(artifact) == driver.push(artifact)

    def test_corrupt_model_is_a_device_error_and_driver_recovers(self, driver, artifact, tmp_path):
        bad = tmp_path / f"corrupt{artifact.path.suffix}"
        bad.write_bytes(b"this is not a model" * 10)
        corrupt = Artifact(bad, artifact.format, "corrupt", False, 0.0)
        with pytest.raises(DeviceError) as info:
            driver.run(driver.push(corrupt))
        assert info.value.kind.value == "device_error"
        assert driver.run(driver.push(artifact)).timed_ms  # still usable

    def test_timeout_is_typed_and_driver_recovers(self, make_driver, profile, artifact):
        d = make_driver(with_policy(profile, timed_runs=1, min_seconds=30.0, timeout_seconds=1.0))
        d.prepare()
        try:
            with pytest.raises(MeasurementTimeout) as info:
                d.run(d.push(artifact))
            assert info.value.kind.value == "timeout"
            d.profile = profile  # back to a sane policy: the next model must work
            assert d.run(d.push(artifact)).n_runs == profile.policy.timed_runs
        finally:
            d.cleanup()

    @pytest.mark.parametrize("name", HOSTILE_NAMES)
    def test_hostile_file_names_are_data_not_code(self, driver, artifact, tmp_path, name):
        folder = tmp_path / "dir; $(touch PWNED) 'x'"
        folder.mkdir()
        hostile = folder / f"{name}{artifact.path.suffix}"
        shutil.copy(artifact.path, hostile)
        result = driver.run(driver.push(Artifact(hostile, artifact.format, artifact.digest, False, 0.0)))
        assert result.timed_ms
        assert not list(Path.cwd().glob("PWNED")) and not list(tmp_path.rglob("PWNED"))

    def test_cleanup_is_safe_twice(self, make_driver, profile):
        d = make_driver(profile)
        d.prepare()
        d.cleanup()
        d.cleanup()

    def test_missing_model_is_a_driver_error(self, driver, artifact, tmp_path):
        gone = Artifact(tmp_path / f"missing{artifact.path.suffix}", artifact.format, "missing", False, 0.0)
        with pytest.raises(DriverError):
            driver.run(driver.push(gone))
