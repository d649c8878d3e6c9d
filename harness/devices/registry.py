"""Finds profiles: the built-ins inside the package, then a user folder of ``*.yaml`` (the CLI's ``devices/``).

A user file with the same name as a built-in overrides it. Adding a device is adding a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from harness.devices.profile import Profile, load_profile
from harness.errors import ProfileError, UnknownNameError


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    path: Path
    origin: str  # "built-in" or "user"


def _builtin_dir() -> Path:
    return Path(str(resources.files("harness.devices").joinpath("builtin")))


class ProfileRegistry:
    def __init__(self, user_dir: str | os.PathLike | None = None):
        """``user_dir`` None: the built-ins only."""
        self.user_dir = Path(user_dir) if user_dir is not None else None

    def entries(self) -> dict[str, ProfileEntry]:
        """name -> file, user files overriding built-ins (names from file stems: cheap, no parsing)."""
        found: dict[str, ProfileEntry] = {}
        for origin, folder in (("built-in", _builtin_dir()), ("user", self.user_dir)):
            if folder is not None and folder.is_dir():
                for p in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                    found[p.stem] = ProfileEntry(p.stem, p, origin)
        return found

    def get(self, name: str) -> Profile:
        entries = self.entries()
        if name not in entries:
            base, at, label = name.partition("@")
            if at and base in entries:  # a workload's series name, as export and srcc print it
                raise UnknownNameError("device", name, list(entries), hint=(
                    f"{name} is a workload of {base}: measure it with -d {base} and --batch-size / --input-shape / "
                    "--precision (or a profile whose workload: says so)"))
            raise UnknownNameError("device", name, list(entries),
                                   hint=f"add {(self.user_dir or Path('devices')) / (name + '.yaml')} to define it")
        return load_profile(entries[name].path)

    def load_all(self) -> tuple[list[tuple[ProfileEntry, Profile]], list[ProfileError]]:
        """Every profile that parses, plus the errors of those that do not (listing must not stop at one)."""
        good, bad = [], []
        for entry in self.entries().values():
            try:
                good.append((entry, load_profile(entry.path)))
            except ProfileError as e:
                bad.append(e)
        return good, bad
