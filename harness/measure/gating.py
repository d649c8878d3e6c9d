"""Device-state gating: before a model, wait (bounded) until the device is back under the profile's limits.

The wait is polled, never open-ended: after ``max_wait_s`` the outcome says ``timed_out`` and the campaign
measures anyway (recorded) or stops, per ``on_timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.measure.clock import Clock
from harness.measure.policy import Gate


@dataclass
class GateOutcome:
    waited_s: float = 0.0
    timed_out: bool = False
    observable: bool = True
    reasons: list[str] = field(default_factory=list)  # what was over the limit when the wait began or ended
    state: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"waited_s": round(self.waited_s, 3), "timed_out": self.timed_out, "observable": self.observable,
                "reasons": self.reasons, "state": self.state}


def _max(d: Any) -> float | None:
    if isinstance(d, dict):
        vals = [float(v) for v in d.values() if isinstance(v, (int, float))]
        return max(vals) if vals else None
    return float(d) if isinstance(d, (int, float)) else None


def violations(gate: Gate, state: dict[str, Any]) -> tuple[list[str], bool]:
    """What in ``state`` is over the gate's limits, and whether every limit could be checked."""
    out, observable = [], True
    if gate.max_start_temp_c is not None:
        # the schema's name (harness.devices.conditions); the runner's state said temperatures_c, which this read
        # as temperature_c: a local or SSH device's temperature gate was never observable, and never held a model
        t = _max(state.get("temperatures_c", state.get("temperature_c")))
        if t is None:
            observable = False
        elif t > gate.max_start_temp_c:
            out.append(f"temperature {t:.1f} C > {gate.max_start_temp_c:g} C")
    if gate.max_loadavg is not None:
        la = state.get("loadavg_1m")
        if la is None:
            observable = False
        elif la > gate.max_loadavg:
            out.append(f"loadavg {la:.2f} > {gate.max_loadavg:g}")
    if gate.min_freq_ratio is not None:
        cur, top = state.get("cpu_freq_mhz") or {}, state.get("max_freq_mhz") or {}
        ratios = [cur[c] / top[c] for c in cur if top.get(c)]
        if not ratios:
            observable = False
        elif min(ratios) < gate.min_freq_ratio:
            out.append(f"CPU frequency at {min(ratios):.0%} of maximum < {gate.min_freq_ratio:.0%}")
    return out, observable


def wait_until_quiet(gate: Gate, read_state: Callable[[], dict[str, Any]], clock: Clock,
                     on_wait: Callable[[list[str]], None] | None = None) -> GateOutcome:
    """Poll ``read_state`` until no limit is exceeded or ``gate.max_wait_s`` has passed; ``on_wait(reasons)`` is
    told before each wait (a progress line can say why nothing moves)."""
    if not gate.active:
        return GateOutcome()
    t0 = clock.now()
    state = read_state()
    reasons, observable = violations(gate, state)
    first = list(reasons)
    polls = math.ceil(gate.max_wait_s / gate.poll_s)  # a count, not a clock test: bounded on any clock
    for i in range(polls):
        if not reasons:
            break
        if on_wait is not None:
            on_wait(reasons)
        clock.sleep(min(gate.poll_s, gate.max_wait_s - i * gate.poll_s))
        state = read_state()
        reasons, observable = violations(gate, state)
    return GateOutcome(clock.now() - t0, bool(reasons), observable, reasons or first, state)
