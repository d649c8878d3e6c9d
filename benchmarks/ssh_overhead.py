"""Per-model overhead of the SSH path vs the local driver on the same models (loopback sshd).

Both run the same runner and policy; the SSH path adds SFTP pushes (content-named, hash-checked) and
one JSON round trip per model over an encrypted channel. Prints both campaign times and the ratio.

    python benchmarks/ssh_overhead.py [--models 50]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from harness.campaign import run_campaign
from harness.devices.registry import ProfileRegistry
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from harness.testing.sshd import TestSSHServer


def campaign_seconds(store: Store, profile, space, archs, cache) -> float:
    t = time.perf_counter()
    s = run_campaign(store, profile, space, archs, cache=cache)
    assert s.ok == len(archs) * s.rounds, s  # ok counts visits: rounds per architecture
    return time.perf_counter() - t


def main() -> None:
    from _cli import parser, positive  # benchmarks/ is on sys.path when a script runs

    ap = parser(__doc__)
    ap.add_argument("--models", type=positive, default=50)
    args = ap.parse_args()
    space = get_space("nb201")
    archs = space.sample(args.models, 0)
    local = ProfileRegistry().get("local-onnx")
    with tempfile.TemporaryDirectory() as tmp, TestSSHServer(Path(tmp) / "sshd") as server:
        cache = ModelCache(Path(tmp) / "cache")
        for a in archs:
            cache.get(space.build(a), "onnx")
        remote = server.profile("loopback", runtime=local.runtime.as_dict() if hasattr(local.runtime, "as_dict")
                                else local.runtime.model_dump(), policy=local.policy.model_dump())
        with Store(Path(tmp) / "h.db") as st:
            t_local = campaign_seconds(st, local, space, archs, cache)
            t_ssh_cold = campaign_seconds(st, remote, space, archs, cache)
            warm = remote.model_copy(update={"name": "loopback-again"})
            t_ssh_warm = campaign_seconds(st, warm, space, archs, cache)  # models already on the device
    n = args.models
    from harness.analysis.data import policy_text

    print(f"{n} cached NB201 models, local-onnx policy ({policy_text(local.policy.model_dump())}, "
          f"{local.runtime.threads} thread)")
    print(f"local driver:             {t_local:.2f} s")
    print(f"ssh, models pushed:       {t_ssh_cold:.2f} s  ratio {t_ssh_cold / t_local:.2f}x  "
          f"(+{(t_ssh_cold - t_local) / n * 1e3:.0f} ms/model)")
    print(f"ssh, models already there: {t_ssh_warm:.2f} s  ratio {t_ssh_warm / t_local:.2f}x  "
          f"(+{(t_ssh_warm - t_local) / n * 1e3:.0f} ms/model)")


if __name__ == "__main__":
    from _cli import run

    run(main)
