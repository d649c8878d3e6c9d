"""Long fuzz run: the property tests of tests/test_fuzz.py with many more cases and a random seed.

    python benchmarks/fuzz.py [--examples 5000] [--seed N] [--only importer,shell]

CI runs a few hundred fixed-seed cases per target; this runs ``--examples`` per target with a fresh seed
and prints, per target, the cases run, the time and the outcome. A failure prints hypothesis's smallest
failing input (rerun with the same --seed to reproduce it).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"importer": "test_fuzz_importer", "profile-model": "test_fuzz_profile_model",
           "profile-file": "test_fuzz_profile_file", "runner-answers": "test_fuzz_runner_answers",
           "runner-worker": "test_fuzz_runner_worker", "benchmark-model": "test_fuzz_benchmark_model_output",
           "shell": "test_fuzz_phone_shell"}


def main() -> int:
    from _cli import parser  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--examples", type=int, default=5000, help="cases per target")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(TARGETS)}")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    asked = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = [t for t in asked if t not in TARGETS]
    if unknown:
        ap.error(f"--only: unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    chosen = [t for t in TARGETS if not asked or t in asked]
    env = {**os.environ, "HARNESS_FUZZ_EXAMPLES": str(args.examples), "HARNESS_FUZZ_SEED": str(seed),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"seed {seed}, {args.examples} cases per target")
    failed = 0
    for name in chosen:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "--timeout", "0",
                            f"--hypothesis-seed={seed}", f"tests/test_fuzz.py::{TARGETS[name]}"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        ok = p.returncode == 0
        failed += not ok
        print(f"{name:16s} {args.examples:7d} cases {dt:8.1f} s  {'ok' if ok else 'FAILED'}", flush=True)
        if not ok:
            print(p.stdout[-6000:], p.stderr[-2000:])
    return 1 if failed else 0


if __name__ == "__main__":
    from _cli import run

    run(main)
