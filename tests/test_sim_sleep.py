"""The sleep stand-in keeps the driver contract: the shipped conformance suite runs on it."""

from __future__ import annotations

import pytest

from harness.devices.profile import parse_profile
from harness.sim.sleep import SleepDriver
from harness.testing.conformance import DriverConformance


class TestSleepConformance(DriverConformance):
    @pytest.fixture
    def base_profile(self):
        return parse_profile({"name": "sleepy", "connection": {"kind": "sleep", "latency_ms": 5},
                              "runtime": {"name": "onnxruntime"}}, "test profile")

    @pytest.fixture
    def make_driver(self):
        return SleepDriver
