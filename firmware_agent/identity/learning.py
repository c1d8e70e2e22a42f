"""Fitting the behavioural model on the vehicle from the windows the registry keeps.

The model knows the *active* profiles only: those with at least `activation_minutes` of driving learned.
A profile below that is reported by its explicit identity alone. A fit uses each profile's newest
`FIT_WINDOWS_PER_PROFILE` windows, so a refit costs the same after a year as after a month.

The agent refits after every learned drive in a `BackgroundRefit` thread: a fit takes seconds on a
Pi-class core, and the pipeline must not wait for it. The running model is swapped for the new one
when the fit is done; the model file is replaced atomically, so a stop in the middle loses nothing but
that fit (the next start sees a model whose profiles differ from the active ones and refits).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from firmware_agent.errors import UserError
from firmware_agent.identity.features import feature_names
from firmware_agent.identity.model import DriverModel, ModelFileError
from firmware_agent.identity.registry import ProfileRegistry
from firmware_agent.identity.settings import IdentitySettings

log = logging.getLogger("firmware_agent.identity")

#: Windows of each profile a fit uses, newest first: 2 hours of driving at the default 10 s step.
FIT_WINDOWS_PER_PROFILE = 720


def feature_width() -> int:
    """How many values the current feature set stores per window."""
    return len(feature_names())


def active_profiles(registry: ProfileRegistry, settings: IdentitySettings) -> list[str]:
    """The profiles the behavioural model knows under `settings`."""
    return registry.active_profiles(settings.activation_minutes, feature_width())


def refit(registry: ProfileRegistry, settings: IdentitySettings) -> DriverModel | None:
    """Fit the model on the active profiles and save it (or delete it when none is active)."""
    features: list[np.ndarray] = []
    labels: list[str] = []
    blocks: list[str] = []
    for profile, drives, windows in registry.training_set(
        settings.activation_minutes, feature_width(), FIT_WINDOWS_PER_PROFILE
    ):
        features.append(windows)
        labels.extend([profile] * len(windows))
        blocks.extend(f"{profile}/{int(drive)}" for drive in drives)
    if not features:
        registry.remove_model()
        return None
    stacked = np.concatenate(features)
    features.clear()  # the registry's arrays behind these views: freed before the fit needs the memory
    model = DriverModel.fit(stacked, labels, blocks)
    registry.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    model.save(registry.model_path)
    return model


def load_or_refit(registry: ProfileRegistry, settings: IdentitySettings) -> tuple[DriverModel | None, str]:
    """The model for the registry's active profiles: the saved one when it matches, else a fresh fit.

    Returns the model and why it was refitted ("" when the saved one was used), for the log.
    """
    active = active_profiles(registry, settings)
    if not active:
        if registry.model_path.exists():
            registry.remove_model()
        return None, ""
    try:
        model = DriverModel.load(registry.model_path)
    except ModelFileError as exc:
        reason = "no model yet" if not registry.model_path.exists() else f"unusable model ({exc})"
        return refit(registry, settings), reason
    if sorted(model.labels) != active:
        return refit(registry, settings), "active profiles changed"
    return model, ""


class BackgroundRefit:
    """One refit at a time on a worker thread; a request while one runs makes one more run after it.

    `request()` from the pipeline thread; `take()` there too, which returns the new model once (or
    None while nothing new is ready). `wait(timeout)` for a clean stop. Failures (a full disk, an
    unreadable windows file) are logged and counted in `errors`; the running model stays.
    """

    def __init__(self, registry: ProfileRegistry, settings: IdentitySettings) -> None:
        self.registry = registry
        self.settings = settings
        self.errors = 0
        self.fits = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending = False
        self._ready: tuple[DriverModel | None] | None = None

    def request(self) -> None:
        """Refit soon (now, or right after the fit in progress)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._pending = True
                return
            self._thread = threading.Thread(target=self._run, name="identity-refit", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                model = refit(self.registry, self.settings)
            except (OSError, UserError) as exc:
                log.warning("identity: model not refitted: %s", exc)
                with self._lock:
                    self.errors += 1
            else:
                with self._lock:
                    self._ready = (model,)
                    self.fits += 1
            with self._lock:
                if not self._pending:
                    return
                self._pending = False

    def take(self) -> tuple[DriverModel | None] | None:
        """The newly fitted model, as a 1-tuple (its model may be None: no profile active), once."""
        with self._lock:
            ready, self._ready = self._ready, None
            return ready

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the refit in progress (and any pending one); True when none is left running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True
