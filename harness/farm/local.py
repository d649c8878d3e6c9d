"""Lanes on this host: one thread per device, so each device measures one model at a time while the
devices run side by side. No Ray needed; this is the default for ``measure --device a --device b``."""

from __future__ import annotations

import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from harness.campaign import Measured, energy_counter_dead, measure_model, push_reference
from harness.devices.driver import Driver, make_driver, prepared
from harness.devices.profile import Profile
from harness.errors import ParameterError
from harness.farm.engine import Lane
from harness.models.cache import Artifact, ModelCache
from harness.models.spaces import Arch, SearchSpace


@dataclass(frozen=True)
class ModelHint:
    """Where an architecture's model lives in any content-addressed cache (relative path) and what it is;
    worked out once per architecture by the farm command, so a device whose host already has the file
    skips building the graph and hashing it again."""

    relpath: str
    digest: str
    degenerate: bool
    graph_mode: str


def model_hint(space: SearchSpace, arch: Arch, fmt: str, graph_mode: str) -> ModelHint:
    from harness.models.passes import is_degenerate

    graph = space.build(arch)
    path = ModelCache(".").path_for(graph, fmt, graph_mode)
    return ModelHint(str(path), path.stem, is_degenerate(graph), graph_mode)


class DeviceSession:
    """One device's driver and model cache, shared by the local and the Ray lane (the measuring side)."""

    def __init__(self, profile: Profile, space: SearchSpace, cache: ModelCache, driver: Driver | None = None):
        self.profile, self.space, self.cache = profile, space, cache
        self.driver = driver or make_driver(profile)
        self.measured = 0
        self.energy = self.no_energy = 0  # energy passes with and without a figure

    def prepare(self) -> dict:
        from harness.models.cache import get_format

        get_format(self.profile.runtime.model_format)  # import the exporters now, not during the first model
        conditions = prepared(self.driver)
        refused = self.driver.cannot_answer(self.space.name, [])  # a replay table of another space, as for one device
        if refused:
            raise ParameterError("space", refused)
        push_reference(self.driver, self.cache, self.space, self.profile, conditions)  # as one device's campaign
        return conditions

    def measure(self, arch: Arch, hint: ModelHint | None = None) -> Measured:
        fmt, artifact = self.profile.runtime.model_format, None
        if hint is not None and hint.graph_mode == self.profile.graph:
            path = self.cache.root / hint.relpath
            if self.cache.verified(path):  # content-addressed and intact: the file at this key is this model
                artifact = Artifact(path, fmt, hint.digest, False, 0.0, graph_mode=hint.graph_mode,
                                    degenerate=hint.degenerate)
        self.driver.meter_energy = not energy_counter_dead(self.no_energy, self.energy)  # as a campaign decides
        m = measure_model(self.driver, self.cache, self.space, arch, self.profile, artifact)
        self.measured += 1
        if m.result is not None and m.result.energy_facts is not None:
            self.energy += m.result.energy_mj is not None
            self.no_energy += m.result.energy_mj is None
        if self.profile.policy.cooldown_seconds:
            time.sleep(self.profile.policy.cooldown_seconds)
        return m

    def cleanup(self) -> None:
        self.driver.cleanup()


class LocalLane(Lane):
    def __init__(self, profile: Profile, space: SearchSpace, cache: ModelCache, driver: Driver | None = None):
        self.device = profile.name
        self.host = socket.gethostname()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"device-{profile.name}")
        self._session = DeviceSession(profile, space, cache, driver)
        self._closed = False
        self._cleaning: Future | None = None

    def start(self) -> Future:
        return self._pool.submit(self._session.prepare)

    def submit(self, arch: Arch, queued: int, hint: ModelHint | None = None) -> Future:
        return self._pool.submit(self._session.measure, arch, hint)

    def close(self, graceful: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if graceful:  # after whatever the device is doing; the command does not wait for a stuck device
            self._cleaning = self._pool.submit(self._cleanup)
            # not cancel_futures: it cancelled the cleanup just queued before the thread took it, and the device's
            # runner worker outlived the command (a leak in any process that goes on: a notebook, the farm API)
            self._pool.shutdown(wait=False)
            return
        try:  # Ctrl-C or a fault: abandon the model in flight at once, as a one-device campaign does
            self._session.driver.abort()
        except Exception:  # noqa: BLE001 - closing must not hide the outcome that made us close
            pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    def settle(self, timeout: float) -> None:
        if self._cleaning is not None:
            wait([self._cleaning], timeout=timeout)

    def _cleanup(self) -> None:
        try:
            self._session.cleanup()
        except Exception:  # noqa: BLE001 - closing must not hide the outcome that made us close
            pass


def local_lanes(plan, cache: ModelCache) -> dict[str, Lane]:
    return {name: LocalLane(p, plan.space, cache) for name, p in plan.profiles.items()}
