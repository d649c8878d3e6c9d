"""Fidelity of the direct exporters against a deployment toolchain: Keras + TFLiteConverter and tf2onnx.

For a seeded sample of N architectures per space, the reference is the same network written as a Keras
functional model (our Graph as the space builds it, node by node; NB201's 'none' is ``zeros_like``, so the
converters see exactly what PyTorch computes) holding *our* weights, converted by TFLiteConverter and by
tf2onnx (opset 13, NCHW input). It reports

  (a) output equality: ours (ONNX, TFLite) vs theirs (ONNX, TFLite) and the Keras model, same input;
  (b) op histograms ours vs theirs over the sample, and how many architectures match exactly once the
      layout ops each toolchain adds are set aside (LAYOUT_OPS);
  (c) latency, timed interleaved (ours, reference, reference again; shuffled per round; 1 thread) on
      onnxruntime (all optimisations), LiteRT with XNNPACK and LiteRT built-in kernels: SRCC and median
      ratio ours/theirs, beside the noise floor (the reference timed against itself);
  (d) export time per model, ours (build + graph passes + write) vs theirs (Keras build + convert).

Goal (graph: prune): SRCC within 0.01 of the noise floor on every runtime, median ratio within 5 %.

Needs the optional ``reference`` extra, in its own environment (TensorFlow is never a harness dependency):

    python3 -m venv refvenv && refvenv/bin/pip install -e '.[reference]'
    refvenv/bin/python benchmarks/fidelity.py --space nb201 --n 40 --ref-cache .fidelity-cache

Conversion runs in this process; timing runs in a child process that never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

# ops a toolchain adds for layout or naming only, not compute (tf2onnx: NHWC<->NCHW transposes and
# Identity outputs; TFLiteConverter: reshapes around FULLY_CONNECTED)
LAYOUT_OPS = {"Transpose", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "RESHAPE", "SQUEEZE",
              "EXPAND_DIMS"}
RUNTIMES = ("onnxruntime", "litert-xnnpack", "litert-builtin")


# --- reference: Keras model of a Graph, with our weights ------------------------------------

def to_keras(graph, seed: int = 0):
    import keras

    from harness.models.weights import graph_weights

    weights = graph_weights(graph, seed)
    inp = keras.Input(graph.input_shape, batch_size=1, name="input")
    t = {"input": inp}

    def act(y, name):
        if name is None:
            return y
        if name == "relu":
            return keras.layers.ReLU()(y)
        if name == "relu6":
            return keras.layers.ReLU(max_value=6.0)(y)
        return keras.layers.Activation({"hswish": "hard_swish", "hsigmoid": "hard_sigmoid"}[name])(y)

    for n in graph.nodes:
        a, x, w = n.attrs, [t[i] for i in n.inputs], weights[n.name]
        if n.op == "conv":
            bias = w.get("bias")
            k = w["kernel"]  # OIHW
            if a["groups"] > 1 and a["groups"] == a["cin"] == a["cout"]:
                layer = keras.layers.DepthwiseConv2D(a["kernel"], a["stride"], padding=a["padding"],
                                                     use_bias=bias is not None)
                kernel = k.transpose(2, 3, 0, 1)
            elif a["groups"] > 1:  # Keras 3 wraps grouped Conv2D in a call tf2onnx cannot read: TF's own op
                import tensorflow as tf

                def grouped(t, kern=k.transpose(2, 3, 1, 0), s=a["stride"], p=a["padding"].upper(), b=bias):
                    y = tf.nn.conv2d(t, tf.constant(kern), s, p)  # constants made inside: frozen, not captured
                    return y if b is None else tf.nn.bias_add(y, tf.constant(b))

                t[n.output] = act(keras.layers.Lambda(grouped)(x[0]), a.get("act"))
                continue
            else:
                layer = keras.layers.Conv2D(a["cout"], a["kernel"], a["stride"], padding=a["padding"],
                                            groups=a["groups"], use_bias=bias is not None)
                kernel = k.transpose(2, 3, 1, 0)
            y = layer(x[0])
            layer.set_weights([kernel] + ([bias] if bias is not None else []))
            y = act(y, a.get("act"))
        elif n.op == "relu":
            y = keras.layers.ReLU()(x[0])
        elif n.op == "add":
            y = act(keras.layers.Add()(x), a.get("act"))
        elif n.op == "zero":  # PyTorch's x * 0: zeros of x's shape
            y = keras.ops.zeros_like(x[0])
        elif n.op == "avgpool":
            y = keras.layers.AveragePooling2D(a["kernel"], a["stride"], padding=a["padding"])(x[0])
        elif n.op == "affine":  # a standalone BatchNorm: x * scale + shift
            eps = 1e-3
            layer = keras.layers.BatchNormalization(epsilon=eps)
            y = layer(x[0], training=False)
            c = a["channels"]
            layer.set_weights([w["scale"], w["shift"], np.zeros(c, np.float32), np.full(c, 1 - eps, np.float32)])
            y = act(y, a.get("act"))
        elif n.op == "global_avgpool":
            y = keras.layers.GlobalAveragePooling2D(keepdims=bool(a.get("keepdims")))(x[0])
        elif n.op == "dense":
            layer = keras.layers.Dense(a["cout"])
            y = layer(keras.layers.Flatten()(x[0]) if len(x[0].shape) == 4 else x[0])
            layer.set_weights([w["weight"].T, w["bias"]])
        elif n.op == "shuffle":
            h, wd, c = graph.shapes[n.output]
            g = a["groups"]
            y = keras.layers.Reshape((h, wd, g, c // g))(x[0])
            y = keras.layers.Permute((1, 2, 4, 3))(y)
            y = keras.layers.Reshape((h, wd, c))(y)
        elif n.op == "mul":
            y = keras.layers.Multiply()(x)
        else:
            raise ValueError(f"no Keras translation for op {n.op!r}")
        t[n.output] = y
    return keras.Model(inp, t[graph.output])  # a functional model holds what reaches the output


@contextlib.contextmanager
def quiet():
    """Silence TensorFlow's converters (they print to the C-level stdout/stderr)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def convert_reference(graph, seed: int) -> tuple[bytes, bytes, object, float]:
    import tensorflow as tf
    import tf2onnx

    t0 = time.perf_counter()
    with quiet():
        model = to_keras(graph, seed)
        tfl = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        spec = (tf.TensorSpec((1, *graph.input_shape), tf.float32, name="input"),)
        fn = tf.function(lambda x: model(x, training=False))
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=13, inputs_as_nchw=["input"])
    return tfl, proto.SerializeToString(), model, time.perf_counter() - t0


# --- op histograms --------------------------------------------------------------------------

def tflite_ops(blob: bytes) -> Counter:
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromPackedBuf(blob, 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    return Counter(names[max(m.operatorCodes[o.opcodeIndex].builtinCode,
                             m.operatorCodes[o.opcodeIndex].deprecatedBuiltinCode)]
                   for o in m.subgraphs[0].operators)


def onnx_ops(blob: bytes) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load_from_string(blob).graph.node)


def compute_only(c: Counter) -> Counter:
    return Counter({k: v for k, v in c.items() if k not in LAYOUT_OPS})


# --- timing (child process, no TensorFlow) ----------------------------------------------------

class _Runner:
    def __init__(self, kind: str, path: str, shape: tuple[int, int, int]):
        x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
        if kind == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            feed = {sess.get_inputs()[0].name: x.transpose(0, 3, 1, 2).copy()}
            self.call = lambda: sess.run(None, feed)
        else:
            from ai_edge_litert import interpreter as tfl

            kw = {} if kind == "litert-xnnpack" else {
                "experimental_op_resolver_type": tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
            it = tfl.Interpreter(model_path=path, num_threads=1, **kw)
            it.allocate_tensors()
            it.set_tensor(it.get_input_details()[0]["index"], x)
            self.call = it.invoke

    def time(self, runs: int) -> list[float]:
        out = []
        for _ in range(runs):
            t = time.perf_counter()
            self.call()
            out.append((time.perf_counter() - t) * 1e3)
        return out


def time_all(manifest: dict, rounds: int, runs: int, warmup: int) -> dict:
    """Per runtime and model: the median of every timed run, over interleaved, shuffled rounds."""
    rng = np.random.default_rng(0)
    archs = manifest["archs"]
    out: dict = {}
    for runtime in RUNTIMES:
        fmt = "onnx" if runtime == "onnxruntime" else "tflite"
        runners = {}
        for i, a in enumerate(archs):
            shape = tuple(a["input_shape"])
            runners[(i, "ours")] = _Runner(runtime, a[f"ours_{fmt}"], shape)
            runners[(i, "ref")] = _Runner(runtime, a[f"ref_{fmt}"], shape)
            runners[(i, "ref2")] = _Runner(runtime, a[f"ref_{fmt}"], shape)  # the noise floor
        for r in runners.values():
            r.time(warmup)
        times: dict = {k: [] for k in runners}
        for _ in range(rounds):
            for i in rng.permutation(len(archs)):
                for which in rng.permutation(["ours", "ref", "ref2"]):
                    times[(int(i), str(which))] += runners[(int(i), str(which))].time(runs)
        out[runtime] = {w: [statistics.median(times[(i, w)]) for i in range(len(archs))]
                        for w in ("ours", "ref", "ref2")}
        del runners
    return out


# --- the benchmark --------------------------------------------------------------------------

def cached_reference(built, ref_cache: Path | None, x: np.ndarray) -> tuple[bytes, bytes, np.ndarray, float]:
    """(reference TFLite, reference ONNX, Keras output for ``x``, conversion seconds), converted once per
    graph and input in ``ref_cache`` (conversions dominate the run; our side is what changes)."""
    import hashlib

    tag = hashlib.sha256(f"{built.fingerprint()}:{x.tobytes().hex()[:64]}".encode()).hexdigest()[:20]
    files = [ref_cache / f"{tag}.{ext}" for ext in ("tflite", "onnx", "npy", "json")] if ref_cache else []
    if files and all(f.exists() for f in files):
        return (files[0].read_bytes(), files[1].read_bytes(), np.load(files[2]),
                json.loads(files[3].read_text())["seconds"])
    tfl, onx, model, seconds = convert_reference(built, 0)
    keras_out = np.asarray(model(x, training=False))
    if files:
        ref_cache.mkdir(parents=True, exist_ok=True)
        files[0].write_bytes(tfl)
        files[1].write_bytes(onx)
        np.save(files[2], keras_out)
        files[3].write_text(json.dumps({"seconds": seconds}))
    return tfl, onx, keras_out, seconds


def prepare_models(space_name: str, n: int, seed: int, graph_mode: str, work: Path,
                   ref_cache: Path | None = None) -> dict:
    from harness.models.export_onnx import to_onnx
    from harness.models.export_tflite import to_tflite
    from harness.models.passes import is_degenerate, prepare
    from harness.models.spaces import get_space

    space = get_space(space_name)
    archs = space.sample(n, seed)
    rows = []
    x_rng = np.random.default_rng(seed)
    for i, arch in enumerate(archs):
        t0 = time.perf_counter()
        built = space.build(arch)
        g = prepare(built, graph_mode)
        t1 = time.perf_counter()
        ours_tfl = to_tflite(g)
        t2 = time.perf_counter()
        ours_onnx = to_onnx(g).SerializeToString()
        t3 = time.perf_counter()
        row = {"key": arch.key, "input_shape": list(built.input_shape), "degenerate": is_degenerate(built),
               "ours_tflite_s": (t1 - t0) + (t2 - t1), "ours_onnx_s": (t1 - t0) + (t3 - t2)}
        x = x_rng.standard_normal((1, *built.input_shape)).astype(np.float32)
        try:
            ref_tfl, ref_onnx, keras_out, ref_s = cached_reference(built, ref_cache, x)
        except Exception as e:  # noqa: BLE001 - report the converter's failure, keep going
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
            print(f"  [{i + 1}/{n}] {arch.key}: reference conversion failed: {row['error']}", flush=True)
            continue
        row["ref_s"] = ref_s
        for name, blob in (("ours_tflite", ours_tfl), ("ours_onnx", ours_onnx), ("ref_tflite", ref_tfl),
                           ("ref_onnx", ref_onnx)):
            path = work / f"{space_name}-{i}-{name}.{'tflite' if 'tflite' in name else 'onnx'}"
            path.write_bytes(blob)
            row[name] = str(path)
        row["ops"] = {"ours_tflite": tflite_ops(ours_tfl), "ref_tflite": tflite_ops(ref_tfl),
                      "ours_onnx": onnx_ops(ours_onnx), "ref_onnx": onnx_ops(ref_onnx)}
        row["outputs"] = outputs_agree(row, x, keras_out)
        rows.append(row)
        print(f"  [{i + 1}/{n}] {arch.key[:60]}: ours {row['ours_tflite_s'] * 1e3:.0f} ms, reference "
              f"{ref_s:.1f} s, max output diff {max(row['outputs'].values()):.1e}", flush=True)
    return {"space": space_name, "graph_mode": graph_mode, "archs": rows}


def outputs_agree(row: dict, x: np.ndarray, keras_out: np.ndarray) -> dict[str, float]:
    """Max |difference| / max(1, max |reference|) between every output and the reference TFLite's."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    def tfl(path):
        it = Interpreter(model_path=path, num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"]).reshape(-1)

    def onx(path):
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x.transpose(0, 3, 1, 2).copy()})[0].reshape(-1)

    ref = tfl(row["ref_tflite"])
    scale = max(1.0, float(np.abs(ref).max()))
    outs = {"ours_tflite": tfl(row["ours_tflite"]), "ours_onnx": onx(row["ours_onnx"]),
            "ref_onnx": onx(row["ref_onnx"]), "keras": keras_out.reshape(-1)}
    return {k: float(np.abs(v - ref).max() / scale) for k, v in outs.items()}


def report(result: dict, timing: dict) -> None:
    from scipy.stats import spearmanr

    ok = [a for a in result["archs"] if "error" not in a]
    failed = [a for a in result["archs"] if "error" in a]
    print(f"\n== {result['space']} (graph: {result['graph_mode']}): {len(ok)} architectures compared"
          + (f", {len(failed)} reference conversions failed" if failed else "")
          + f", {sum(a['degenerate'] for a in ok)} degenerate ==")
    print("(a) outputs, max |diff| / max(1, |ref TFLite|):")
    for k in ("ours_tflite", "ours_onnx", "ref_onnx", "keras"):
        print(f"    {k:12s} worst {max(a['outputs'][k] for a in ok):.1e}")
    print("(b) op histograms over the sample (ours | theirs); archs equal up to layout ops:")
    for fmt in ("tflite", "onnx"):
        ours = sum((Counter(a["ops"][f"ours_{fmt}"]) for a in ok), Counter())
        theirs = sum((Counter(a["ops"][f"ref_{fmt}"]) for a in ok), Counter())
        equal = [a for a in ok if compute_only(Counter(a["ops"][f"ours_{fmt}"]))
                 == compute_only(Counter(a["ops"][f"ref_{fmt}"]))]
        print(f"    {fmt}: {len(equal)}/{len(ok)} equal")
        for op in sorted(set(ours) | set(theirs)):
            mark = "" if ours[op] == theirs[op] else ("   (layout)" if op in LAYOUT_OPS else "   <-")
            print(f"      {op:20s} {ours[op]:6d} | {theirs[op]:6d}{mark}")
        for a in [a for a in ok if a not in equal][:3]:
            o, t = compute_only(Counter(a["ops"][f"ours_{fmt}"])), compute_only(Counter(a["ops"][f"ref_{fmt}"]))
            diff = {op: (o[op], t[op]) for op in set(o) | set(t) if o[op] != t[op]}
            print(f"      differs: {a['key'][:50]} {diff}")
    print("(c) latency, interleaved, 1 thread: SRCC ours~ref | noise floor ref~ref | median ratio ours/ref "
          "| noise ratio | goal")
    for runtime, t in timing.items():
        ours, ref, ref2 = (np.array(t[w]) for w in ("ours", "ref", "ref2"))
        srcc, floor = spearmanr(ours, ref)[0], spearmanr(ref2, ref)[0]
        ratio, noise = float(np.median(ours / ref)), float(np.median(ref2 / ref))
        good = srcc >= floor - 0.01 and abs(ratio - 1) <= 0.05
        print(f"    {runtime:15s} {srcc:6.3f} | {floor:6.3f} | {ratio:6.3f} | {noise:6.3f} | "
              f"{'met' if good else 'NOT met'}  (median latency ours {np.median(ours):.3f} ms)")
    ours_s = [a["ours_tflite_s"] for a in ok] + [a["ours_onnx_s"] for a in ok]
    ref_s = [a["ref_s"] for a in ok]
    print(f"(d) export per model: ours {statistics.median(ours_s) * 1e3:.1f} ms per format (build + passes + "
          f"write), reference {statistics.median(ref_s):.2f} s (Keras + TFLiteConverter + tf2onnx), "
          f"{statistics.median(ref_s) / (2 * statistics.median(ours_s)):.0f}x")


def main() -> None:
    from _cli import parser  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--space", action="append", help="space(s) to compare (repeat); default nb201 and fbnet")
    ap.add_argument("--n", type=int, default=30, help="architectures per space")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--graph", default="prune", choices=("prune", "keep"))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per model per round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--ref-cache", type=Path, default=None,
                    help="keep the converters' models here and reuse them on the next run (e.g. .fidelity-cache)")
    ap.add_argument("--time-only", help=argparse.SUPPRESS)  # child: time the models of a manifest
    args = ap.parse_args()
    if args.time_only:
        manifest = json.loads(Path(args.time_only).read_text())
        manifest["archs"] = [a for a in manifest["archs"] if "error" not in a]
        timing = time_all(manifest, args.rounds, args.runs, args.warmup)
        Path(args.time_only).with_suffix(".timing.json").write_text(json.dumps(timing))
        return
    import importlib.util

    missing = [m for m in ("tensorflow", "tf2onnx") if importlib.util.find_spec(m) is None]
    if missing and not args.ref_cache:
        sys.exit(f"fidelity.py compares our exports with TensorFlow's converters, and {', '.join(missing)} "
                 "is not installed here. Use a venv with the reference extra:\n"
                 "  python3 -m venv refvenv && refvenv/bin/pip install -e '.[reference]'\n"
                 "  refvenv/bin/python benchmarks/fidelity.py --space nb201 --n 40 --ref-cache .fidelity-cache")
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        work = Path(tmp)
        for space in args.space or ["nb201", "fbnet"]:
            print(f"{space}: exporting {args.n} architectures ours and with the converters ...", flush=True)
            result = prepare_models(space, args.n, args.seed, args.graph, work, args.ref_cache)
            manifest = work / f"{space}.json"
            manifest.write_text(json.dumps(result))
            print(f"{space}: timing (interleaved, {args.rounds} rounds x {args.runs} runs) ...", flush=True)
            subprocess.run([sys.executable, __file__, "--time-only", str(manifest), "--rounds", str(args.rounds),
                            "--runs", str(args.runs), "--warmup", str(args.warmup)], check=True)
            timing = json.loads(manifest.with_suffix(".timing.json").read_text())
            report(result, timing)


if __name__ == "__main__":
    from _cli import run

    run(main)
