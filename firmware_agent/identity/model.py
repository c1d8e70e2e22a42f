"""The behavioural driver-fingerprint model: shrinkage LDA on window features, with an open-set score.

Fit (numpy only, milliseconds for a few hundred windows):
1. Robust standardisation per feature (median, IQR/1.349; the standard deviation where the IQR is 0).
   A feature that is NaN in most training windows or constant is dropped and the drop remembered, so an
   EV without a throttle or a car without a gear signal simply trains on the rest. Remaining NaNs (a
   window without a stop has no "stop" features) are imputed with the training median, i.e. 0 after
   standardising, and values are clipped to +-8 so that one broken sensor cannot dominate.
2. One centroid per driver and a shared within-driver covariance, shrunk towards its diagonal
   (`SHRINKAGE`): with ~100 windows per driver and ~100 features the raw covariance is singular.
3. Calibration on held-out time blocks: the last `CALIBRATION_FRACTION` of each drive's windows are held
   out (after a gap of `GAP_WINDOWS` windows, because overlapping neighbours are near-copies), the model
   is fitted on the rest, and the held-out windows give
   - the temperature of the posteriors (the one that minimises held-out log loss), and
   - the distribution of "distance to the nearest driver" of windows of known drivers in a drive
     segment the model has not seen, which turns a distance into the known-driver confidence.
   The final model is then refitted on all windows with these calibrations.

Open-set score: `known` = the fraction of held-out known-driver windows that were at least as far from
their nearest centroid (squared Mahalanobis distance under the shared shrunk covariance). A window of a
stranger is farther from every centroid than a known driver's, so its `known` is small.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_agent.errors import UserError
from firmware_agent.identity.features import feature_names

MAGIC = "firmware-agent-driver-model"
FORMAT_VERSION = 1

SHRINKAGE = 0.1  # weight of the diagonal in the shared covariance (chosen on the train-block validation)
RIDGE = 1e-2  # added to the diagonal, relative to its mean, so a near-constant feature cannot explode
CLIP = 8.0  # standardised features are clipped to +-CLIP
MIN_FINITE_FRACTION = 0.2  # a feature finite in fewer training windows than this is dropped
CALIBRATION_FRACTION = 0.3  # tail of each drive held out for calibration
GAP_WINDOWS = 5  # windows skipped before the held-out tail: 60-s windows every 10 s overlap 5 neighbours
#: Windows 60 s long every 10 s each share their seconds with 5 others; `log_likelihoods` divides by this
#: so that summing it over such windows counts every second of driving once, not six times.
OVERLAP_TEMPERING = 6.0
#: A window is called "unknown" when fewer than this fraction of held-out known-driver windows were as
#: far from their nearest centroid.
UNKNOWN_BELOW = 0.05


class ModelFileError(UserError):
    """A driver-model file that is missing, damaged, of another format or of an incompatible version."""


@dataclass
class DriverModel:
    """A fitted driver-fingerprint model: `labels` are the drivers it knows."""

    labels: tuple[str, ...]
    keep: np.ndarray  # (F,) bool: which features of `window_features` are used
    center: np.ndarray  # (F',) robust centre of the kept features
    scale: np.ndarray  # (F',) robust scale of the kept features
    means: np.ndarray  # (K, F') driver centroids in standardised space
    precision: np.ndarray  # (F', F') inverse of the shared shrunk covariance
    temperature: float  # divides the log-likelihoods before the softmax of the posteriors
    calibration: np.ndarray  # sorted held-out nearest-centroid squared distances of known drivers
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-able facts for callers (e.g. CSV columns)

    # -- fitting ---------------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: Sequence[str], blocks: Sequence[str] | None = None
    ) -> DriverModel:
        """Fit on window features (N, F) from `window_features` with one driver label per window.

        `blocks` names the drive (trip) of each window; windows of one block must be in time order.
        Without it, each driver's windows are taken as one drive in the order given. At least one label
        is needed; with one label only the known/unknown score is meaningful.
        """
        features = np.asarray(features, dtype=np.float64)
        label_list = [str(label) for label in labels]
        if features.ndim != 2 or features.shape[0] != len(label_list) or features.shape[0] == 0:
            raise ValueError(
                f"need (N, F) features with N labels, got {features.shape} and {len(label_list)}"
            )
        if features.shape[1] != len(feature_names()):
            raise ValueError(f"features have {features.shape[1]} columns, expected {len(feature_names())}")
        block_list = label_list if blocks is None else [str(block) for block in blocks]
        if len(block_list) != len(label_list):
            raise ValueError("blocks must have one entry per window")

        held_out = _held_out_tails(block_list)
        # The gap windows are neither trained on nor scored (they overlap the held-out tail).
        trainable = ~held_out & ~_gap_before_tails(block_list, held_out)
        temperature = 1.0
        calibration = np.zeros(0)
        train_labels = {label_list[i] for i in np.flatnonzero(trainable)}
        if held_out.any() and trainable.any():
            inner = cls._fit_core(features[trainable], [label_list[i] for i in np.flatnonzero(trainable)])
            scored = held_out & np.array([label in train_labels for label in label_list])
            if scored.any():
                distances = inner._squared_distances(features[scored])
                truth = np.array([inner.labels.index(label_list[i]) for i in np.flatnonzero(scored)])
                temperature = _best_temperature(distances, truth)
                calibration = np.sort(distances.min(axis=1))
        model = cls._fit_core(features, label_list)
        model.temperature = temperature
        if calibration.size == 0:
            # Too little data to hold anything out: fall back to the training distances themselves
            # (optimistic: strangers will look more "known" than they are).
            calibration = np.sort(model._squared_distances(features).min(axis=1))
        model.calibration = calibration
        return model

    @classmethod
    def _fit_core(cls, features: np.ndarray, labels: Sequence[str]) -> DriverModel:
        finite = np.isfinite(features)
        enough = finite.mean(axis=0) >= MIN_FINITE_FRACTION
        with np.errstate(all="ignore"):
            masked = np.where(finite, features, np.nan)
            center = np.nanmedian(masked[:, enough], axis=0)
            q75, q25 = np.nanpercentile(masked[:, enough], [75.0, 25.0], axis=0)
            spread = np.nanstd(masked[:, enough], axis=0)
        scale = (q75 - q25) / 1.349
        tiny = 1e-9 * np.maximum(1.0, np.abs(center))
        scale = np.where(scale > tiny, scale, spread)
        usable = np.isfinite(center) & (scale > tiny)
        keep = np.zeros(features.shape[1], dtype=bool)
        keep[np.flatnonzero(enough)[usable]] = True
        center, scale = center[usable], scale[usable]

        order = tuple(sorted(set(labels)))
        z = _standardise(features[:, keep], center, scale)
        index = np.array([order.index(label) for label in labels])
        means = np.stack([z[index == k].mean(axis=0) for k in range(len(order))])
        residual = z - means[index]
        covariance = residual.T @ residual / max(len(z) - len(order), 1)
        diagonal = np.diag(np.diag(covariance))
        covariance = (1.0 - SHRINKAGE) * covariance + SHRINKAGE * diagonal
        ridge = RIDGE * max(float(np.mean(np.diag(covariance))), 1e-6)
        covariance += ridge * np.eye(len(covariance))
        precision = np.linalg.inv(covariance)
        return cls(order, keep, center, scale, means, precision, 1.0, np.zeros(0))

    # -- scoring ---------------------------------------------------------------------------------------

    def _squared_distances(self, features: np.ndarray) -> np.ndarray:
        z = _standardise(np.asarray(features, dtype=np.float64)[:, self.keep], self.center, self.scale)
        diff = z[:, None, :] - self.means[None, :, :]
        return np.einsum("nkf,fg,nkg->nk", diff, self.precision, diff)

    def scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(posteriors (N, K) over `labels`, rows summing to 1; known (N,) in [0, 1])."""
        distances = self._squared_distances(_as_matrix(features))
        posteriors = _softmax(-0.5 * distances / self.temperature)
        return posteriors, self._known(distances.min(axis=1))

    def log_likelihoods(self, features: np.ndarray) -> np.ndarray:
        """(N, K + 1) tempered log-likelihoods per label and, last, "unknown"; sum them over windows.

        Each column is -0.5 * squared distance / (temperature * OVERLAP_TEMPERING); the unknown column
        uses the distance at which `known` falls to UNKNOWN_BELOW. Dividing by OVERLAP_TEMPERING keeps the
        sum over 60-s windows every 10 s from counting each second six times.
        """
        distances = self._squared_distances(_as_matrix(features))
        unknown = np.full((len(distances), 1), self._unknown_distance())
        both = np.concatenate([distances, unknown], axis=1)
        return -0.5 * both / (self.temperature * OVERLAP_TEMPERING)

    def predict(self, features: np.ndarray) -> list[str]:
        """The most likely label of each window, or "unknown" when its known score is below UNKNOWN_BELOW."""
        posteriors, known = self.scores(features)
        best = posteriors.argmax(axis=1)
        return [self.labels[b] if k >= UNKNOWN_BELOW else "unknown" for b, k in zip(best, known, strict=True)]

    def _known(self, nearest: np.ndarray) -> np.ndarray:
        reference = self.calibration
        # Fraction of held-out known-driver distances at least as large: 1 near the centroids, -> 0 far out.
        farther = reference.size - np.searchsorted(reference, nearest, side="left")
        return farther / reference.size

    def _unknown_distance(self) -> float:
        return float(np.quantile(self.calibration, 1.0 - UNKNOWN_BELOW))

    # -- persistence -----------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the model to `path` atomically (mode 0600), as an npz without pickles plus a JSON header."""
        header = {
            "magic": MAGIC,
            "version": FORMAT_VERSION,
            "labels": list(self.labels),
            "feature_count": int(self.keep.size),
            "temperature": self.temperature,
            "meta": self.meta,
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            keep=self.keep,
            center=self.center,
            scale=self.scale,
            means=self.means,
            precision=self.precision,
            calibration=self.calibration,
        )
        _write_atomically(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> DriverModel:
        """Read a model written by `save`; a `ModelFileError` names the file when it cannot be used."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except FileNotFoundError as exc:
            raise ModelFileError(f"{path}: no such driver-model file") from exc
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise ModelFileError(f"{path}: not a driver-model file or truncated ({exc})") from exc
        try:
            header = json.loads(arrays["header"].tobytes().decode())
        except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{path}: not a driver-model file (no readable header)") from exc
        if not isinstance(header, dict) or header.get("magic") != MAGIC:
            raise ModelFileError(f"{path}: not a driver-model file (wrong magic)")
        if header.get("version") != FORMAT_VERSION:
            raise ModelFileError(
                f"{path}: driver-model format version {header.get('version')}, this agent reads "
                f"version {FORMAT_VERSION}; retrain the profile"
            )
        expected = len(feature_names())
        if header.get("feature_count") != expected:
            raise ModelFileError(
                f"{path}: trained on {header.get('feature_count')} features, this agent computes "
                f"{expected}; retrain the profile"
            )
        try:
            model = cls(
                labels=tuple(str(label) for label in header["labels"]),
                keep=arrays["keep"].astype(bool),
                center=arrays["center"].astype(np.float64),
                scale=arrays["scale"].astype(np.float64),
                means=arrays["means"].astype(np.float64),
                precision=arrays["precision"].astype(np.float64),
                temperature=float(header["temperature"]),
                calibration=arrays["calibration"].astype(np.float64),
                meta=dict(header.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: driver-model file is missing {exc}") from exc
        kept = int(model.keep.sum())
        if (
            model.keep.size != expected
            or model.center.shape != (kept,)
            or model.scale.shape != (kept,)
            or model.means.shape != (len(model.labels), kept)
            or model.precision.shape != (kept, kept)
            or model.calibration.ndim != 1
            or model.calibration.size == 0
        ):
            raise ModelFileError(f"{path}: driver-model arrays have inconsistent shapes")
        return model


def _as_matrix(features: np.ndarray) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    return matrix[None, :] if matrix.ndim == 1 else matrix


def _standardise(values: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        z = (values - center) / scale
    return np.clip(np.where(np.isfinite(z), z, 0.0), -CLIP, CLIP)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _held_out_tails(blocks: list[str]) -> np.ndarray:
    """True for the last CALIBRATION_FRACTION of each block's windows (blocks with enough windows)."""
    held = np.zeros(len(blocks), dtype=bool)
    positions: dict[str, list[int]] = {}
    for index, block in enumerate(blocks):
        positions.setdefault(block, []).append(index)
    for members in positions.values():
        count = round(len(members) * CALIBRATION_FRACTION)
        if count >= 1 and len(members) - count - GAP_WINDOWS >= 2:
            held[members[-count:]] = True
    return held


def _gap_before_tails(blocks: list[str], held: np.ndarray) -> np.ndarray:
    gap = np.zeros(len(blocks), dtype=bool)
    positions: dict[str, list[int]] = {}
    for index, block in enumerate(blocks):
        positions.setdefault(block, []).append(index)
    for members in positions.values():
        first_held = next((i for i, m in enumerate(members) if held[m]), None)
        if first_held is not None:
            gap[members[max(first_held - GAP_WINDOWS, 0) : first_held]] = True
    return gap


def _best_temperature(distances: np.ndarray, truth: np.ndarray) -> float:
    """The temperature minimising the held-out log loss of softmax(-0.5 d / T) (grid search)."""
    if distances.shape[1] < 2:
        return 1.0
    best, best_loss = 1.0, float("inf")
    for temperature in np.geomspace(0.25, 256.0, 37):
        log_post = -0.5 * distances / temperature
        log_post -= log_post.max(axis=1, keepdims=True)
        log_post -= np.log(np.exp(log_post).sum(axis=1, keepdims=True))
        loss = -float(log_post[np.arange(len(truth)), truth].mean())
        if loss < best_loss:
            best, best_loss = float(temperature), loss
    return best


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot write: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # an existing tmp file keeps its old mode through O_CREAT
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
