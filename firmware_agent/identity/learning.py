"""Fitting the behavioural model on the vehicle from the windows the registry keeps.

The model knows the *active* profiles only: those with at least `activation_minutes` of driving learned.
A profile below that is reported by its explicit identity alone. Refitting is bounded by the registry's
cap on windows per profile, so it costs the same after a year as after a month.
"""

from __future__ import annotations

import numpy as np

from firmware_agent.errors import UserError
from firmware_agent.identity.model import DriverModel, ModelFileError
from firmware_agent.identity.registry import ProfileRegistry
from firmware_agent.identity.settings import IdentitySettings


def refit(registry: ProfileRegistry, settings: IdentitySettings) -> DriverModel | None:
    """Fit the model on the active profiles and save it (or delete it when none is active)."""
    features: list[np.ndarray] = []
    labels: list[str] = []
    blocks: list[str] = []
    for profile, drives, windows in registry.training_set(settings.activation_minutes):
        features.append(windows)
        labels.extend([profile] * len(windows))
        blocks.extend(f"{profile}/{int(drive)}" for drive in drives)
    if not features:
        registry.remove_model()
        return None
    widths = {block.shape[1] for block in features}
    if len(widths) != 1:
        raise UserError(
            f"{registry.folder}: profiles hold windows of different feature sets; forget the older"
        )
    model = DriverModel.fit(np.concatenate(features), labels, blocks)
    registry.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    model.save(registry.model_path)
    return model


def load_or_refit(registry: ProfileRegistry, settings: IdentitySettings) -> tuple[DriverModel | None, str]:
    """The model for the registry's active profiles: the saved one when it matches, else a fresh fit.

    Returns the model and why it was refitted ("" when the saved one was used), for the log.
    """
    active = registry.active_profiles(settings.activation_minutes)
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
