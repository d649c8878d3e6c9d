"""Content-addressed cache of exported model files.

The key hashes the graph's structure as built (which includes the input shape), the graph mode
(``prune``/``keep``, see harness.models.passes), :data:`EXPORTER_VERSION`, the exporter's format
version (exporter code and library versions) and the weight seed, so a second campaign never
re-exports and a changed exporter never serves a stale file. Writes are atomic (temp file + rename),
so concurrent campaigns and crashes cannot leave a half-written model behind. Each file's SHA-256 is kept
beside it (``<key>.<suffix>.sha256``, with the file's name) and checked whenever the file is served: a file
changed on disk (a bad sector, a copy over it, a truncation) would be measured as the architecture's model,
silently; it is exported again instead (``Artifact.repaired``), as is a file from before the hashes were kept.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ExportError, UnknownNameError
from harness.models.graph import Graph
from harness.devices.profile import Calibration
from harness.models.passes import DEFAULT_GRAPH_MODE, check_mode, is_degenerate, prepare

# What a model file of an architecture contains: bump it whenever a builder, a graph pass or an exporter
# changes the exported model. It is part of each file's content identity and recorded with each
# measurement; measurements of an older version are reported as stale (`measure --remeasure-stale`).
#   1: direct exporters, every node exported (dead convs, x*0, unshared pools, separate ReLUs)
#   2: graph modes prune/keep; prune = constant folding, dead-node elimination, merged ops, fused ReLUs
#   3: prune also fuses a ReLU into the average pool before it (TFLite AVERAGE_POOL_2D, as the converter)
EXPORTER_VERSION = 3


@dataclass(frozen=True)
class ModelFormat:
    name: str
    suffix: str
    version: str
    write: Callable[[Graph, str, int, int], None]  # (graph, path, seed, batch)


# format name -> (file suffix, the module that writes it: its FORMAT_VERSION and export_<name>). Each module is
# imported only when its format is used: an onnxruntime-only machine (a GPU box) needs no LiteRT to export ONNX.
FORMATS = {"onnx": (".onnx", "harness.models.export_onnx"), "tflite": (".tflite", "harness.models.export_tflite")}


def get_format(name: str) -> ModelFormat:
    if name not in FORMATS:
        raise UnknownNameError("model format", name, list(FORMATS))
    suffix, module_name = FORMATS[name]
    module = importlib.import_module(module_name)
    return ModelFormat(name, suffix, module.FORMAT_VERSION, getattr(module, f"export_{name}"))


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (models and binaries pushed to devices)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """An exported model file. ``digest`` names its content (also the file name on devices)."""

    path: Path
    format: str
    digest: str
    exported: bool  # False when served from the cache
    export_seconds: float
    graph_mode: str = DEFAULT_GRAPH_MODE
    exporter_version: int = EXPORTER_VERSION
    degenerate: bool | None = False  # the output does not depend on the input (passes); None: not known (a user's file)
    repaired: bool = False  # the cached file no longer matched its recorded hash and was exported again

    @property
    def filename(self) -> str:
        return self.path.name


class ModelCache:
    def __init__(self, root: str | os.PathLike, seed: int = 0):
        self.root = Path(root)
        self.seed = seed

    def key(self, graph: Graph, fmt: ModelFormat, graph_mode: str = DEFAULT_GRAPH_MODE, batch: int = 1,
            precision: str = "fp32", calibration: Calibration | None = None) -> str:
        body: dict = {"graph": graph.fingerprint(), "format": fmt.version, "seed": self.seed,
                      "graph_mode": check_mode(graph_mode), "exporter_version": EXPORTER_VERSION}
        if batch != 1:  # only when not the default: bs1 fp32 files keep the keys they have
            body["batch"] = batch
        if precision != "fp32":
            from harness.models.precision import PRECISION_VERSION, for_format

            body["precision"] = [precision, PRECISION_VERSION]
            if precision == "int8":
                body["calibration"] = for_format(fmt.name, calibration).label()
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]

    def path_for(self, graph: Graph, format_name: str, graph_mode: str = DEFAULT_GRAPH_MODE, batch: int = 1,
                 precision: str = "fp32", calibration: Calibration | None = None) -> Path:
        fmt = get_format(format_name)
        key = self.key(graph, fmt, graph_mode, batch, precision, calibration)
        return self.root / fmt.name / key[:2] / f"{key}{fmt.suffix}"

    def get(self, graph: Graph, format_name: str, graph_mode: str = DEFAULT_GRAPH_MODE, *, batch: int = 1,
            precision: str = "fp32", calibration: Calibration | None = None) -> Artifact:
        """The exported file for ``graph`` as a space built it, prepared for ``graph_mode`` (the passes
        run before export), at ``batch`` and ``precision`` (int8 scales from ``calibration``), exporting it
        once if it is not cached yet."""
        fmt = get_format(format_name)
        path = self.path_for(graph, format_name, graph_mode, batch, precision, calibration)
        digest = path.stem
        facts = dict(graph_mode=graph_mode, exporter_version=EXPORTER_VERSION, degenerate=is_degenerate(graph))
        repaired = False
        if path.exists():
            state = self._check(path)
            if state != "changed":
                return Artifact(path, fmt.name, digest, False, 0.0, **facts)
            repaired = True
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=fmt.suffix)
        except OSError as e:
            raise ExportError(f"cannot write the model cache at {path.parent} ({e.strerror or e})"
                              + (f": {path.name} no longer matches the SHA-256 recorded when it was exported" if repaired
                                 else "") + "; point --cache-dir (or HARNESS_CACHE) at a folder this user can write "
                              "to") from None
        os.close(fd)
        t0 = time.perf_counter()
        try:
            fmt.write(prepare(graph, graph_mode), tmp, self.seed, batch)
            if precision != "fp32":
                from harness.models.precision import convert

                from harness.models.precision import for_format

                convert(fmt.name, tmp, precision, for_format(fmt.name, calibration))
            _write_hash(path, sha256_file(tmp))  # first: a crash before the rename leaves no file to trust
            os.replace(tmp, path)  # over a changed file too: the path never goes missing under another campaign
        except BaseException as e:  # Ctrl-C included: no temp file is left behind
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, Exception):
                raise ExportError(f"exporting {graph.name} to {fmt.name} failed: {e}") from e
            raise
        return Artifact(path, fmt.name, digest, True, time.perf_counter() - t0, repaired=repaired, **facts)

    def verified(self, path: Path) -> bool:
        """Is the cached file at ``path`` the one exported there (its recorded SHA-256 and name)? For callers that
        know a file's path already (the farm's hints); they export again through :meth:`get` when it is not."""
        try:
            return path.exists() and self._check(path) == "intact"
        except ExportError:
            return False

    def _check(self, path: Path) -> str:
        """``intact``; ``changed`` (another file's bytes, truncated, or no record: exported again, which costs one
        export per file cached before records were kept: exports are deterministic, so the bytes are the same);
        ``unverified``: no record and a cache this user cannot write, served as before."""
        try:
            recorded = _hash_path(path).read_text().split()
        except FileNotFoundError:
            return "changed" if os.access(path.parent, os.W_OK) else "unverified"
        except OSError:
            return "unverified"  # an unreadable record (permissions) is no evidence against the file
        try:
            actual = sha256_file(path)
        except OSError as e:
            raise ExportError(f"cannot read the cached model {path} ({e.strerror or e}); delete it to have it "
                              "exported again") from None
        # the record names its file: a swapped pair (file and record together) is another model's
        return "intact" if recorded[:1] == [actual] and recorded[1:2] == [path.name] else "changed"


def _hash_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_hash(path: Path, digest: str) -> None:
    """``<sha256>  <file name>`` (sha256sum's format: `sha256sum -c` checks a cache folder by hand)."""
    side = _hash_path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".sha256")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{digest}  {path.name}\n")
        os.replace(tmp, side)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
