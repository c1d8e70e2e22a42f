"""The identity stage of the pipeline: who drives, how sure, and when the driving contradicts the key.

    stage = IdentityStage(settings, catalog, vss, state_dir, emit=collector.add_event,
                          set_driver=collector.set_driver)
    stage.observe_frames(chunk)   # every chunk of frames, in order (pipeline thread)
    stage.annotate(batch)         # every batch before it is signed: fills in `batch.driver`
    stage.finish(now)             # end of data

Policy (docs/identity.md):
- The batch's `profile` is the explicit identity's pseudonymous profile whenever there is one. Behaviour
  never replaces it: it confirms it (`confidence` rises towards 1) or raises `driver_mismatch`. Without any
  explicit identity the behavioural model names the driver (`source: behaviour`) once it is sure enough.
- Behaviour speaks about a profile only once the model is active for it (`activation_minutes` learned).
- A drive is ignition on to ignition off. At its end its windows are learned under the explicit profile
  in force when each window was taken, and the model is refitted; a drive that raised a mismatch, or that
  the data cut short (no ignition off), is not learned from.
- Events: `driver_identified` once per drive, `driver_changed` when the reported profile changes,
  `driver_mismatch` once per drive when the behaviour contradicts the explicit profile with at least
  `mismatch_confidence` for at least `mismatch_seconds`.

Nothing here raises into the pipeline for a full disk: learning that cannot be saved is counted
(`identity.learn_errors`) and logged, and the drive is simply not learned.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import numpy as np

from firmware_agent.decode.catalog import Catalog
from firmware_agent.errors import UserError
from firmware_agent.identity.decision import UNKNOWN, RunningDecision
from firmware_agent.identity.features import MIN_ROWS, RATE_HZ, window_features
from firmware_agent.identity.learning import BackgroundRefit, load_or_refit, refit
from firmware_agent.identity.model import OVERLAP_TEMPERING
from firmware_agent.identity.registry import IdentityStateError, ProfileRegistry
from firmware_agent.identity.sampler import FrameSampler
from firmware_agent.identity.settings import IdentitySettings
from firmware_agent.values import Batch, Event
from firmware_agent.vss import VssMap

log = logging.getLogger("firmware_agent.identity")

EXPLICIT, BEHAVIOUR, NONE = "explicit", "behaviour", "none"


@dataclass(frozen=True)
class DriveOutcome:
    """How a drive ended for learning: `result` is learned, mismatch, unfinished, no_identity, error or
    not_learning (`identity.learn = false`)."""

    start: float
    end: float
    result: str
    learned: dict[str, int]  #: windows learned per profile
    detail: str = ""


@dataclass
class _Drive:
    """What the stage knows about the drive in progress."""

    start: float
    decision: RunningDecision | None
    rows: deque[np.ndarray]
    rows_since_window: int = 0
    #: (features, explicit profile) of the drive's windows, newest kept: a profile keeps no more anyway
    windows: deque[tuple[np.ndarray, str | None]] = field(default_factory=deque)
    identified: bool = False
    mismatch: bool = False
    contradiction_since: float | None = None


class IdentityStage:
    """Explicit identity, behavioural fingerprint, learning and the running decision (module docstring)."""

    def __init__(
        self,
        settings: IdentitySettings,
        catalog: Catalog,
        vss: VssMap,
        state_dir: Path,
        emit: Callable[[Event], None],
        set_driver: Callable[[dict[str, Any] | None, float | None], None],
        on_drive_end: Callable[[DriveOutcome], None] | None = None,
        background_refit: bool = True,
    ) -> None:
        self.settings = settings
        self.on_drive_end = on_drive_end
        self.emit = emit
        self.set_driver = set_driver
        self.sampler = FrameSampler(settings, catalog, vss, self)  # configuration errors first
        self.registry = ProfileRegistry(state_dir)
        try:
            self.model, reason = load_or_refit(self.registry, settings)
        except OSError as exc:  # a refit that cannot be saved (full disk, read-only state directory)
            raise IdentityStateError(f"{self.registry.model_path}: cannot refit the model: {exc}") from exc
        if reason:
            log.info("identity: model refitted (%s): %s", reason, self._model_summary())
        # The agent refits on a worker thread (seconds on a Pi); `profile learn` waits for each fit.
        self._refitter = BackgroundRefit(self.registry, settings) if background_refit else None
        self.counts = dict.fromkeys(
            (
                "drives",
                "drives_learned",
                "drives_not_learned_mismatch",
                "drives_not_learned_unfinished",
                "drives_not_learned_no_identity",
                "windows",
                "model_fits",
                "mismatches",
                "learn_errors",
            ),
            0,
        )
        self._window_rows = max(MIN_ROWS, int(settings.window_seconds * RATE_HZ))
        self._step_rows = max(1, int(settings.step_seconds * RATE_HZ))
        # The model tempers its evidence for 60-s windows every 10 s (each second in OVERLAP_TEMPERING
        # windows); other settings overlap more or less, and the sum over a drive must not change with them.
        self._evidence_scale = OVERLAP_TEMPERING * settings.step_seconds / settings.window_seconds
        self._drive: _Drive | None = None
        self._explicit_identity: str | None = None  # as the sampler reports it, in or out of a drive
        self._explicit_profile: str | None = None  # its profile, while a drive is in progress
        self._reported: tuple[str | None, str] = (None, NONE)
        self._details: dict[tuple[str | None, str], dict[str, Any]] = {}
        self._last_profile: str | None = None

    @property
    def useful(self) -> bool:
        """Whether the databases define any of the stage's explicit or behavioural signals."""
        return bool(self.sampler.explicit_refs or self.sampler.channels)

    def _model_summary(self) -> str:
        if self.model is None:
            return "no active profile"
        return f"{len(self.model.labels)} active profile(s): {', '.join(self.model.labels)}"

    # --- pipeline API --------------------------------------------------------------------------------

    def observe_frames(self, frames: Iterable[can.Message]) -> None:
        """Take a chunk of frames (time order)."""
        if self._drive is None:
            self._adopt_refitted_model()
        self.sampler.feed(frames)

    def _adopt_refitted_model(self) -> None:
        """Swap in a model the background refit finished (between drives only: a drive keeps its labels)."""
        ready = self._refitter.take() if self._refitter is not None else None
        if ready is not None:
            changed = ready[0] is not None or self.model is not None
            self.model = ready[0]
            if changed:  # a refit with no profile active yet is not news
                log.info("identity: model refitted: %s", self._model_summary())

    def annotate(self, batch: Batch) -> None:
        """Fill in the batch's `driver` map: confidence and the behavioural view of the profile it carries."""
        driver = batch.driver
        if driver is None:
            driver = batch.driver = {"profile": None, "source": NONE}
        key = (driver.get("profile"), driver.get("source", NONE))
        driver.update(self._details.get(key) or self._detail())

    def finish(self, timestamp: float | None = None, refit_timeout: float = 10.0) -> None:
        """The data ended: a drive without ignition signal ends (and is learned); any other is cut short.

        A refit in progress gets up to `refit_timeout` seconds to finish and be saved.
        """
        if self._drive is not None:
            end = timestamp if timestamp is not None else self._drive.start
            self._end_drive(end, completed=not self.sampler.has_ignition)
        if self._refitter is not None and self._refitter.wait(refit_timeout):
            self._adopt_refitted_model()

    def counters(self) -> dict[str, int]:
        """The stage's counters (`identity.*` in telemetry)."""
        counts = dict(self.counts)
        if self._refitter is not None:
            counts["model_fits"] += self._refitter.fits
            counts["learn_errors"] += self._refitter.errors
        counts["frames_decoded"] = self.sampler.frames_decoded
        counts["profiles"] = len(self.registry.profiles)
        counts["active_profiles"] = 0 if self.model is None else len(self.model.labels)
        return counts

    def forget(self, profile: str) -> None:
        """Erase a profile (registry entry and windows) and refit so that the model no longer knows it."""
        self.registry.forget(profile)
        self.model = refit(self.registry, self.settings)

    # --- what the sampler reports --------------------------------------------------------------------

    def on_explicit(self, timestamp: float, identity: str | None) -> None:
        """The explicit identity changed (key in range, profile selected, or gone)."""
        self._explicit_identity = identity
        if self._drive is not None:
            self._take_explicit(timestamp)

    def _take_explicit(self, timestamp: float) -> None:
        """Make the explicit identity in force the drive's (its profile created on first sight)."""
        identity = self._explicit_identity
        profile = None
        if identity is not None:
            try:
                profile = self.registry.profile_id(identity)
                self.registry.ensure(profile)
            except (OSError, UserError) as exc:
                self.counts["learn_errors"] += 1
                log.warning("identity: cannot record the profile: %s", exc)
        self._explicit_profile = profile
        drive = self._drive
        if drive is not None and drive.decision is not None:
            drive.decision.set_explicit(profile)
        self._update(timestamp)

    def on_rewind(self, timestamp: float) -> None:
        """Time ran back: a drive in progress ends there (learned only when there is no ignition signal)."""
        self._explicit_identity = None
        if self._drive is not None:
            self._end_drive(timestamp, completed=not self.sampler.has_ignition)

    def on_ignition(self, timestamp: float, on: bool) -> None:
        """A drive starts or ends."""
        if on and self._drive is None:
            self._start_drive(timestamp)
        elif not on and self._drive is not None:
            self._end_drive(timestamp, completed=True)

    def on_gap(self, timestamp: float) -> None:
        """The data paused: windows do not span the pause."""
        if self._drive is not None:
            self._drive.rows.clear()
            self._drive.rows_since_window = 0

    def on_row(self, timestamp: float, row: np.ndarray) -> None:
        """One 1 Hz row of behavioural channels while the ignition is on."""
        drive = self._drive
        if drive is None:  # the data began with the ignition on (no signal, or the agent started mid-drive)
            drive = self._start_drive(timestamp)
        drive.rows.append(row)
        drive.rows_since_window += 1
        if len(drive.rows) < MIN_ROWS or drive.rows_since_window < self._step_rows:
            return
        drive.rows_since_window = 0
        features = window_features(np.array(drive.rows))
        self.counts["windows"] += 1
        drive.windows.append((features, self._explicit_profile))
        if drive.decision is not None and self.model is not None:
            evidence = self.model.log_likelihoods(features[np.newaxis, :])[0]
            drive.decision.add(evidence * self._evidence_scale)
        self._update(timestamp)

    # --- drives --------------------------------------------------------------------------------------

    def _start_drive(self, timestamp: float) -> _Drive:
        self._adopt_refitted_model()
        decision = None
        if self.model is not None:
            decision = RunningDecision(
                tuple(self.model.labels),
                self.settings.explicit_prior,
                self.settings.step_seconds,
                self.settings.evidence_horizon_seconds,
            )
            decision.set_explicit(self._explicit_profile)
        drive = self._drive = _Drive(
            start=timestamp,
            decision=decision,
            rows=deque(maxlen=self._window_rows),
            windows=deque(maxlen=self.settings.max_windows_per_profile),
        )
        self.counts["drives"] += 1
        self._take_explicit(timestamp)
        return drive

    def _end_drive(self, timestamp: float, completed: bool) -> None:
        drive, self._drive = self._drive, None
        assert drive is not None
        self._explicit_profile = None  # between drives nobody drives
        self._update(timestamp)
        learned: dict[str, int] = {}
        result, detail = self._learn(drive, completed, learned)
        if self.on_drive_end is not None:
            self.on_drive_end(DriveOutcome(drive.start, timestamp, result, learned, detail))

    def _learn(self, drive: _Drive, completed: bool, learned: dict[str, int]) -> tuple[str, str]:
        """Learn a finished drive's windows; returns the outcome and a detail for the operator."""
        if not completed:
            self.counts["drives_not_learned_unfinished"] += 1
            return "unfinished", "the data ended before the ignition was switched off"
        if not self.settings.learn:
            return "not_learning", "learning is off (identity.learn = false)"
        if drive.mismatch:
            self.counts["drives_not_learned_mismatch"] += 1
            log.info("identity: drive not learned: the behaviour contradicted the key")
            return "mismatch", "the behaviour contradicted the explicit identity"
        by_profile: dict[str, list[np.ndarray]] = {}
        for features, profile in drive.windows:
            if profile is not None:
                by_profile.setdefault(profile, []).append(features)
        if not by_profile:
            self.counts["drives_not_learned_no_identity"] += 1
            return "no_identity", "no explicit identity (key, profile) during the drive"
        try:
            for profile, windows in by_profile.items():
                record = self.registry.add_windows(
                    profile,
                    np.array(windows),
                    self.settings.step_seconds,
                    self.settings.max_windows_per_profile,
                )
                learned[profile] = len(windows)
                log.info(
                    "identity: learned %d window(s) for %s (%.1f min in all)",
                    len(windows),
                    profile,
                    record.minutes,
                )
            if self._refitter is None:
                self.model, _ = load_or_refit(self.registry, self.settings)
                self.counts["model_fits"] += 1
        except (OSError, UserError) as exc:
            self.counts["learn_errors"] += 1
            log.warning("identity: drive not learned: %s", exc)
            return "error", str(exc)
        if self._refitter is not None:
            self._refitter.request()
        self.counts["drives_learned"] += 1
        return "learned", self._model_summary()

    # --- the decision and what it reports ------------------------------------------------------------

    def _active(self, profile: str | None) -> bool:
        return profile is not None and self.model is not None and profile in self.model.labels

    def _update(self, timestamp: float) -> None:
        """Re-derive the reported driver, raise the events that are due, and stamp the collector."""
        drive = self._drive
        explicit = self._explicit_profile
        decision = drive.decision if drive is not None else None
        evidence = decision is not None and decision.windows > 0
        reported: tuple[str | None, str]
        if explicit is not None:
            reported = (explicit, EXPLICIT)
        elif drive is not None and decision is not None and evidence:
            best, probability = decision.best()
            reported = (best, BEHAVIOUR) if probability >= self.settings.identify_confidence else (None, NONE)
        else:
            reported = (None, NONE)
        detail = self._detail()
        if drive is not None:
            self._check_identified(drive, reported, detail, timestamp)
            self._check_mismatch(drive, timestamp)
            detail = self._detail()
        if reported != self._reported:
            # batches cut under the previous driver are annotated after this: keep its last detail too
            self._details = {self._reported: self._details.get(self._reported, detail)}
            self._reported = reported
            self.set_driver({"profile": reported[0], "source": reported[1]}, timestamp)
            profile = reported[0]
            if profile is not None and self._last_profile is not None and profile != self._last_profile:
                self.emit(Event(timestamp, "driver_changed", {"from": self._last_profile, "to": profile}))
            if profile is not None:
                self._last_profile = profile
        self._details[reported] = detail

    def _detail(self) -> dict[str, Any]:
        """Confidence, model state and the behavioural view of the reported driver (docs/identity.md)."""
        drive = self._drive
        explicit = self._explicit_profile
        decision = drive.decision if drive is not None else None
        detail: dict[str, Any] = {}
        if explicit is not None:
            active = self._active(explicit)
            detail["model"] = "active" if active else "learning"
            if active and decision is not None and decision.windows:
                detail["confidence"] = round(decision.probability(explicit), 4)
            else:
                detail["confidence"] = self.settings.explicit_prior
        elif decision is not None and decision.windows:
            detail["model"] = "active"
            detail["confidence"] = round(decision.best()[1], 4)
        else:
            detail["model"] = "active" if self.model is not None else "off"
            detail["confidence"] = 0.0
        if decision is not None and decision.windows:
            best, probability = decision.best()
            detail["behaviour"] = best
            detail["behaviour_confidence"] = round(probability, 4)
        if drive is not None and drive.mismatch:
            detail["mismatch"] = True
        return detail

    def _check_identified(
        self, drive: _Drive, reported: tuple[str | None, str], detail: dict[str, Any], timestamp: float
    ) -> None:
        if drive.identified or reported[0] is None:
            return
        profile, source = reported
        decision = drive.decision
        confirmed = False
        if source == EXPLICIT and self._active(profile):
            # The model knows this profile: identified once the behaviour confirms the key.
            assert decision is not None and profile is not None
            if decision.windows == 0 or decision.probability(profile) < self.settings.identify_confidence:
                return
            confirmed = True
        drive.identified = True
        event = {
            "profile": profile,
            "source": source,
            "confidence": detail["confidence"],
            "seconds": round(timestamp - drive.start, 1),
        }
        if source == EXPLICIT:
            event["confirmed"] = confirmed
        self.emit(Event(timestamp, "driver_identified", event))

    def _check_mismatch(self, drive: _Drive, timestamp: float) -> None:
        explicit = self._explicit_profile
        decision = drive.decision
        if drive.mismatch or decision is None or decision.windows == 0 or not self._active(explicit):
            drive.contradiction_since = None
            return
        assert explicit is not None
        against = 1.0 - decision.probability(explicit)
        if against < self.settings.mismatch_confidence:
            drive.contradiction_since = None
            return
        if drive.contradiction_since is None:
            drive.contradiction_since = timestamp
        lasted = timestamp - drive.contradiction_since
        if lasted < self.settings.mismatch_seconds:
            return
        drive.mismatch = True
        self.counts["mismatches"] += 1
        behaviour, _ = decision.best(excluding=explicit)
        detail = {
            "explicit": explicit,
            "behaviour": behaviour if behaviour != explicit else UNKNOWN,
            "confidence": round(against, 4),
            "seconds": round(lasted, 1),
            "after": round(timestamp - drive.start, 1),
        }
        log.warning("identity: driver mismatch: key of %s, driving like %s", explicit, detail["behaviour"])
        self.emit(Event(timestamp, "driver_mismatch", detail))
