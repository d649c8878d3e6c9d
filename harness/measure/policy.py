"""The measurement-method parts of a profile's ``policy``: adaptive repeats, rounds, sentinels, gating.

Each is a small strict pydantic model; contradictions (``min_runs > max_runs``, ``target_rel_ci <= 0``,
``rounds < 1``, ...) are profile errors that name the field. The defaults are the ones measured to give
repeatable rankings on a shared machine (README, "Measurements you can trust").
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


def _numeric(annotation: Any) -> bool:
    """int, float, or an Optional/Union of them (and nothing that takes text or booleans)."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    kinds = [a for a in args if a is not type(None)]
    return bool(kinds) and all(a in (int, float) for a in kinds)


class _Strict(BaseModel):
    # allow_inf_nan=False: .inf in timeout_seconds or min_seconds would hang a campaign, not fail it
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _a_number_is_a_number(cls, v: Any, info: ValidationInfo) -> Any:
        """YAML's yes/no/on/off and quoted "120" are not numbers: pydantic would read threads: yes as 1."""
        if isinstance(v, (bool, str)) and _numeric(cls.model_fields[info.field_name].annotation):
            if isinstance(v, bool):
                raise ValueError("expected a number, not a boolean (YAML reads yes/no/on/off/true/false as one)")
            quoted = v.strip().lstrip("+-").replace(".", "", 1).isdigit()
            raise ValueError("expected a number, not text" + (" (leave out the quotes)" if quoted else ""))
        return v


class Adaptive(_Strict):
    """Stop timing a model once the 95 % CI of its median is tight enough (LoadGen-style early stop)."""

    # per visit: with 3 rounds and a paired reference, 6-10 runs a visit give rankings as stable as 10-30
    # (benchmarks/repeatability.py) at half the device time
    target_rel_ci: float = Field(0.03, gt=0, lt=1, description="CI half-width / median to reach, e.g. 0.01")
    min_runs: int = Field(6, ge=6, le=1_000_000, description="clean runs before the rule may stop (>= 6)")
    max_runs: int = Field(10, ge=6, le=1_000_000, description="stop here even if the CI is wider")
    max_seconds: float = Field(0.25, gt=0, description="stop after this much timing even if the CI is wider")

    @model_validator(mode="after")
    def _consistent(self) -> Adaptive:
        if self.min_runs > self.max_runs:
            raise ValueError(f"min_runs ({self.min_runs}) must not exceed max_runs ({self.max_runs})")
        return self


def adaptive_stop(clean_ms: list[float], elapsed_s: float, ad: Adaptive) -> str | None:
    """The runner's stopping rule after a timed run (``harness.devices.runner``), for drivers that time run by
    run in Python (stand-ins, replay): ``ci_reached``, ``max_seconds``, or None to go on; the caller's loop
    stops at ``max_runs``."""
    from harness.devices.runner import median_rel_ci

    if len(clean_ms) >= ad.min_runs and len(clean_ms) % 2 == 0 and median_rel_ci(clean_ms) <= ad.target_rel_ci:
        return "ci_reached"
    if elapsed_s >= ad.max_seconds:
        return "max_seconds"
    return None


class Sentinels(_Strict):
    """Reference models re-timed every ``every`` models; leaving the band marks the window suspect."""

    count: int = Field(3, ge=1, le=20, description="how many reference models (spanning the latency range)")
    # every visit counts (3 rounds = 3 per architecture); 3 sentinels every 100 visits add ~3 % device work and
    # still check a phone (~1 s visits) every couple of minutes, the time scale of thermal throttling
    every: int = Field(100, ge=1, description="re-time the sentinels after this many models (visits)")
    band: float = Field(0.05, gt=0, lt=1, description="allowed relative deviation from the sentinel's baseline")
    on_drift: Literal["pause", "mark"] = Field(
        "pause", description="pause (wait until the sentinels are back in band) or only mark suspects")
    max_pause_s: float = Field(60.0, ge=0, description="longest pause for recovery; then go on, recorded")
    pause_step_s: float = Field(5.0, gt=0, description="idle time between re-checks while paused")
    archs: list[str] | None = Field(None, description="explicit sentinel architectures (keys or indices)")

    @model_validator(mode="after")
    def _some(self) -> Sentinels:
        if self.archs is not None and not self.archs:
            raise ValueError("archs: an empty list names no sentinel; leave it out to pick them automatically")
        return self


class Gate(_Strict):
    """Before each model, wait (bounded) until the device is back under these limits."""

    max_start_temp_c: float | None = Field(None, description="hottest thermal zone must be at or below this")
    max_loadavg: float | None = Field(None, ge=0, description="1-minute load average must be at or below this")
    min_freq_ratio: float | None = Field(None, gt=0, le=1,
                                         description="current/maximum CPU frequency must be at least this")
    max_wait_s: float = Field(30.0, ge=0, description="longest wait per model; then the model is measured anyway")
    poll_s: float = Field(1.0, gt=0, description="how often the state is re-read while waiting")
    on_timeout: Literal["continue", "stop"] = Field(
        "continue", description="after max_wait_s: measure anyway (recorded) or stop the campaign")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_start_temp_c, self.max_loadavg, self.min_freq_ratio))
