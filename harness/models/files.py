"""Measure any model file (``harness measure --device X --model my.onnx``), as benchmark_model users do.

Model files live in the pseudo-space ``file``: each file is an "architecture" keyed by its name and
content hash (``my.onnx@1a2b3c4d5e6f``), so measuring the same file again resumes (it is skipped), an
edited file is a new entry, and the store, the conditions, failures and ``--remeasure`` work exactly as
for search spaces. Files are measured as they are: no export, no graph passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.models.cache import Artifact, sha256_file
from harness.models.spaces import Arch

SPACE = "file"
KEY_COLUMNS = ["file", "sha256"]
FORMATS = {".onnx": "onnx", ".tflite": "tflite"}
RUNTIME_OF = {"onnx": "onnxruntime", "tflite": "tflite"}


class ModelFileError(HarnessError):
    """A model file that cannot be measured (missing, unknown format, not the format its name says)."""


@dataclass(frozen=True)
class ModelFile:
    path: Path
    format: str
    sha256: str

    @property
    def arch(self) -> Arch:
        return Arch(SPACE, f"{self.path.name}@{self.sha256[:12]}", {"file": self.path.name, "sha256": self.sha256})


def _looks_like(path: Path, fmt: str) -> bool:
    """A cheap check of the file's first bytes, so a renamed or truncated file fails here, not on the device."""
    head = path.open("rb").read(8)
    if fmt == "tflite":
        return len(head) == 8 and head[4:8] == b"TFL3"  # the flatbuffer file identifier
    if len(head) == 8 and head[4:8] == b"TFL3":  # a TFLite file named .onnx: its first byte can pass as protobuf
        return False
    return len(head) > 1 and head[0] in (0x08, 0x0A, 0x12, 0x1A, 0x22, 0x3A, 0x42, 0x52)  # an ONNX protobuf field


def open_model(path: str | Path) -> ModelFile:
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"--model {path} is a folder; name the model files in it (--model {path}/NAME.onnx)")
    if not path.is_file():
        raise ModelFileError(f"--model {path}: no such file")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        kind = path.suffix or "a file without an extension"
        raise ModelFileError(f"--model {path}: harness measures .onnx and .tflite files, not {kind}")
    if not _looks_like(path, fmt):
        raise ModelFileError(f"--model {path}: does not look like a {fmt} model (wrong extension or a truncated "
                             "file?)")
    return ModelFile(path, fmt, sha256_file(path))


class FileSpace:
    """Just enough of a search space for a campaign: a name, key columns, and the files as artifacts."""

    name = SPACE
    key_columns = KEY_COLUMNS

    def __init__(self, models: list[ModelFile]):
        self.models = {m.arch.key: m for m in models}

    def archs(self) -> list[Arch]:
        return [m.arch for m in self.models.values()]

    def check_runtime(self, profile) -> None:
        """Every file must be in the profile runtime's format; say which profile would run it."""
        fmt = profile.runtime.model_format
        wrong = [m for m in self.models.values() if m.format != fmt]
        if wrong:
            m = wrong[0]
            raise ModelFileError(f"--model {m.path} is {m.format.upper()}, but profile {profile.name} runs "
                                 f"{profile.runtime.name} ({fmt} files); use a {RUNTIME_OF[m.format]} profile, "
                                 f"e.g. local-{'onnx' if m.format == 'onnx' else 'tflite'}")

    def artifact(self, arch: Arch) -> Artifact:
        m = self.models[arch.key]
        # a file as given: no graph of ours to tell whether its output is constant (None: unknown, not 0)
        return Artifact(m.path.resolve(), m.format, m.sha256, exported=False, export_seconds=0.0,
                        graph_mode=None, exporter_version=None, degenerate=None)  # type: ignore[arg-type]
