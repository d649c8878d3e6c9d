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


@pytest.mark.parametrize("name", ["local-tflite", "local-onnx"])
def test_a_model_the_runtime_cannot_load_is_named_in_the_error(tmp_path, name):
    """LiteRT says only "The model is not a valid Flatbuffer buffer": which file, with --model a.tflite b.tflite?"""
    from harness.errors import DeviceError
    from harness.models.cache import Artifact

    profile = ProfileRegistry().get(name)
    bad = tmp_path / f"half{'.tflite' if name == 'local-tflite' else '.onnx'}"
    bad.write_bytes(b"\x00" * 1000)
    d = make_any_driver(profile)
    d.prepare()
    try:
        with pytest.raises(DeviceError) as info:
            d.run(d.push(Artifact(bad, profile.runtime.model_format, "half", False, 0.0)))
        assert str(bad) in str(info.value)
    finally:
        d.cleanup()


def test_check_reports_runtime_version():
    report = make_any_driver(ProfileRegistry().get("local-onnx")).check()
    assert report.ok and report.reachable
    import onnxruntime

    assert report.runtime_version == onnxruntime.__version__


def test_gpu_provider_on_a_cpu_only_onnxruntime_fails_before_any_model(tmp_path):
    from harness.errors import DriverUnavailable

    p = ProfileRegistry().get("local-onnx")
    p = p.model_copy(update={"runtime": p.runtime.model_copy(update={"execution_provider": "CUDAExecutionProvider"})})
    d = make_any_driver(p)
    try:
        with pytest.raises(DriverUnavailable, match="runtime.execution_provider CUDAExecutionProvider is not "
                                                   "available.*onnxruntime-gpu"):
            d.prepare()
    finally:
        d.cleanup()
    report = make_any_driver(p).check()
    assert not report.ok and "runtime.execution_provider" in report.message


def test_provider_that_would_fall_back_to_the_cpu_fails_the_model(tmp_path):
    """Azure's provider is installed but runs none of these nodes: onnxruntime would quietly use the CPU."""
    from harness.devices import runner
    from harness.models.cache import ModelCache
    from harness.models.spaces import get_space

    sp = get_space("nb201")
    art = ModelCache(tmp_path).get(sp.build(sp.parse("0")), "onnx")
    req = {"op": "run", "runtime": "onnxruntime", "model": str(art.path), "execution_provider":
           "AzureExecutionProvider", "timed_runs": 1}
    resp = runner.handle(req)
    assert resp["ok"] is False and resp["kind"] == "unavailable"
    assert "runtime.execution_provider AzureExecutionProvider" in resp["message"]
    ok = runner.handle({**req, "execution_provider": "CPUExecutionProvider"})
    assert ok["ok"] and ok["session"] == {"providers": ["CPUExecutionProvider"], "io_binding": False,
                                          "include_transfers": False}


def test_io_binding_keeps_inputs_and_outputs_bound(tmp_path):
    """The bound path GPU providers take, exercised on the CPU device: same outputs as a plain run."""
    import numpy as np
    import onnxruntime as ort

    from harness.devices import runner
    from harness.models.cache import ModelCache
    from harness.models.spaces import get_space

    sp = get_space("nb201")
    art = ModelCache(tmp_path).get(sp.build(sp.parse("9930")), "onnx")
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    invoke = runner.bound_invoke(sess, {"input": x}, "cpu")
    invoke()
    invoke()  # the binding is reusable across timed runs
    bound = invoke.binding.copy_outputs_to_cpu()[0]
    np.testing.assert_allclose(bound, sess.run(None, {"input": x})[0], rtol=1e-6)


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
