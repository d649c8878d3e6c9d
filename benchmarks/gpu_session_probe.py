"""GPU session probe: why two visits of one architecture differ on a GPU. For a few NB201 architectures, the
median of 200 timed runs in four new onnxruntime CUDA sessions against four 200-run blocks of one session
(0.3 s apart), with cuDNN's algorithm search exhaustive (onnxruntime's default) or heuristic, and with CUDA
graphs (``enable_cuda_graph``). GPU machines with onnxruntime-gpu only; elsewhere it says why and exits 0.

    python benchmarks/gpu_session_probe.py [--n 6] [--seed 1]
"""

from __future__ import annotations

import statistics
import tempfile
import time

MODES = {"exhaustive": {}, "heuristic": {"cudnn_conv_algo_search": "HEURISTIC"},
         "cuda_graph": {"enable_cuda_graph": "1"}}


def block_median(invoke, n: int = 200) -> float:
    for _ in range(30):
        invoke()
    xs = []
    for _ in range(n):
        s = time.perf_counter()
        invoke()
        xs.append((time.perf_counter() - s) * 1e3)
    return statistics.median(xs)


def main() -> int:
    from _cli import parser  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider: nothing to probe; run this on a "
              "GPU machine with onnxruntime-gpu")
        return 0
    from harness.devices import runner
    from harness.models.cache import ModelCache
    from harness.models.spaces import get_space

    space = get_space("nb201")
    cache = ModelCache(tempfile.mkdtemp())
    for arch in space.sample(args.n, args.seed):
        path = str(cache.get(space.build(arch), "onnx").path)
        row = [f"{arch.label:>6}"]
        for mode, opts in MODES.items():
            req = {"runtime": "onnxruntime", "model": path, "execution_provider": "CUDAExecutionProvider",
                   "provider_options": opts}
            try:
                sessions = [block_median(runner.load(req)[0]) for _ in range(4)]
                invoke = runner.load(req)[0]
                blocks = []
                for _ in range(4):
                    blocks.append(block_median(invoke))
                    time.sleep(0.3)
                row.append(f"{mode}: sessions {min(sessions):.3f}-{max(sessions):.3f} ms, "
                           f"blocks {min(blocks):.3f}-{max(blocks):.3f} ms")
            except Exception as e:
                row.append(f"{mode}: {type(e).__name__}: {str(e)[:150]}")
        print(" | ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    from _cli import run

    run(main)
