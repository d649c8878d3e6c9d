"""The local driver runs the shared driver conformance suite, once per runtime."""

from __future__ import annotations

import pytest

from harness.devices.driver import make_driver as make_any_driver
from harness.devices.local import LocalDriver
from harness.devices.registry import ProfileRegistry
from harness.testing.conformance import DriverConformance


class TestLocalOnnxConformance(DriverConformance):
    @pytest.fixture
    def base_profile(self):
        return ProfileRegistry().get("local-onnx")

    @pytest.fixture
    def make_driver(self):
        return make_any_driver


class TestLocalTfliteConformance(DriverConformance):
    @pytest.fixture
    def base_profile(self):
        return ProfileRegistry().get("local-tflite")

    @pytest.fixture
    def make_driver(self):
        return make_any_driver


def test_worker_never_imports_tensorflow():
    d = LocalDriver(ProfileRegistry().get("local-tflite"))
    d.prepare()
    try:
        assert d.hello["tensorflow_imported"] is False
        assert d.hello["pid"] != __import__("os").getpid()
    finally:
        d.cleanup()


def test_check_reports_runtime_version():
    report = make_any_driver(ProfileRegistry().get("local-onnx")).check()
    assert report.ok and report.reachable
    import onnxruntime

    assert report.runtime_version == onnxruntime.__version__


def test_unavailable_execution_provider_is_a_device_error(tmp_path):
    from harness.errors import DeviceError
    from harness.models.cache import ModelCache
    from harness.models.spaces import get_space

    p = ProfileRegistry().get("local-onnx")
    p = p.model_copy(update={"runtime": p.runtime.model_copy(update={"execution_provider": "NoSuchProvider"})})
    sp = get_space("nb201")
    art = ModelCache(tmp_path).get(sp.build(sp.parse("0")), "onnx")
    with make_any_driver(p) as d, pytest.raises(DeviceError, match="NoSuchProvider"):
        d.run(d.push(art))
