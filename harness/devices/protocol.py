"""The runner protocol's answers as pydantic models: nothing a runner says is trusted unchecked.

A runner is outside input (a device, an SSH box, a wrong ``python:`` in a profile). Every line it sends
is validated here; anything that is not a well-formed answer becomes a ``parse_error`` failure that
keeps the offending text, never a traceback and never a stored latency that cannot be real.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import ParseError

MAX_ECHO = 500  # characters of an offending answer kept in the failure message

Latency = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=False)]
Millis = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class RunAnswer(_Answer):
    """``{"ok": true, ...}`` to a run request: every timed run, positive and finite."""

    ok: Literal[True]
    timed_ms: list[Latency] = Field(min_length=1)
    warmup_ms: list[Latency] = Field(default_factory=list)
    init_ms: Millis | None = None
    conditions_before: dict[str, Any] = Field(default_factory=dict)
    conditions_after: dict[str, Any] = Field(default_factory=dict)
    wait_ms: list[Millis] | None = None  # per run: time our threads were kept off the CPU
    stop_rule: Literal["fixed", "ci_reached", "max_runs", "max_seconds"] | None = None
    neighbours: dict[str, Any] | None = None
    reference_ms: list[Latency] | None = None
    reference_wait_ms: list[Millis] | None = None


class HelloAnswer(_Answer):
    ok: Literal[True]
    protocol: int | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    conditions: dict[str, Any] = Field(default_factory=dict)


class Sha256Answer(_Answer):
    ok: Literal[True]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ErrorAnswer(_Answer):
    ok: Literal[False]
    kind: str = "device_error"
    message: str = "unknown runner error"


def echo(text: str, limit: int = MAX_ECHO) -> str:
    """The offending text, bounded, as a repr (so control characters and markup stay visible)."""
    return repr(text[:limit]) + (f" ... ({len(text)} characters)" if len(text) > limit else "")


def _no_constants(name: str) -> float:
    return float(name)  # NaN / Infinity parse to floats; the models then refuse them


def decode(line: str, who: str) -> dict[str, Any]:
    """One runner line -> a JSON object, or ParseError naming the runner and keeping the text."""
    try:
        obj = json.loads(line, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise ParseError(f"{who}: unreadable line from the runner: {echo(line)}", detail=line) from None
    if not isinstance(obj, dict):
        raise ParseError(f"{who}: the runner answered a {type(obj).__name__}, not an object: {echo(line)}",
                         detail=line)
    if "ok" not in obj or not isinstance(obj["ok"], bool):
        raise ParseError(f"{who}: the runner's answer lacks ok: true/false: {echo(line)}", detail=line)
    if obj["ok"] is False:
        try:
            ErrorAnswer.model_validate(obj)
        except ValidationError as e:
            raise ParseError(f"{who}: malformed error answer from the runner ({_first(e)}): {echo(line)}",
                             detail=line) from None
    return obj


def validated(model: type[BaseModel], obj: dict[str, Any], line: str, who: str) -> Any:
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise ParseError(f"{who}: invalid answer from the runner ({_first(e)}): {echo(line)}", detail=line) from None


def _first(e: ValidationError) -> str:
    errs = e.errors()
    err = errs[0]
    where = ".".join(str(p) for p in err["loc"]) or "(answer)"
    more = f"; {len(errs) - 1} more problem(s)" if len(errs) > 1 else ""
    return f"{where}: {err['msg']}{more}"


def finite_positive(values: list[float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)
