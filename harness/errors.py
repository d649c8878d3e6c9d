"""Typed errors. The library raises these; only the CLI turns them into messages.

A measurement failure always carries a *kind* so the store never has to invent a latency for it
(see TVM's runner: RUN_TIMEOUT, RUNTIME_DEVICE, ...).
"""

from __future__ import annotations

from enum import Enum


class HarnessError(Exception):
    """Base class of every error harness raises on purpose."""


class ProfileError(HarnessError):
    """A device profile is malformed: names the file, the field and what was expected."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        detail = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid device profile {path}:\n{detail}")


def did_you_mean(name: str, valid, cutoff: float = 0.75) -> str:
    """" (did you mean 'x'?)" for a near miss among ``valid``, else "": a misspelt device read "no data", and
    its advice was to measure the misspelt name."""
    import difflib

    close = difflib.get_close_matches(str(name), sorted(map(str, valid)), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


class UnknownNameError(HarnessError):
    """A name (device, space, driver, runtime) that is not registered; lists the valid ones."""

    def __init__(self, what: str, name: str, valid: list[str], hint: str = ""):
        import difflib

        self.what, self.name, self.valid = what, name, sorted(valid)
        close = difflib.get_close_matches(str(name), self.valid, n=1, cutoff=0.6)
        guess = f"did you mean {close[0]!r}? " if close else ""
        msg = f"unknown {what} {name!r}; {guess}valid: {', '.join(self.valid) or '(none)'}"
        super().__init__(msg + (f". {hint}" if hint else ""))


class ParameterError(HarnessError):
    """A call's argument cannot be used; ``param`` names it (the CLI adds the matching flag)."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(message)


class NoPredictorError(HarnessError):
    """``device`` lacks what is asked of it: a saved predictor, or (``needs="measurements"``) measurements."""

    def __init__(self, device: str, message: str, needs: str = "predictor"):
        self.device, self.needs = device, needs
        super().__init__(message)


class SpaceError(HarnessError):
    """An architecture key or sample request that the search space cannot satisfy."""


class StoreError(HarnessError):
    """The results store cannot be used (schema mismatch, corrupt file, bad query).

    ``transient`` is True for what may pass if retried (a lock held by another writer, a full disk).
    """

    transient: bool = False


class ExportError(HarnessError):
    """A model could not be exported to a runtime format."""


class FailureKind(str, Enum):
    """Why a measurement failed; recorded in the store next to the failure."""

    TIMEOUT = "timeout"
    DEVICE_ERROR = "device_error"
    PARSE_ERROR = "parse_error"
    EXPORT_ERROR = "export_error"
    UNAVAILABLE = "unavailable"
    DEVICE_LOST = "device_lost"  # the host (farm node) measuring it went away mid-model


class DriverError(HarnessError):
    """A driver could not measure; ``kind`` says why."""

    kind: FailureKind = FailureKind.DEVICE_ERROR

    before_contact = False  # raised before the driver tried to reach the device (a key file that is not there)
    permanent = False  # the device can never measure this model (see NotMeasurable)

    def __init__(self, message: str, *, detail: str = "", before_contact: bool = False):
        self.detail = detail
        self.before_contact = before_contact
        super().__init__(message)


class MeasurementTimeout(DriverError):
    kind = FailureKind.TIMEOUT


class DeviceError(DriverError):
    kind = FailureKind.DEVICE_ERROR


class NotMeasurable(DeviceError):
    """This device can never measure this model (a replay table without its row): a device_error that says nothing
    about the device's health, so it does not count toward a campaign's failures in a row (five such rows at the
    head of a resumed campaign stopped it before anything else was measured, at every rerun)."""

    permanent = True


class ParseError(DriverError):
    kind = FailureKind.PARSE_ERROR


class DriverUnavailable(DriverError):
    """The profile names a connection kind whose driver is not available in this build."""

    kind = FailureKind.UNAVAILABLE


class ConnectionLost(DeviceError):
    """The device went away mid-campaign; the campaign stops, finished results are kept."""


class AccessRefused(DeviceError):
    """The device answers but refuses this connection (its host key changed, our key is rejected): every model
    would fail alike, so the campaign stops at once instead of charging five models with it."""


class FarmError(HarnessError):
    """A farm cannot start as asked (bad Ray address, a device no host offers, conflicting hosts...)."""


def clip(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters, cut between words with "…" where it was longer: a
    message cut mid-word ("executed on the acto") reads as a different word."""
    import textwrap

    text, width = " ".join(str(text).split()), max(width, 2)
    if len(text) <= width:
        return text
    cut = textwrap.shorten(text, width, placeholder=" …")
    return cut if cut.strip(" …") else text[:width - 1] + "…"  # one word longer than width: cut inside it
