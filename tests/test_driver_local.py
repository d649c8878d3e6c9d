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


def test_thermal_zones_with_the_same_type_are_all_kept(tmp_path, monkeypatch):
    from harness.devices import runner

    for i, (kind, milli) in enumerate([("cpu-thermal", 41000), ("cpu-thermal", 43500), ("gpu", 39000)] * 4):
        z = tmp_path / f"thermal_zone{i}"
        z.mkdir()
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{milli + i}\n")
    monkeypatch.setattr(runner, "_THERMAL", tmp_path)
    temps = runner.temperatures_c()
    assert len(temps) == 12  # none lost to a repeated type
    assert temps["cpu-thermal"] == 41.0 and temps["cpu-thermal#2"] == 43.501 and temps["gpu#4"] == 39.011
    assert runner.zone_names([("thermal_zone0", "x"), ("thermal_zone1", None), ("thermal_zone2", "x")]) == {
        "thermal_zone0": "x", "thermal_zone1": "thermal_zone1", "thermal_zone2": "x#2"}
