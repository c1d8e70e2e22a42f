"""The profile registry in the state directory: pseudonymous profiles, what each has learned, the model.

```
STATE_DIR/identity/            0700
  secret                       0600  32 random bytes, made on first use; never leaves the car
  profiles.json                0600  {"version": 1, "profiles": {ID: {minutes, drives, windows, ...}}}
  windows/ID.npy               0600  the profile's windows (`features.window_features`, float64, newest
                                     last, capped); column 0 is the drive each came from
  model.npz                    0600  the behavioural model fitted on the active profiles
```

A profile id is `p-` and 16 hex digits of HMAC-SHA256(secret, explicit identity), so the same key gives
the same id on every start, two vehicles give one person two unrelated ids, and the id reveals nothing of
the key. The raw identity (`KEY_STATUS.KeyId=439041025`) is never stored: the registry only keeps ids.

Every file is written atomically (`firmware_agent.atomic`). A registry that cannot be read (edited by
hand, truncated) is a `UserError` naming the file and what is wrong, and is never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from firmware_agent.atomic import write_atomic
from firmware_agent.errors import UserError

REGISTRY_VERSION = 1
PROFILE_ID = re.compile(r"p-[0-9a-f]{16}")
_SECRET_BYTES = 32


@dataclass
class ProfileRecord:
    """What the registry knows about one profile (no names, no raw key ids)."""

    minutes: float = 0.0  #: minutes of driving learned (windows kept, times the step)
    drives: int = 0  #: drives learned from
    windows: int = 0  #: feature windows kept
    created: float = 0.0  #: epoch seconds
    last_learned: float = 0.0  #: epoch seconds
    features: int = 0  #: width of the kept windows (another feature set's windows do not count)


class IdentityStateError(UserError):
    """The identity stage's saved state (registry, windows, secret) cannot be read or written."""


class ProfileRegistry:
    """The registry of one vehicle's profiles in `STATE_DIR/identity` (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "identity"
        self.profiles_path = self.folder / "profiles.json"
        self.model_path = self.folder / "model.npz"
        self.windows_folder = self.folder / "windows"
        self.profiles: dict[str, ProfileRecord] = self._load()

    # --- files ---------------------------------------------------------------------------------------

    def _ensure_folders(self) -> None:
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.windows_folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise IdentityStateError(
                f"{self.folder}: cannot create the identity folder: {exc.strerror}"
            ) from exc

    def _load(self) -> dict[str, ProfileRecord]:
        path = self.profiles_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise IdentityStateError(f"{path}: cannot read the profile registry: {exc}") from exc
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IdentityStateError(
                f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); fix or remove it"
            ) from exc
        if not isinstance(document, dict) or document.get("version") != REGISTRY_VERSION:
            raise IdentityStateError(f"{path}: not a version-{REGISTRY_VERSION} profile registry")
        profiles = document.get("profiles")
        if not isinstance(profiles, dict):
            raise IdentityStateError(f"{path}: profiles: expected an object of profile ids")
        records = {}
        fields = set(ProfileRecord.__dataclass_fields__)
        for profile, entry in profiles.items():
            if not PROFILE_ID.fullmatch(profile):
                raise IdentityStateError(
                    f"{path}: profiles.{profile}: not a profile id (p- and 16 hex digits)"
                )
            if (
                not isinstance(entry, dict)
                or set(entry) - fields
                or not all(
                    isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
                    for value in entry.values()
                )
            ):
                raise IdentityStateError(
                    f"{path}: profiles.{profile}: expected {{{', '.join(sorted(fields))}}} >= 0"
                )
            records[profile] = ProfileRecord(**entry)
        return records

    def save(self) -> None:
        """Write `profiles.json` atomically (0600)."""
        self._ensure_folders()
        document = {
            "version": REGISTRY_VERSION,
            "profiles": {profile: asdict(record) for profile, record in sorted(self.profiles.items())},
        }
        write_atomic(self.profiles_path, (json.dumps(document, indent=2) + "\n").encode())

    def _secret(self) -> bytes:
        path = self.folder / "secret"
        try:
            secret = path.read_bytes()
        except FileNotFoundError:
            self._ensure_folders()
            secret = secrets.token_bytes(_SECRET_BYTES)
            write_atomic(path, secret)
            return secret
        except OSError as exc:
            raise IdentityStateError(f"{path}: cannot read the identity secret: {exc.strerror}") from exc
        if len(secret) != _SECRET_BYTES:
            raise IdentityStateError(
                f"{path}: expected {_SECRET_BYTES} bytes, found {len(secret)}; the file was altered"
            )
        return secret

    # --- profiles ------------------------------------------------------------------------------------

    def profile_id(self, identity: str) -> str:
        """The pseudonymous id of an explicit identity (`MESSAGE.Signal=value`); the same on every start."""
        digest = hmac.new(self._secret(), identity.encode(), hashlib.sha256).hexdigest()
        return f"p-{digest[:16]}"

    def ensure(self, profile: str) -> ProfileRecord:
        """The record of `profile`, created (and saved) on first sight."""
        record = self.profiles.get(profile)
        if record is None:
            record = self.profiles[profile] = ProfileRecord(created=round(time.time(), 3))
            self.save()
        return record

    def windows(self, profile: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(drive numbers, feature windows) kept for `profile`, newest last; None when there are none."""
        path = self.windows_folder / f"{profile}.npy"
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            raise IdentityStateError(
                f"{path}: cannot read the profile's windows ({exc}); forget the profile"
            ) from exc
        if array.ndim != 2 or array.shape[1] < 2 or array.dtype != np.float64:
            raise IdentityStateError(
                f"{path}: expected a float64 matrix of feature windows; forget the profile"
            )
        return array[:, 0], array[:, 1:]

    def add_windows(self, profile: str, windows: np.ndarray, step_seconds: float, cap: int) -> ProfileRecord:
        """Append one drive's windows to `profile`, keeping the newest `cap`; update and save the record."""
        record = self.ensure(profile)
        kept = self.windows(profile)
        rows = np.column_stack([np.full(len(windows), float(record.drives)), windows])
        if kept is not None and kept[1].shape[1] == windows.shape[1]:
            rows = np.concatenate([np.column_stack([kept[0], kept[1]]), rows])
        # (a kept set of another width came from an older feature set: start over rather than mix them)
        rows = rows[-cap:]
        self._ensure_folders()
        write_atomic(self.windows_folder / f"{profile}.npy", _npy_bytes(rows))
        record.windows = len(rows)
        record.features = windows.shape[1]
        record.minutes = round(len(rows) * step_seconds / 60.0, 2)
        record.drives += 1
        record.last_learned = round(time.time(), 3)
        self.save()
        return record

    def forget(self, profile: str) -> None:
        """Erase a profile: its record and windows. The caller refits the model so that it is gone too."""
        if profile not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise IdentityStateError(f"{self.profiles_path}: no profile {profile!r} (known: {known})")
        del self.profiles[profile]
        self.save()
        with contextlib.suppress(FileNotFoundError):
            (self.windows_folder / f"{profile}.npy").unlink()

    def active_profiles(self, min_minutes: float, features: int) -> list[str]:
        """Profiles with at least `min_minutes` of driving learned as windows of `features` values.

        Windows of another width were made by an older feature set: the profile learns afresh from its
        next drive (`add_windows` starts over) and is not active until it has enough again.
        """
        return sorted(
            profile
            for profile, record in self.profiles.items()
            if record.windows and record.minutes >= min_minutes and record.features == features
        )

    def training_set(
        self, min_minutes: float, features: int, newest: int
    ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(profile, drive numbers, windows) of each active profile: its `newest` windows at most."""
        for profile in self.active_profiles(min_minutes, features):
            kept = self.windows(profile)
            if kept is not None and len(kept[1]) and kept[1].shape[1] == features:
                # copies: views would keep every kept window (up to the profile's cap) in memory
                yield profile, kept[0][-newest:].copy(), kept[1][-newest:].copy()

    def remove_model(self) -> None:
        """Delete the model file (no profile is active any more)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.model_path)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()
