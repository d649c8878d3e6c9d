"""Checks a profile's workload and runtime against the space before a campaign starts.

Everything that would otherwise fail on every model (int8 on a delegate that has no int8 path, a
resolution the space cannot take, a batch that cannot fit in memory) is reported once, up front,
naming the profile field and the fix. Device-side checks (is the provider installed, is trtexec
there) happen in the drivers' ``prepare``, also before the first model.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.devices.profile import Profile
from harness.errors import ProfileError
from harness.models.spaces import Arch, SearchSpace

# (runtime, delegate or provider) -> precisions it runs natively; absent = no restriction known
PRECISIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("tflite", "gpu"): ("fp32", "fp16"),  # the GPU delegate has no integer kernels
    ("tflite", "hexagon"): ("int8",),  # the Hexagon delegate runs quantized models only
    ("onnxruntime", "CUDAExecutionProvider"): ("fp32", "fp16"),  # QDQ int8 falls back to the CPU
    ("onnxruntime", "DmlExecutionProvider"): ("fp32", "fp16"),
    ("onnxruntime", "CoreMLExecutionProvider"): ("fp32", "fp16"),
}

X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})

MAX_ACTIVATION_BYTES = 16 << 30  # one activation tensor of a batch beyond this cannot be measured anywhere


def runtime_backend(profile: Profile) -> tuple[str, str, str]:
    """(runtime, backend, the profile field that selects the backend)."""
    rt = profile.runtime
    if rt.name == "tflite":
        return rt.name, rt.delegate, "runtime.delegate"
    if rt.name == "onnxruntime":
        return rt.name, rt.execution_provider, "runtime.execution_provider"
    return rt.name, rt.name, "runtime.name"


def _shape_that_builds(space: SearchSpace, arch: Arch, shape: tuple[int, int] | None, channels: int) -> str:
    """'; e.g. 12x12 builds': the nearest larger shape in multiples of 4..32 that the space can build."""
    if shape is None:
        return ""
    for m in (4, 8, 16, 32):
        h, w = (-(-shape[0] // m) * m, -(-shape[1] // m) * m)
        try:
            space.build(arch, (h, w, channels))
        except (ValueError, ZeroDivisionError):
            continue
        return f"; e.g. {h}x{w} builds"
    return ""


def check_workload(profile: Profile, space: SearchSpace, archs: Sequence[Arch] = ()) -> None:
    """Raise ProfileError naming the field when this profile's workload cannot be measured in ``space``."""
    w, problems = profile.workload, []
    if hasattr(space, "artifact") and not w.is_default():  # model files (harness.models.files)
        raise ProfileError(f"{profile.name} (measuring {space.name})", [
            "workload: model files are measured as they are; batch_size, input_shape and precision apply to "
            "search spaces (export the file at the batch and precision you want)"])
    runtime, backend, field = runtime_backend(profile)
    allowed = PRECISIONS.get((runtime, backend))
    if allowed and w.precision not in allowed:
        problems.append(f"workload.precision: {w.precision} cannot run on {runtime} with {field} {backend} "
                        f"(it runs {', '.join(allowed)}); pick one of those or another {field}")
    if w.input_shape is not None and space.resolution_in_key:
        problems.append(f"workload.input_shape: space {space.name} has the resolution in its architecture keys; "
                        f"remove input_shape (each architecture is built at its own resolution)")
    elif archs and not problems and not hasattr(space, "artifact"):
        arch = archs[0]
        c = space.default_input_shape[2] if space.default_input_shape else None
        graph = None
        if w.input_shape is not None and c is None:
            problems.append(f"workload.input_shape: space {space.name} declares no default_input_shape (H, W, C), so "
                            "the channels of another input shape are unknown; the space's author adds it")
        try:
            if not problems:
                graph = space.build(arch, (*w.input_shape, c) if w.input_shape else None)
        except (ValueError, ZeroDivisionError):
            problems.append(f"workload.input_shape: {space.name} cannot be built at {w.shape_label()} (its "
                            f"reductions need sides that divide evenly){_shape_that_builds(space, arch, w.input_shape, c)}")
        if graph is not None:
            biggest = max(h * wd * ch for h, wd, ch in graph.shapes.values())
            need = biggest * w.batch_size * 4
            if need > MAX_ACTIVATION_BYTES:
                problems.append(f"workload.batch_size: {w.batch_size} needs {need / 2**30:.1f} GiB for one "
                                f"activation of {arch.key}; use a smaller batch")
            elif any(min(h, wd) < 1 for h, wd, _ in graph.shapes.values()):
                problems.append(f"workload.input_shape: {w.shape_label()} is too small for {space.name}")
    if problems:
        raise ProfileError(f"{profile.name} (measuring {space.name})", problems)


def precision_caveat(profile: Profile, conditions: dict) -> str | None:
    """What the device computes when it is not the precision asked for, from its static conditions (``machine``).
    onnxruntime's CPU provider has no fp16 kernels on x86: it folds the fp16 weights to fp32 and computes in fp32,
    so an fp16 campaign there measured fp32 under an ``@fp16`` name (the same latencies, within noise)."""
    runtime, backend, _ = runtime_backend(profile)
    machine = str(conditions.get("machine") or "").lower()
    if (profile.workload.precision == "fp16" and (runtime, backend) == ("onnxruntime", "CPUExecutionProvider")
            and machine in X86):
        return (f"onnxruntime's CPU provider has no fp16 kernels on {machine}: it converts the fp16 model to fp32 "
                "and computes in fp32, so these fp16 latencies are fp32 ones (plus casts). Measure fp16 with a GPU "
                "provider, TensorRT or LiteRT's GPU delegate, or on an ARM CPU")
    return None
