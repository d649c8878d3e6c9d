"""Device profiles: how to reach a device, which runtime to run, and how to measure.

A profile is one YAML file validated by the pydantic models below. Unknown fields are errors (a typo
must not silently fall back to a default), and every error names the file, the field and what is
expected (see :func:`load_profile`).
"""

from __future__ import annotations

import difflib
import reprlib
import stat
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from harness.errors import ProfileError
from harness.measure.policy import Adaptive, Gate, Sentinels
from harness.measure.policy import _Strict as StrictBase

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_PROFILE_BYTES = 64 * 1024  # a profile is a few hundred bytes; anything this big is a mistake or an attack
MAX_VALUES = 5_000  # values after YAML aliases are expanded (a 400-byte alias bomb expands to millions)
MAX_DEPTH = 20
ORT_OPT_LEVELS = ("disable", "basic", "extended", "all")
_echo = reprlib.Repr()  # what error messages echo of a bad value: bounded whatever the value is
_echo.maxstring = _echo.maxother = 80
_echo.maxlist = _echo.maxdict = _echo.maxtuple = _echo.maxset = 6
_echo.maxlevel = 3


class _Strict(StrictBase):
    """Profile blocks: unknown fields refused, no .inf/.nan, no booleans or text read as numbers."""


class Connection(_Strict):
    """Base of every ``connection:`` block. ``kind`` picks the driver; each kind's model is registered next
    to its driver in :data:`harness.devices.driver.DRIVERS` (one line per driver)."""

    kind: str


class LocalConnection(Connection):
    """This machine."""

    kind: Literal["local"]


class SSHConnection(Connection):
    """A Linux box reached over SSH (Jetson, Raspberry Pi, server)."""

    kind: Literal["ssh"]
    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(min_length=1)
    key_file: str | None = Field(None, description="path to a private key; never copied into results")
    known_hosts: str | None = Field(None, description="known_hosts file; default: the system's")
    insecure_skip_host_key_check: bool = Field(False, description="explicit opt-out of host key checks")
    workdir: str = "/tmp/harness"
    python: str = Field("python3", description="interpreter on the device that has the runtime")
    benchmark_model: str | None = Field(None, description="path of TFLite's benchmark_model on the device: "
                                        "with runtime tflite, models are timed by it instead of the Python runner")
    connect_timeout_s: float = Field(10.0, gt=0)
    reconnect_attempts: int = Field(2, ge=0, le=20, description="reconnect this often after a drop (0 = stop)")
    reconnect_backoff_s: float = Field(2.0, ge=0, description="first wait before reconnecting; doubles each try")


VIRTUAL_SERIAL = "virtual"  # ADB serial of the virtual phone the CLI starts; the driver itself only dials host:port


class ADBConnection(Connection):
    """An Android phone reached with ADB over TCP (``adb tcpip``) or USB."""

    kind: Literal["adb"]
    serial: str = Field(min_length=1, description="host:port for TCP, the USB serial for USB, or 'virtual': "
                        "a virtual phone the CLI serves for the command (harness sim adb)")
    transport: Literal["tcp", "usb"] = "tcp"
    key_file: str = "~/.android/adbkey"
    workdir: str = "/data/local/tmp/harness"
    benchmark_model: str | None = Field(None, description="local path of the benchmark_model binary to push")
    taskset: str | None = Field(None, pattern=r"^(0x)?[0-9a-fA-F]+$", description="CPU mask, e.g. f0")
    connect_timeout_s: float = Field(10.0, gt=0)



RUNTIME_FORMATS = {"onnxruntime": "onnx", "tflite": "tflite", "trtexec": "onnx"}

# onnxruntime's execution provider names (others are accepted by name if they follow the pattern)
KNOWN_PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider",
                   "ROCMExecutionProvider", "MIGraphXExecutionProvider", "OpenVINOExecutionProvider",
                   "DmlExecutionProvider", "CoreMLExecutionProvider", "NnapiExecutionProvider",
                   "QNNExecutionProvider", "XnnpackExecutionProvider", "ACLExecutionProvider",
                   "ArmNNExecutionProvider", "CANNExecutionProvider", "VitisAIExecutionProvider",
                   "WebGpuExecutionProvider")
# providers whose tensors live in GPU memory: inputs/outputs are bound there (IO binding)
GPU_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}


class Runtime(_Strict):
    name: Literal["onnxruntime", "tflite", "trtexec"]
    threads: int = Field(1, ge=1, le=256)
    delegate: Literal["cpu", "reference", "xnnpack", "gpu", "nnapi", "hexagon"] = Field(
        "cpu", description="tflite only: cpu = the runtime's default CPU path")
    execution_provider: str = Field("CPUExecutionProvider", description="onnxruntime only, by name: "
                                    "CUDAExecutionProvider, TensorrtExecutionProvider, ...")
    provider_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="onnxruntime only: options of the execution provider (device_id, ...)")
    binary: str | None = Field(None, description="trtexec only: the tool's path on the device (default: trtexec "
                               "on PATH; JetPack puts it at /usr/src/tensorrt/bin/trtexec)")
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("execution_provider")
    @classmethod
    def _provider_name(cls, v: str) -> str:
        if v in KNOWN_PROVIDERS:
            return v
        stems = {p.removesuffix("ExecutionProvider").lower(): p for p in KNOWN_PROVIDERS}
        low = v.lower()
        # the part before "ExecutionProvider", however that is misspelt (CUDAExecutonProvider -> cuda)
        spelt = re.match(r"(.*?)exec[a-z]*prov[a-z]*", low)
        stem = spelt.group(1) if spelt and spelt.group(0) == low else low
        close = [stems[stem]] if stem in stems else \
            [stems[c] for c in difflib.get_close_matches(stem, list(stems), n=1, cutoff=0.75)]
        if close or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*ExecutionProvider", v):
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{hint}onnxruntime names providers in full, e.g. CUDAExecutionProvider; known: "
                             + ", ".join(KNOWN_PROVIDERS))
        return v

    @property
    def model_format(self) -> str:
        return RUNTIME_FORMATS[self.name]

    @property
    def cuda_graph_setting(self) -> str | None:
        """The profile setting that turns on CUDA graphs for this GPU runtime (one launch per inference instead of
        one per kernel: what steadies a GPU at small batch); None on CPUs and other accelerators."""
        if self.name == "trtexec":
            return "runtime.options use_cuda_graph: true"
        if self.name == "onnxruntime" and self.execution_provider == "CUDAExecutionProvider":
            return "runtime.provider_options enable_cuda_graph: '1'"
        if self.name == "onnxruntime" and self.execution_provider == "TensorrtExecutionProvider":
            return "runtime.provider_options trt_cuda_graph_enable: '1'"
        return None

    @field_validator("options")
    @classmethod
    def _known_options(cls, v: dict, info: ValidationInfo) -> dict:
        """onnxruntime takes any session config entry and ignores keys it does not know, so a misspelt
        ``graph_optimisation_level`` measured at the default level while the stored profile said otherwise.
        Its config keys are dotted (``session.intra_op.allow_spinning``; their spelling is onnxruntime's to check);
        a plain word is harness's own option. tflite reads no options (threads and delegate are fields)."""
        name = info.data.get("name")
        if name == "tflite" and v:
            raise ValueError(f"tflite reads no runtime.options ({', '.join(map(str, v))}); threads and delegate are "
                             "runtime fields, and a benchmark_model profile takes its flags from the connection")
        if name == "onnxruntime":
            from harness.devices.ort_config_keys import ORT_CONFIG_KEYS

            for key in v:
                if "." in str(key) and str(key) not in ORT_CONFIG_KEYS:
                    near = difflib.get_close_matches(str(key), sorted(ORT_CONFIG_KEYS), n=1, cutoff=0.85)
                    if near:
                        raise ValueError(f"unknown onnxruntime config entry {key!r}: did you mean {near[0]!r}? "
                                         "onnxruntime ignores entries it does not know, so a misspelt one would "
                                         "measure at its default while the profile says otherwise")
                if key != "graph_optimization_level" and "." not in str(key):
                    close = difflib.get_close_matches(str(key), ["graph_optimization_level"], n=1, cutoff=0.6)
                    hint = (f"did you mean {close[0]!r}? " if close else
                            "threads is a runtime field (runtime.threads); " if "thread" in str(key) else "")
                    raise ValueError(f"unknown onnxruntime option {key!r}: {hint}runtime.options takes "
                                     "graph_optimization_level and onnxruntime session config entries, which are "
                                     "dotted (e.g. session.intra_op.allow_spinning)")
        level = v.get("graph_optimization_level")
        if level is not None and str(level) not in ORT_OPT_LEVELS:
            raise ValueError(f"graph_optimization_level must be one of {', '.join(ORT_OPT_LEVELS)}")
        return v

    @model_validator(mode="after")
    def _runtime_specific(self) -> Runtime:
        if self.binary is not None and self.name != "trtexec":
            raise ValueError("binary applies to trtexec only (TFLite's benchmark_model is connection.benchmark_model)")
        if self.name == "trtexec":
            if self.delegate != "cpu" or self.execution_provider != "CPUExecutionProvider" or self.provider_options:
                raise ValueError("trtexec runs TensorRT on the GPU: delegate, execution_provider and "
                                 "provider_options do not apply (options: device, use_cuda_graph, warmup_ms)")
            unknown = set(self.options) - {"device", "use_cuda_graph", "warmup_ms"}
            if unknown:
                raise ValueError(f"trtexec options are device, use_cuda_graph, warmup_ms; not {', '.join(sorted(unknown))}")
            opts = self.options
            # each becomes a trtexec flag: a string "false" turned --useCudaGraph on, "gpu0" a traceback
            if "device" in opts and (isinstance(opts["device"], bool) or not isinstance(opts["device"], int)
                                     or opts["device"] < 0):
                raise ValueError(f"runtime.options device must be the GPU's index (0, 1, ...; trtexec --device), "
                                 f"not {opts['device']!r}")
            if "use_cuda_graph" in opts and not isinstance(opts["use_cuda_graph"], bool):
                raise ValueError(f"runtime.options use_cuda_graph must be true or false (unquoted), not "
                                 f"{opts['use_cuda_graph']!r}")
            if "warmup_ms" in opts and (isinstance(opts["warmup_ms"], bool)
                                        or not isinstance(opts["warmup_ms"], (int, float)) or opts["warmup_ms"] < 0):
                raise ValueError(f"runtime.options warmup_ms must be milliseconds >= 0 (trtexec --warmUp), not "
                                 f"{opts['warmup_ms']!r}")
        if self.name == "onnxruntime" and self.delegate != "cpu":
            raise ValueError("delegate applies to tflite only; for onnxruntime set execution_provider")
        if self.name == "tflite" and (self.execution_provider != "CPUExecutionProvider" or self.provider_options):
            raise ValueError("execution_provider applies to onnxruntime only; for tflite set delegate")
        return self


ENERGY_TIMEOUT_MARGIN_S = 10.0  # of a model's timeout, kept for loading and timing it besides the energy pass


class Policy(_Strict):
    """How a model is timed (pyperf / benchmark_model style).

    By default a model's runs stop adaptively (``adaptive``) and every architecture is visited in
    ``rounds`` seeded-shuffled rounds; giving ``timed_runs`` without ``adaptive`` keeps the classic fixed
    count. Runs during which another process took the CPU are flagged ``preempted`` and, by default,
    left out of the estimate (they stay in the store).
    """

    warmup_runs: int = Field(10, ge=0, le=100_000)
    timed_runs: int = Field(50, ge=1, le=1_000_000, description="fixed count (when adaptive is off)")
    min_seconds: float = Field(0.0, ge=0, description="keep timing until this long has passed")
    cooldown_seconds: float = Field(0.0, ge=0, description="pause between models (thermal)")
    timeout_seconds: float = Field(120.0, ge=1, description=(
        "per-model limit (loading, warm-up, timed runs and any energy pass); exceeded = timeout failure. At least 1 s: "
        "a smaller one fails every model before its first run"))
    input_seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the random inputs")
    adaptive: Adaptive | None = Field(default_factory=Adaptive,
                                      description="adaptive stopping; null = fixed timed_runs")
    rounds: int = Field(3, ge=1, le=1000, description="visits per architecture, in seeded shuffled orders")
    round_seed: int = 0
    preempted_runs: Literal["exclude", "keep"] = Field(
        "exclude", description="runs during which another process had the CPU: left out of the estimate or kept")
    outlier_k: float = Field(5.0, gt=0, description="runs above median + k*MAD are flagged as outliers")
    max_neighbour_cpu: float = Field(0.5, gt=0, le=1, description="other processes' share of the CPUs (0-1) "
                                     "that marks a model suspect")
    max_steal: float = Field(0.05, gt=0, le=1, description="hypervisor steal share of the CPUs (0-1) that marks a "
                             "model suspect")
    reference: str = Field("auto", min_length=1, description=(
        "paired reference model timed before every run, to cancel machine-speed drift: auto (a fixed "
        "architecture of the space), none, or an architecture key/index"))
    sentinels: Sentinels | None = None
    gate: Gate = Field(default_factory=Gate)
    energy: Literal["off", "auto", "nvml", "rapl", "jetson_ina", "battery"] = Field(
        "off", description="measure energy per inference in a pass after the timed runs: nvml (NVIDIA GPUs), jetson_ina "
        "(Jetson power rails), rapl (x86 powercap), battery (coarse), auto (the first the device has)")
    energy_seconds: float = Field(1.0, ge=0.05, le=60, description=(
        "energy is metered in a pass of its own after the timed runs, the model running back to back for at least "
        "this long: NVML's counter moves every 100 ms, so a window of ~1 s holds ~10 of its steps"))
    energy_visits: Literal["first", "all"] = Field("first", description=(
        "which visits run the energy pass: first = each architecture's first visit of a campaign (again on a later "
        "one when that pass gave no figure), all = every visit of every round (energy_seconds more per visit)"))
    power_mode: str | None = Field(None, description="Jetson nvpmodel mode (name or id) the measurements assume; "
                                   "`devices check` warns when the device is in another")
    include_transfers: bool = Field(False, description="GPU providers: time host->device input and "
                                    "device->host output copies too (default: inputs and outputs stay bound "
                                    "on the device, only inference is timed)")

    @field_validator("energy", mode="before")
    @classmethod
    def _energy_off_unquoted(cls, v: Any) -> Any:
        """YAML 1.1 reads an unquoted ``energy: off`` as false: that is the documented "off"."""
        if v is False:
            return "off"
        if v is True:
            raise ValueError("'on' (or true) is not a method; write energy: auto for the first the device has")
        return v

    @model_validator(mode="before")
    @classmethod
    def _fixed_when_counted(cls, data: Any) -> Any:
        """A policy that names ``timed_runs`` (or ``min_seconds``) and not ``adaptive`` is a fixed-count one."""
        if isinstance(data, dict) and "adaptive" not in data and ("timed_runs" in data or "min_seconds" in data):
            # the classic policy, unchanged: a fixed count, one pass, no paired reference
            return {"rounds": 1, "reference": "none", **data, "adaptive": None}
        return data

    @model_validator(mode="after")
    def _timing_fits(self) -> "Policy":
        """min_seconds of timing inside a shorter timeout fails every model as a timeout, whatever it is."""
        if self.min_seconds >= self.timeout_seconds:
            raise ValueError(f"policy.min_seconds {self.min_seconds:g} keeps timing each model at least that long, "
                             f"but policy.timeout_seconds {self.timeout_seconds:g} stops it before: every model would "
                             "fail as a timeout; lower min_seconds or raise timeout_seconds above it (with room for "
                             "loading and warm-up)")
        return self

    @model_validator(mode="after")
    def _energy_pass_fits(self) -> "Policy":
        """The energy pass (up to 2 x energy_seconds + 1 s: waiting for the counter's first step, then the window)
        runs inside the visit's timeout, which must also leave ENERGY_TIMEOUT_MARGIN_S for loading the model and
        its timed runs: a pass the timeout cuts would throw the visit's good latency away as a timeout."""
        need = 2 * self.energy_seconds + 1 + ENERGY_TIMEOUT_MARGIN_S
        if self.energy != "off" and need > self.timeout_seconds:
            raise ValueError(f"energy_seconds {self.energy_seconds:g} needs a longer timeout_seconds: the energy pass "
                             f"takes up to {2 * self.energy_seconds + 1:g} s (2 x energy_seconds + 1) inside each "
                             f"model's {self.timeout_seconds:g} s, and {ENERGY_TIMEOUT_MARGIN_S:g} s are kept for loading "
                             f"and timing the model: raise timeout_seconds to at least {need:g} or lower energy_seconds")
        return self


PRECISIONS = ("fp32", "fp16", "int8")


class Calibration(_Strict):
    """Inputs that set int8 scales. ``random``: seeded standard-normal tensors of the model's input shape
    (latency does not depend on the values, only on the ranges being plausible)."""

    method: Literal["random"] = "random"
    samples: int = Field(16, ge=1, le=10_000)
    seed: int = 0
    activations: Literal["auto", "uint8", "int8", "int8-symmetric"] = Field("auto", description=(
        "ONNX int8 activations (weights are always per-channel symmetric int8): auto picks what the profile's "
        "runtime fuses into integer kernels: uint8 for onnxruntime's CPU provider (its x86 build leaves int8-"
        "activation QDQ convolutions in float, slower than fp32), int8-symmetric for TensorRT (its parser refuses "
        "non-zero zero points), int8 for LiteRT (its full-integer scheme)"))

    def label(self) -> str:
        """Part of an int8 measurement's identity; the activations only where they are not the first recipe's."""
        return f"{self.method}-n{self.samples}-s{self.seed}" + ACTIVATION_LABELS.get(self.activations, "")


ACTIVATION_LABELS = {"uint8": "-u8", "int8-symmetric": "-s8sym"}  # int8 (asymmetric): the labels stored before


class Workload(_Strict):
    """What exactly is measured: batch size, input resolution and numeric precision.

    All three are part of a measurement's identity: the store, resume and export keep a bs32 fp16
    measurement apart from the bs1 fp32 one of the same device and architecture.
    """

    batch_size: int = Field(1, ge=1, le=4096)
    input_shape: tuple[int, int] | None = Field(
        None, description="[height, width] instead of the space's resolution (channels come from the space)")
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    calibration: Calibration = Field(default_factory=Calibration, description="int8 only")

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] < 8 or v[1] < 8 or v[0] > 4096 or v[1] > 4096):
            raise ValueError("height and width must be between 8 and 4096 pixels")
        return v

    def is_default(self) -> bool:
        return self.batch_size == 1 and self.input_shape is None and self.precision == "fp32"

    def calibration_label(self) -> str | None:
        """The label as written, ``activations: auto`` unresolved; what is stored with a measurement is
        ``Profile.int8_calibration().label()``, which knows the runtime."""
        return self.calibration.label() if self.precision == "int8" else None

    def shape_label(self) -> str:
        return f"{self.input_shape[0]}x{self.input_shape[1]}" if self.input_shape else ""

    def label(self) -> str:
        """Suffix naming a non-default workload in tables: ``bs32.224x224.fp16`` ('' for bs1 fp32 default)."""
        parts = [f"bs{self.batch_size}"] if self.batch_size != 1 else []
        if self.input_shape:
            parts.append(self.shape_label())
        if self.precision != "fp32":
            parts.append(self.precision)
        return ".".join(parts)


class Profile(_Strict):
    name: str = Field(pattern=NAME_RE)
    description: str = ""
    hardware: str = Field("", description="what the device is, for reports")
    connection: SerializeAsAny[Connection]
    runtime: Runtime
    policy: Policy = Field(default_factory=Policy)
    graph: Literal["prune", "keep"] = Field(
        "prune", description="model semantics: prune = what a deployment converter exports (dead code removed, "
        "zeros folded, ops merged, activations fused); keep = PyTorch-eager export (x*0, dead convs computed)")
    workload: Workload = Field(default_factory=Workload)
    group: str | None = Field(None, pattern=NAME_RE,
                              description="identical devices share a group; `measure --split` shares work in it")

    def int8_calibration(self) -> Calibration:
        """The workload's calibration with ``activations: auto`` resolved for this runtime: what is exported and
        what an int8 measurement's identity says."""
        c = self.workload.calibration
        if c.activations != "auto":
            return c
        rt = self.runtime
        if rt.model_format == "tflite":
            act = "int8"  # LiteRT's full-integer scheme
        elif rt.name == "trtexec" or rt.execution_provider == "TensorrtExecutionProvider":
            act = "int8-symmetric"
        else:
            act = "uint8"
        return c.model_copy(update={"activations": act})

    @model_validator(mode="after")
    def _int8_fits_runtime(self) -> Profile:
        act = self.workload.calibration.activations
        if act in ("auto", "int8") or self.workload.precision != "int8":
            return self
        if self.runtime.model_format == "tflite":
            raise ValueError(f"workload.calibration.activations: {act} applies to ONNX models; LiteRT's int8 is its "
                             "full-integer scheme (int8 activations): use auto")
        if act == "uint8" and (self.runtime.name == "trtexec"
                               or self.runtime.execution_provider == "TensorrtExecutionProvider"):
            raise ValueError("workload.calibration.activations: TensorRT takes symmetric int8 only (zero points "
                             "0): use auto or int8-symmetric")
        return self

    @model_validator(mode="after")
    def _runtime_fits_connection(self) -> Profile:
        if self.runtime.name == "trtexec" and self.connection.kind not in ("local", "ssh"):
            raise ValueError(f"runtime trtexec runs on local or ssh connections, not {self.connection.kind}")
        if self.connection.kind == "ssh" and self.connection.benchmark_model and self.runtime.name != "tflite":
            raise ValueError("connection.benchmark_model times TFLite models: set runtime.name: tflite, or remove "
                             "benchmark_model to use the Python runner")
        energy = self.policy.energy
        if self.connection.kind == "adb" and energy not in ("off", "auto", "battery"):
            raise ValueError(f"policy.energy: {energy} is not readable on a phone; use battery (coarse) or off")
        if self.runtime.name == "trtexec" and energy != "off":
            raise ValueError("policy.energy: not measured around trtexec yet; use off (or the onnxruntime "
                             "TensorrtExecutionProvider, whose runner measures nvml energy)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _replay_needs_no_runtime(cls, data: Any) -> Any:
        """A replayed table was timed elsewhere: the runtime is optional there (recorded as given)."""
        conn = data.get("connection") if isinstance(data, dict) else None
        if isinstance(conn, dict) and conn.get("kind") == "replay" and "runtime" not in data:
            data = {**data, "runtime": {"name": "onnxruntime"}}
        return data

    @field_validator("connection", mode="before")
    @classmethod
    def _connection_by_kind(cls, v: Any) -> Any:
        """Validate the block with the model its driver registered for ``kind``."""
        from harness.devices.driver import DRIVERS, connection_model

        if isinstance(v, Connection) or not isinstance(v, dict):
            return v
        if "kind" not in v:
            raise PydanticCustomError("connection_kind_missing", "required field is missing; expected one of "
                                      "{kinds}", {"kinds": ", ".join(DRIVERS)})
        if v["kind"] not in DRIVERS:
            from harness.plugins import load_plugins

            load_plugins()  # an out-of-tree driver registers its kind when imported
        if v["kind"] not in DRIVERS:
            raise PydanticCustomError("connection_kind_invalid", "{kind} is not a connection kind; expected one "
                                      "of {kinds} (a plug-in's kind: name its module or .py file in "
                                      "$HARNESS_PLUGINS, or install its package)",
                                      {"kind": repr(v["kind"]), "kinds": ", ".join(DRIVERS)})
        return connection_model(v["kind"]).model_validate(v)

    @field_validator("description", "hardware", mode="before")
    @classmethod
    def _strip(cls, v: Any) -> Any:
        return v.strip() if isinstance(v, str) else v

    def as_dict(self) -> dict:
        return self.model_dump(mode="json")

    @property
    def measured_name(self) -> str:
        """The device's name in tables: ``name`` for the default workload, else ``name@bs32.fp16``."""
        label = self.workload.label()
        return f"{self.name}@{label}" if label else self.name

    def with_workload(self, source: str = "the command line", **changes: Any) -> Profile:
        """A copy with workload fields replaced (``None`` keeps the profile's), validated like the file. An
        error names the flag a field came from (``--batch-size``) when ``source`` is the command line."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            return self
        data = self.as_dict()
        # the policy as the user wrote it: a full copy made every default look set ("policy.timed_runs 50 is not
        # used here" on every campaign of another workload)
        data["policy"] = self.policy.model_dump(mode="json", exclude_unset=True)
        data["workload"] = {**data.get("workload", {}), **changes}
        try:
            return Profile.model_validate(data)
        except ValidationError as e:
            problems = [_describe(err, data) for err in e.errors()]
            if "command line" in source:
                for key in changes:
                    flag = "--" + key.replace("_", "-")
                    problems = [p.replace(f"workload.{key}:", f"{flag} (workload.{key}):", 1) for p in problems]
            raise ProfileError(f"{self.name} with the workload of {source}", problems) from None

    def digest(self) -> str:
        """Hash of everything that changes what is measured (not the description)."""
        body = {k: v for k, v in self.as_dict().items() if k not in ("description", "hardware", "group")}
        if self.workload.is_default():  # profiles written before workloads existed keep their digest
            body.pop("workload")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


# connection fields that say where a device is or how to reach it, not what it measures: devices that differ only
# in these are interchangeable (the farm's --split groups)
WHERE_NOT_WHAT = frozenset({"serial", "host", "port", "user", "key_file", "known_hosts",
                            "insecure_skip_host_key_check", "workdir", "connect_timeout_s", "reconnect_attempts",
                            "reconnect_backoff_s", "drop_after", "transport"})
# what resume does not call a change of setup under one device name: the same, but for the host and the serial,
# which may be another machine (a loopback serial is the virtual phone's new port each command: no change)
NOT_A_NEW_MACHINE = WHERE_NOT_WHAT - {"host", "serial"}


# policy fields (with their defaults, for profiles stored before them) that change what a latency includes, not
# how often it is timed: one device name measured both ways mixed GPU-compute-only and with-copies latencies
WHAT_IS_TIMED = {"include_transfers": False}


def _loopback(value: Any) -> bool:
    return isinstance(value, str) and value.split(":")[0] in ("127.0.0.1", "localhost", "[::1]", "::1")


def measurement_changes(before: dict, after: dict) -> list[str]:
    """What differs between two profiles (``as_dict``) in what decides the measured latency, as ``field: old ->
    new``: the runtime and the connection (its kind, host or serial, interpreter or tool; not
    :data:`NOT_A_NEW_MACHINE`) and :data:`WHAT_IS_TIMED`. Workloads and graph modes are not here: they are
    separate series in the store already."""
    changes = []
    for block in ("runtime", "connection"):
        old, new = before.get(block) or {}, after.get(block) or {}
        for key in sorted(set(old) | set(new)):
            if key in NOT_A_NEW_MACHINE or old.get(key) == new.get(key):
                continue
            if key in ("serial", "host") and _loopback(old.get(key)) and _loopback(new.get(key)):
                continue  # this machine under two spellings, or the virtual phone's new port
            changes.append(f"{block}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
    for key, default in WHAT_IS_TIMED.items():  # policy fields that change what a latency includes
        was, now = (before.get("policy") or {}).get(key, default), (after.get("policy") or {}).get(key, default)
        if was != now:
            changes.append(f"policy.{key}: {was!r} -> {now!r}")
    return changes


# --- loading with errors a person can act on --------------------------------------------------

def _model_at(loc: tuple, data: Any) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` (for listing allowed fields)."""
    model: type[BaseModel] = Profile
    node = data
    for part in loc:
        if part == "connection":
            from harness.devices.driver import DRIVERS, connection_model

            kind = node.get("connection", {}).get("kind") if isinstance(node, dict) else None
            if kind not in DRIVERS:
                return None
            model = connection_model(kind)
        elif part == "runtime":
            model = Runtime
        elif part == "policy":
            model = Policy
        elif part in ("adaptive", "sentinels", "gate") and model is Policy:
            model = {"adaptive": Adaptive, "sentinels": Sentinels, "gate": Gate}[part]
        elif part == "workload":
            model = Workload
        elif part == "calibration" and model is Workload:
            model = Calibration
        else:
            return None
        node = node.get(part) if isinstance(node, dict) else None
    return model


def _describe(err: dict, data: Any) -> str:
    loc = tuple(err["loc"])
    field = ".".join(str(p) for p in loc) or "(top level)"
    kind, msg = err["type"], err["msg"]
    if kind in ("connection_kind_missing", "connection_kind_invalid"):
        return f"connection.kind: {msg}"
    if kind == "missing":
        return f"{field}: required field is missing"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], data)
        if model is None:
            return f"{field}: unknown field"
        close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{field}: unknown field{hint}; allowed here: {', '.join(model.model_fields)}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if isinstance(err.get("input"), dict):  # a check across fields (a model validator): its input is the whole block
        named = re.match(r"[a-z_]+(\.[a-z_]+)+\b", msg)  # the message names its own field, e.g. policy.energy: ...
        if named and (not loc or named.group(0).startswith(field + ".")):
            return msg
        return f"{field}: {msg}"
    return f"{field}: {msg} (got {_echo.repr(err.get('input'))})"


def _check_bounds(data: Any, source: str) -> None:
    """Refuse YAML that expands to more than MAX_VALUES values or nests deeper than MAX_DEPTH (alias bombs):
    counted with a bounded walk, so the check itself stays cheap whatever the aliases expand to."""
    count = 0
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES or depth > MAX_DEPTH:
            raise ProfileError(source, [f"(top level): the profile expands to more than {MAX_VALUES} values or "
                                        f"{MAX_DEPTH} levels (YAML aliases?); a profile is a small mapping"])
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_profile(data: Any, source: str) -> Profile:
    """Validate already-parsed YAML; ``source`` names the file in errors."""
    _check_bounds(data, source)
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}"
        raise ProfileError(source, [f"(top level): expected a mapping with name, connection, runtime, policy, workload; "
                                    f"the file is {what}"])
    try:
        profile = Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(source, [_describe(err, data) for err in e.errors()]) from None
    stem = Path(source).stem
    if source.endswith((".yaml", ".yml")) and profile.name != stem:
        raise ProfileError(source, [f"name: {profile.name!r} must match the file name; rename the file "
                                    f"to {profile.name}.yaml or set name: {stem}"])
    return profile


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # /dev/zero filled memory, a FIFO hung `devices list`
            raise ProfileError(str(path), ["not a regular file (a device, pipe or socket); a profile is a YAML file"])
        if st.st_size > MAX_PROFILE_BYTES:
            raise ProfileError(str(path), [f"file is too large for a profile ({st.st_size} bytes; the limit is "
                                           f"{MAX_PROFILE_BYTES})"])
        with path.open("rb") as f:  # at most the limit, whatever the file grew to since stat
            raw = f.read(MAX_PROFILE_BYTES + 1)
        if len(raw) > MAX_PROFILE_BYTES:
            raise ProfileError(str(path), [f"file is too large for a profile (the limit is {MAX_PROFILE_BYTES} bytes)"])
        text = raw.decode("utf-8")
    except OSError as e:
        raise ProfileError(str(path), [f"cannot read file: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ProfileError(str(path), ["file is not UTF-8 text"]) from None
    try:
        data = yaml.safe_load(text)
        duplicate = _duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ProfileError(str(path), [f"{where}YAML syntax error: {problem}"]) from None
    except RecursionError:  # `x: [[[[...]]]]` 500 deep is 1 KB: the parser recurses per level
        raise ProfileError(str(path), ["nested too deeply (lists or mappings inside each other hundreds of levels "
                                       "down); a profile is a few flat blocks"]) from None
    if duplicate:
        raise ProfileError(str(path), [duplicate])
    return parse_profile(data, str(path))


def _duplicate_key(node: yaml.Node | None, where: str = "", visited: set[int] | None = None) -> str | None:
    """The first key given twice in one mapping, as a message: YAML keeps the last silently, so a second
    ``runtime:`` lower in the file would replace the first without a word. Reads the composed node tree (no
    objects are constructed); an alias is the node it names, walked once (an alias bomb stays cheap)."""
    visited = set() if visited is None else visited
    if id(node) in visited:
        return None
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else None
            if name is not None:
                if name in seen:
                    return (f"{where}{name}: given twice (lines {seen[name] + 1} and {key.start_mark.line + 1}); "
                            "YAML would keep only the second: merge them into one")
                seen[name] = key.start_mark.line
            found = _duplicate_key(value, f"{where}{name}." if name is not None else where, visited)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item, where, visited)
            if found:
                return found
    return None


def profile_yaml(profile: Profile) -> str:
    """The profile as harness reads it, without the settings of the runtime it does not use."""
    body = profile.as_dict()
    rt = body.get("runtime", {})
    if rt.get("name") != "tflite":
        rt.pop("delegate", None)
    if rt.get("name") != "onnxruntime":
        rt.pop("execution_provider", None)
    return yaml.safe_dump(body, sort_keys=False)


def is_valid_name(name: str) -> bool:
    return re.fullmatch(NAME_RE, name) is not None  # re.match let "evil\n" through: $ matches before a final \n
