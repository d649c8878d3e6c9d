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
    import onnxruntime  # the runner answered before the check failed: `devices check` still gives its version
    assert report.runtime_version == onnxruntime.__version__ and report.details["versions"]["onnxruntime"]


def test_a_gpu_provider_that_cannot_start_names_the_first_error_not_the_retrys(tmp_path, monkeypatch):
    """onnxruntime's Python retries a provider that failed to start on its fallback list and raises the retry's
    error from the first one. On an H200 without TensorRT's libraries the retry's error was all a user saw:
    "Conflicting session configuration: explicitly added the CPU EP ...". The stand-in raises as onnxruntime
    1.31 does (``raise fallback_error from e``), with the retry's message as read there."""
    import onnxruntime as ort

    from harness.devices import runner

    class StartsNot:
        def __init__(self, *args, **kwargs):
            try:
                raise RuntimeError("TensorRT EP could not be loaded: libnvinfer.so.10: cannot open shared object file")
            except RuntimeError as first:
                raise RuntimeError(
                    "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Conflicting session configuration: explicitly "
                    "added the CPU EP to the session, but also disabled fallback to the CPU EP via session "
                    "configuration options.") from first

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", StartsNot)
    monkeypatch.setattr(runner, "preload_gpu_libraries", lambda ort: None)
    resp = runner.handle({"op": "run", "runtime": "onnxruntime", "model": str(tmp_path / "m.onnx"),
                          "execution_provider": "TensorrtExecutionProvider", "timed_runs": 1})
    assert resp["ok"] is False and resp["kind"] == "unavailable"  # the device cannot: stop, not fail each model
    assert "TensorrtExecutionProvider could not start here" in resp["message"]
    assert "libnvinfer.so.10" in resp["message"] and "Conflicting" not in resp["message"]


def test_a_provider_error_that_is_not_a_missing_library_fails_that_model_alone(tmp_path, monkeypatch):
    """onnxruntime retries on any error, so a first error with a cause is not always "the device cannot": a
    provider that cannot build one model fails that model (device_error) and the campaign goes on."""
    import onnxruntime as ort

    from harness.devices import runner

    class OneModelNot:
        def __init__(self, *args, **kwargs):
            try:
                raise RuntimeError("TensorRT input: x has no shape specified")
            except RuntimeError as first:
                raise RuntimeError("Conflicting session configuration: explicitly added the CPU EP") from first

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", OneModelNot)
    monkeypatch.setattr(runner, "preload_gpu_libraries", lambda ort: None)
    resp = runner.handle({"op": "run", "runtime": "onnxruntime", "model": str(tmp_path / "m.onnx"),
                          "execution_provider": "TensorrtExecutionProvider", "timed_runs": 1})
    assert resp["ok"] is False and resp["kind"] == "device_error"
    assert "could not build a session for this model: TensorRT input: x has no shape" in resp["message"]


def test_a_cuda_graph_that_cannot_be_captured_is_named(tmp_path, monkeypatch):
    """2 of 79 NB201 models failed CUDA graph capture on an H200 (onnxruntime 1.31, enable_cuda_graph: 1) with
    a 600-character CudaCall error; the failure (a device_error of that model, never a number) says what it is."""
    from harness.devices import runner

    def invoke():
        raise RuntimeError("Error in execution: /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:154 "
                           "... CUDA failure 901: operation failed due to a previous error during capture ; GPU=0 ; "
                           "file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_graph.cc ; line=61 ; "
                           "expr=cudaStreamEndCapture(stream_, &graph);")

    monkeypatch.setattr(runner, "load", lambda req: (invoke, {"io_binding": True}))
    resp = runner.handle({"op": "run", "runtime": "onnxruntime", "model": str(tmp_path / "m.onnx"),
                          "warmup_runs": 1, "timed_runs": 1})
    assert resp["ok"] is False and resp["kind"] == "device_error"
    assert resp["message"].startswith("CUDA graph capture failed for this model") and "CUDA failure 901" in resp["message"]


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
