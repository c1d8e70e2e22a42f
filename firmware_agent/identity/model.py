"""The behavioural driver-fingerprint model: a histogram random forest over seconds, summed per window.

Every second of a window becomes a feature row (`features.second_features`: the channels, their changes,
trailing 5-10 s statistics and the window's context). A random forest written in numpy gives each second
a probability per driver; a window's score for driver k is the mean over its seconds of log p_k (naive
Bayes over seconds, tempered: seconds of one minute are far from independent).

Fit (numpy only; about a second for 4 drivers x 2000 windows on x86, see docs/identity-model.md):
1. Per-second features; a feature that is NaN in most training seconds or constant is dropped (an EV
   without throttle or gear simply trains on the rest); remaining NaNs get the training median.
2. `SECONDS_PER_WINDOW` seconds are drawn from each window (windows every 10 s overlap six-fold, so this
   still sees every second of a drive about once) and weighted so that every driver weighs the same
   (drivers with more driving would otherwise win every doubtful window) and, within a driver, each
   speed regime (`REGIME_EDGES_KMH`) weighs what it weighs over all drivers (at most `REGIME_CAP` times
   its own share): a driver who was recorded mostly in town must not make "open road" evidence for
   whoever was recorded on it.
3. `TREES` trees, each on a bootstrap of `ROWS_PER_TREE` rows, grown level by level on `BINS` quantile
   bins per feature, best Gini split among `sqrt(features)` random features per node, to `MAX_DEPTH`
   with at least `MIN_LEAF` (weighted) rows per leaf. The trees are flat arrays (feature, threshold,
   left child, class probabilities; the right child is left + 1), walked for all rows and trees at once.
4. Calibration on held-out time blocks, as windows of a new drive would be: the last
   `CALIBRATION_FRACTION` of each drive's windows are held out after a gap of `GAP_WINDOWS` (overlapping
   neighbours are near-copies), a model fitted on the rest scores them and gives
   - the temperature of the window posteriors (minimum held-out log loss), and
   - the distribution of the best window score of known drivers on unseen road, per predicted driver,
     which turns a score into the known-driver confidence.
   The final model is then fitted on all windows with these calibrations.

Open-set score: `known` = the fraction of held-out known-driver windows (predicted as the same driver)
whose best score was at most this window's: near 1 for a typical window of a known driver, towards 0 for
one that no driver explains.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_agent.atomic import write_atomic
from firmware_agent.errors import UserError
from firmware_agent.identity.features import as_seconds, feature_names, second_feature_names, second_features

_SPEED = second_feature_names().index("speed")

MAGIC = "firmware-agent-driver-model"
FORMAT_VERSION = 2

TREES = 32  # trees of the forest (validation: see docs/identity-model.md)
MAX_DEPTH = 10  # levels below the root
MIN_LEAF = 20.0  # weighted training rows per leaf at least
BINS = 32  # quantile bins per feature for the split search
ROWS_PER_TREE = 12000  # bootstrap rows per tree
SECONDS_PER_WINDOW = 10  # training seconds drawn per window
PROBABILITY_FLOOR = 0.02  # mixed into every second's probabilities so one odd second cannot veto a driver
LEAF_PRIOR = 1.0  # Laplace count added to each class in a leaf
#: Weight of each background row (drivers' rows weigh 1 on average); 0 turns the background class off.
BACKGROUND_WEIGHT = 1.0
REGIME_EDGES_KMH = (1.0, 20.0, 50.0)  # speed regimes: stopped, crawling, town, open road
REGIME_CAP = 5.0  # a driver's rows of a rare regime weigh at most this many times their count
MIN_FINITE_FRACTION = 0.2  # a feature finite in fewer training seconds than this is dropped
CALIBRATION_FRACTION = 0.3  # tail of each drive held out for calibration
GAP_WINDOWS = 5  # windows skipped before the held-out tail: 60-s windows every 10 s overlap 5 neighbours
MIN_CLASS_CALIBRATION = 20  # fewer held-out windows of a predicted driver: use all drivers' distribution
SEED = 20240611  # fixed, so that a refit on the same windows gives the same model
#: Windows 60 s long every 10 s each share their seconds with 5 others; `log_likelihoods` divides by this
#: so that summing it over such windows counts every second of driving once, not six times.
OVERLAP_TEMPERING = 6.0
#: A window is called "unknown" when fewer than this fraction of held-out known-driver windows scored
#: as low.
UNKNOWN_BELOW = 0.05
#: Windows whose per-second features are computed at a time, when fitting and scoring. A window's are
#: 60 x 59 float64 (28 KB): computed for every training window at once, a fit held about 100 KB per
#: window (1,740 windows: 200 MB at peak, 2,420: 280 MB) and the daemon's allocator kept much of it after
#: the fit, so its RSS grew with the driving learned (`bench/soak.py`). In chunks a fit holds the seconds
#: it draws and one chunk; each window's features do not depend on the others, so the model is the same.
CHUNK_WINDOWS = 256


class ModelFileError(UserError):
    """A driver-model file that is missing, damaged, of another format or of an incompatible version."""


@dataclass
class Forest:
    """Trees as flat arrays; node `roots[t]` is the root of tree t, a leaf has `left` = -1."""

    feature: np.ndarray  # (M,) int32, index into the kept per-second features
    threshold: np.ndarray  # (M,) float64, rows with value <= threshold go left
    left: np.ndarray  # (M,) int32, left child (right child = left + 1), -1 at a leaf
    value: np.ndarray  # (M, K + 1) float32, probabilities of the drivers and the background class
    roots: np.ndarray  # (T,) int32

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """(n, K + 1) mean over trees of the leaf probabilities of each row of `rows` (n, F)."""
        count = len(rows)
        node = np.broadcast_to(self.roots, (count, len(self.roots))).copy()
        index = np.arange(count)[:, None]
        for _ in range(MAX_DEPTH):
            left = self.left[node]
            inner = left >= 0
            if not inner.any():
                break
            step = rows[index, self.feature[node]] > self.threshold[node]
            node = np.where(inner, left + step, node)
        mean: np.ndarray = self.value[node].mean(axis=1)
        return mean


@dataclass
class DriverModel:
    """A fitted driver-fingerprint model: `labels` are the drivers it knows."""

    labels: tuple[str, ...]
    keep: np.ndarray  # (P,) bool: which per-second features are used
    fill: np.ndarray  # (P',) training median of each kept feature, for missing values
    forest: Forest
    temperature: float  # divides the window scores before the softmax of the posteriors
    calibration: np.ndarray  # (H,) best window score of held-out known-driver windows
    calibration_class: np.ndarray  # (H,) int, the driver each of those windows was predicted as
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-able facts for callers (e.g. CSV columns)

    # -- fitting ---------------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: Sequence[str], blocks: Sequence[str] | None = None
    ) -> DriverModel:
        """Fit on window vectors (N, F) from `window_features` with one driver label per window.

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

        windows, valid = as_seconds(features)  # a view of `features`: the per-second rows come in chunks
        held_out = _held_out_tails(block_list)
        # The gap windows are neither trained on nor scored (they overlap the held-out tail).
        trainable = ~held_out & ~_gap_before_tails(block_list, held_out)
        temperature = 1.0
        calibration, calibration_class = np.zeros(0), np.zeros(0, dtype=np.int64)
        train_labels = {label_list[i] for i in np.flatnonzero(trainable)}
        if held_out.any() and trainable.any():
            inner = cls._fit_core(
                windows[trainable], valid[trainable], [label_list[i] for i in np.flatnonzero(trainable)]
            )
            scored = held_out & np.array([label in train_labels for label in label_list])
            if scored.any():
                window_scores = inner._window_scores(windows[scored], valid[scored])
                truth = np.array([inner.labels.index(label_list[i]) for i in np.flatnonzero(scored)])
                temperature = _best_temperature(window_scores, truth)
                calibration = window_scores.max(axis=1)
                # Held-out classes are named by the final model's labels (a superset of the inner ones).
                calibration_class = np.asarray(inner.labels)[window_scores.argmax(axis=1)]
        model = cls._fit_core(windows, valid, label_list)
        model.temperature = temperature
        if calibration.size == 0:
            # Too little data to hold anything out: fall back to the training windows themselves
            # (optimistic: strangers will look more "known" than they are).
            window_scores = model._window_scores(windows, valid)
            calibration = window_scores.max(axis=1)
            calibration_class = np.asarray(model.labels)[window_scores.argmax(axis=1)]
        order = np.argsort(calibration, kind="stable")
        model.calibration = calibration[order]
        model.calibration_class = np.array([model.labels.index(str(c)) for c in calibration_class[order]])
        return model

    @classmethod
    def _fit_core(cls, windows: np.ndarray, valid: np.ndarray, labels: Sequence[str]) -> DriverModel:
        """Forest on the valid seconds of windows (N, S, channels) with `valid` (N, S), one label each."""
        rng = np.random.default_rng(SEED)
        order = tuple(sorted(set(labels)))
        window_class = np.array([order.index(label) for label in labels])
        rows, row_window = _draw_seconds(valid, rng)
        x = _drawn_second_rows(windows, valid, row_window, rows)
        speed = x[:, _SPEED].copy()  # (a view would keep all of x alive until the forest is grown)
        finite = np.isfinite(x)
        enough = finite.mean(axis=0) >= MIN_FINITE_FRACTION
        with np.errstate(all="ignore"):
            low = np.where(finite, x, np.inf).min(axis=0)
            high = np.where(finite, x, -np.inf).max(axis=0)
        del finite
        keep = enough & (high > low)
        if not keep.any():
            keep = enough.copy()  # nothing varies: a forest of single leaves (all drivers alike)
            keep[np.argmax(enough)] = True
        x = x[:, keep]
        fill = np.zeros(x.shape[1])
        for column in range(x.shape[1]):
            present = x[np.isfinite(x[:, column]), column]
            fill[column] = float(np.median(present)) if present.size else 0.0
        x = np.where(np.isfinite(x), x, fill)
        y = window_class[row_window]
        weight = _regime_weights(y, speed, len(order))
        if BACKGROUND_WEIGHT > 0:
            # The background class: every feature shuffled on its own keeps the marginals but breaks the
            # relations between them, so the forest learns where real driving lies (works with one driver).
            # Written into one array, column by column: no separate copy of the shuffled rows.
            count = len(x)
            both = np.empty((2 * count, x.shape[1]))
            both[:count] = x
            for column in range(x.shape[1]):
                both[count:, column] = rng.permutation(x[:, column])
            x = both
            y = np.concatenate([y, np.full(count, len(order))])
            weight = np.concatenate([weight, np.full(count, BACKGROUND_WEIGHT)])
        forest = _grow_forest(x, y, weight, len(order) + 1, rng)
        return cls(order, keep, fill, forest, 1.0, np.zeros(0), np.zeros(0, dtype=np.int64))

    # -- scoring ---------------------------------------------------------------------------------------

    def _window_scores(self, windows: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N, K) mean log-probability per driver over the valid seconds of windows (N, S, channels)."""
        parts = [
            self._chunk_scores(second_features(windows[chunk], valid[chunk]), valid[chunk])
            for chunk in _chunks(len(windows))
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)))

    def _chunk_scores(self, seconds: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """`_window_scores` of a few windows, from their per-second rows (N, S, P)."""
        count, length = valid.shape
        x = seconds.reshape(count * length, -1)[:, self.keep]
        x = np.where(np.isfinite(x), x, self.fill)
        flat_valid = valid.ravel()
        classes = self.forest.value.shape[1]  # the drivers and, last, the background
        probabilities = np.full((count * length, classes), 1.0 / classes)
        if flat_valid.any():
            probabilities[flat_valid] = self.forest.probabilities(x[flat_valid])
        probabilities = probabilities[:, : len(self.labels)]
        floor = PROBABILITY_FLOOR / classes
        log_p = np.log((1.0 - PROBABILITY_FLOOR) * probabilities + floor).reshape(count, length, -1)
        used = np.maximum(valid.sum(axis=1), 1)[:, None]
        average: np.ndarray = (log_p * valid[:, :, None]).sum(axis=1) / used
        return average

    def _scores_of(self, features: np.ndarray) -> np.ndarray:
        return self._window_scores(*as_seconds(_as_matrix(features)))

    def scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(posteriors (N, K) over `labels`, rows summing to 1; known (N,) in [0, 1])."""
        window_scores = self._scores_of(features)
        posteriors = _softmax(window_scores / self.temperature)
        return posteriors, self._known(window_scores)

    def log_likelihoods(self, features: np.ndarray) -> np.ndarray:
        """(N, K + 1) tempered log-likelihoods per label and, last, "unknown"; sum them over windows.

        Each column is the window score / (temperature * OVERLAP_TEMPERING); the unknown column uses the
        score below which `known` falls under UNKNOWN_BELOW. Dividing by OVERLAP_TEMPERING keeps the sum
        over 60-s windows every 10 s from counting each second six times.
        """
        window_scores = self._scores_of(features)
        unknown = np.full((len(window_scores), 1), self._unknown_score())
        both = np.concatenate([window_scores, unknown], axis=1)
        return both / (self.temperature * OVERLAP_TEMPERING)

    def predict(self, features: np.ndarray) -> list[str]:
        """The most likely label of each window, or "unknown" when its known score is below UNKNOWN_BELOW."""
        posteriors, known = self.scores(features)
        best = posteriors.argmax(axis=1)
        return [self.labels[b] if k >= UNKNOWN_BELOW else "unknown" for b, k in zip(best, known, strict=True)]

    def _known(self, window_scores: np.ndarray) -> np.ndarray:
        best = window_scores.max(axis=1)
        predicted = window_scores.argmax(axis=1)
        known = _fraction_at_most(self.calibration, best)
        for label in range(len(self.labels)):
            reference = self.calibration[self.calibration_class == label]
            mine = predicted == label
            if reference.size >= MIN_CLASS_CALIBRATION and mine.any():
                known[mine] = _fraction_at_most(reference, best[mine])
        return known

    def _unknown_score(self) -> float:
        return float(np.quantile(self.calibration, UNKNOWN_BELOW))

    # -- persistence -----------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the model to `path` atomically (mode 0600), as an npz without pickles plus a JSON header."""
        header = {
            "magic": MAGIC,
            "version": FORMAT_VERSION,
            "labels": list(self.labels),
            "feature_count": len(feature_names()),
            "second_feature_count": int(self.keep.size),
            "temperature": self.temperature,
            "meta": self.meta,
        }
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            keep=self.keep,
            fill=self.fill,
            tree_feature=self.forest.feature,
            tree_threshold=self.forest.threshold,
            tree_left=self.forest.left,
            tree_value=self.forest.value,
            tree_roots=self.forest.roots,
            calibration=self.calibration,
            calibration_class=self.calibration_class,
        )
        path = Path(path)
        try:
            write_atomic(path, buffer.getvalue())
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot write: {exc.strerror or exc}") from exc

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
        expected = (len(feature_names()), len(second_feature_names()))
        found = (header.get("feature_count"), header.get("second_feature_count"))
        if found != expected:
            raise ModelFileError(
                f"{path}: trained on {found[0]} window values and {found[1]} per-second features, this "
                f"agent computes {expected[0]} and {expected[1]}; retrain the profile"
            )
        try:
            forest = Forest(
                feature=arrays["tree_feature"].astype(np.int32),
                threshold=arrays["tree_threshold"].astype(np.float64),
                left=arrays["tree_left"].astype(np.int32),
                value=arrays["tree_value"].astype(np.float32),
                roots=arrays["tree_roots"].astype(np.int32),
            )
            model = cls(
                labels=tuple(str(label) for label in header["labels"]),
                keep=arrays["keep"].astype(bool),
                fill=arrays["fill"].astype(np.float64),
                forest=forest,
                temperature=float(header["temperature"]),
                calibration=arrays["calibration"].astype(np.float64),
                calibration_class=arrays["calibration_class"].astype(np.int64),
                meta=dict(header.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: driver-model file is missing {exc}") from exc
        if not _consistent(model):
            raise ModelFileError(f"{path}: driver-model arrays have inconsistent shapes")
        return model


def _consistent(model: DriverModel) -> bool:
    """Shapes and indices agree, so that scoring cannot index out of bounds."""
    forest, kept, nodes = model.forest, int(model.keep.sum()), len(model.forest.left)
    if not (
        model.keep.size == len(second_feature_names())
        and model.fill.shape == (kept,)
        and forest.feature.shape == (nodes,)
        and forest.threshold.shape == (nodes,)
        and forest.value.shape == (nodes, len(model.labels) + 1)
        and forest.roots.ndim == 1
        and forest.roots.size >= 1
        and model.calibration.ndim == 1
        and model.calibration.size >= 1
        and model.calibration_class.shape == model.calibration.shape
    ):
        return False
    inner = forest.left >= 0
    return bool(
        np.all((forest.roots >= 0) & (forest.roots < nodes))
        and np.all(forest.left[inner] + 1 < nodes)
        and np.all((forest.feature >= 0) & (forest.feature < kept))
        and np.all((model.calibration_class >= 0) & (model.calibration_class < len(model.labels)))
    )


def _chunks(count: int) -> Iterator[slice]:
    """Slices of `CHUNK_WINDOWS` windows covering `count` windows."""
    for start in range(0, count, CHUNK_WINDOWS):
        yield slice(start, min(start + CHUNK_WINDOWS, count))


def _drawn_second_rows(
    windows: np.ndarray, valid: np.ndarray, row_window: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """`second_features(windows, valid)[row_window, rows]` without all of it at once: chunk by chunk.

    `row_window` must be in ascending order (as `_draw_seconds` gives it).
    """
    out = np.empty((len(rows), len(second_feature_names())))
    for chunk in _chunks(len(windows)):
        low, high = np.searchsorted(row_window, (chunk.start, chunk.stop))
        if low < high:
            features = second_features(windows[chunk], valid[chunk])
            out[low:high] = features[row_window[low:high] - chunk.start, rows[low:high]]
    return out


def _regime_weights(y: np.ndarray, speed: np.ndarray, classes: int) -> np.ndarray:
    """Row weights: each driver the same total; within a driver, each speed regime its pooled share.

    A regime a driver has rows of weighs (pooled share / the driver's share) per row, capped at
    `REGIME_CAP`; a regime the driver never drove in stays empty (nothing to reweight).
    """
    regime = np.searchsorted(REGIME_EDGES_KMH, np.nan_to_num(speed), side="right")
    counts = np.zeros((classes, len(REGIME_EDGES_KMH) + 1))
    np.add.at(counts, (y, regime), 1.0)
    pooled = counts.sum(axis=0) / counts.sum()
    own = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    factor = np.minimum(np.where(counts > 0, pooled / np.maximum(own, 1e-12), 0.0), REGIME_CAP)
    weight = factor[y, regime]
    totals = np.bincount(y, weights=weight, minlength=classes)
    weighted: np.ndarray = weight * (len(y) / classes) / totals[y]
    return weighted


def _draw_seconds(valid: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to SECONDS_PER_WINDOW random valid seconds of each window: (second index, window index)."""
    keys = np.where(valid, rng.random(valid.shape), np.inf)
    take = min(SECONDS_PER_WINDOW, valid.shape[1])
    chosen = np.argsort(keys, axis=1)[:, :take]
    window = np.repeat(np.arange(len(valid)), take)
    second = chosen.ravel()
    ok = valid[window, second]
    return second[ok], window[ok]


def _bin_edges(x: np.ndarray) -> np.ndarray:
    """(F, BINS - 1) split candidates per feature: inner quantiles, repeats replaced by +inf."""
    quantiles = np.quantile(x, np.arange(1, BINS) / BINS, axis=0).T  # (F, BINS - 1), sorted per row
    repeated = np.zeros_like(quantiles, dtype=bool)
    repeated[:, 1:] = quantiles[:, 1:] <= quantiles[:, :-1]
    edges = np.where(repeated, np.inf, quantiles)
    return np.sort(edges, axis=1)


def _grow_forest(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, classes: int, rng: np.random.Generator
) -> Forest:
    edges = _bin_edges(x)
    # bin b holds edges[b - 1] < value <= edges[b], so "bin <= t" is "value <= edges[t]"
    binned = np.empty(x.shape, dtype=np.uint8)
    for column in range(x.shape[1]):
        binned[:, column] = np.searchsorted(edges[column], x[:, column], side="left")
    trees = [_grow_tree(binned, edges, y, weight, classes, rng) for _ in range(TREES)]
    offsets = np.cumsum([0] + [len(tree[0]) for tree in trees[:-1]])
    feature = np.concatenate([tree[0] for tree in trees]).astype(np.int32)
    threshold = np.concatenate([tree[1] for tree in trees])
    left = np.concatenate(
        [np.where(tree[2] >= 0, tree[2] + offset, -1) for tree, offset in zip(trees, offsets, strict=True)]
    ).astype(np.int32)
    value = np.concatenate([tree[3] for tree in trees]).astype(np.float32)
    return Forest(feature, threshold, left, value, offsets.astype(np.int32))


def _grow_tree(
    binned: np.ndarray,
    edges: np.ndarray,
    y_all: np.ndarray,
    weight_all: np.ndarray,
    classes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One tree, grown level by level on a bootstrap sample: (feature, threshold, left, value) per node."""
    sample = rng.integers(0, len(y_all), size=min(ROWS_PER_TREE, len(y_all)))
    data, y, weight = binned[sample], y_all[sample], weight_all[sample]
    features = data.shape[1]
    tries = max(1, round(float(np.sqrt(features))))
    feature: list[np.ndarray] = []
    threshold: list[np.ndarray] = []
    left: list[np.ndarray] = []
    value: list[np.ndarray] = []
    rows = np.arange(len(y))
    row_node = np.zeros(len(y), dtype=np.int64)  # position of each row's node within the current level
    level_size, next_id = 1, 1
    for depth in range(MAX_DEPTH + 1):
        totals = np.bincount(
            row_node * classes + y[rows], weights=weight[rows], minlength=level_size * classes
        )
        totals = totals.reshape(level_size, classes)
        mass = totals.sum(axis=1)
        value.append((totals + LEAF_PRIOR) / (mass + classes * LEAF_PRIOR)[:, None])
        level_feature = np.zeros(level_size, dtype=np.int64)
        level_threshold = np.zeros(level_size)
        level_left = np.full(level_size, -1, dtype=np.int64)
        splittable = (mass >= 2 * MIN_LEAF) & ((totals > 0).sum(axis=1) > 1)
        if depth == MAX_DEPTH or not splittable.any():
            feature.append(level_feature)
            threshold.append(level_threshold)
            left.append(level_left)
            break
        # m random features per node; class histograms of (node, feature try, bin) in one bincount.
        tried = np.argsort(rng.random((level_size, features)), axis=1)[:, :tries]
        bins = data[rows[:, None], tried[row_node]].astype(np.int64)  # (n, tries)
        slot = (row_node[:, None] * tries + np.arange(tries)) * BINS + bins
        histogram = np.bincount(
            (slot * classes + y[rows][:, None]).ravel(),
            weights=np.repeat(weight[rows], tries),
            minlength=level_size * tries * BINS * classes,
        ).reshape(level_size, tries, BINS, classes)
        left_counts = np.cumsum(histogram, axis=2)[:, :, :-1, :]
        right_counts = totals[:, None, None, :] - left_counts
        left_mass = left_counts.sum(axis=3)
        right_mass = mass[:, None, None] - left_mass
        with np.errstate(divide="ignore", invalid="ignore"):
            purity = (left_counts**2).sum(axis=3) / left_mass + (right_counts**2).sum(axis=3) / right_mass
        purity = np.where((left_mass >= MIN_LEAF) & (right_mass >= MIN_LEAF), purity, -np.inf)
        flat = purity.reshape(level_size, -1)
        best = flat.argmax(axis=1)
        gain = flat[np.arange(level_size), best] - (totals**2).sum(axis=1) / np.maximum(mass, 1e-12)
        split = splittable & np.isfinite(gain) & (gain > 1e-9 * np.maximum(mass, 1.0))
        best_try, best_bin = np.divmod(best, BINS - 1)
        chosen = tried[np.arange(level_size), best_try]
        level_feature[split] = chosen[split]
        level_threshold[split] = edges[chosen[split], best_bin[split]]
        children = np.cumsum(split) - 1  # index of each splitting node among this level's splits
        level_left[split] = next_id + 2 * children[split]
        feature.append(level_feature)
        threshold.append(level_threshold)
        left.append(level_left)
        if not split.any():
            break
        # rows follow their node to the next level; rows of leaves are done
        moving = split[row_node]
        rows, row_node = rows[moving], row_node[moving]
        goes_right = data[rows, chosen[row_node]] > best_bin[row_node]
        row_node = 2 * children[row_node] + goes_right
        next_id += 2 * int(split.sum())
        level_size = 2 * int(split.sum())
    return (
        np.concatenate(feature),
        np.concatenate(threshold),
        np.concatenate(left),
        np.concatenate(value),
    )


def _fraction_at_most(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fraction of the sorted `reference` that is <= each value."""
    return np.searchsorted(reference, values, side="right") / reference.size


def _as_matrix(features: np.ndarray) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    return matrix[None, :] if matrix.ndim == 1 else matrix


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


def _block_positions(blocks: list[str]) -> dict[str, list[int]]:
    positions: dict[str, list[int]] = {}
    for index, block in enumerate(blocks):
        positions.setdefault(block, []).append(index)
    return positions


def _held_out_tails(blocks: list[str]) -> np.ndarray:
    """True for the last CALIBRATION_FRACTION of each block's windows (blocks with enough windows)."""
    held = np.zeros(len(blocks), dtype=bool)
    for members in _block_positions(blocks).values():
        count = round(len(members) * CALIBRATION_FRACTION)
        if count >= 1 and len(members) - count - GAP_WINDOWS >= 2:
            held[members[-count:]] = True
    return held


def _gap_before_tails(blocks: list[str], held: np.ndarray) -> np.ndarray:
    gap = np.zeros(len(blocks), dtype=bool)
    for members in _block_positions(blocks).values():
        first_held = next((i for i, m in enumerate(members) if held[m]), None)
        if first_held is not None:
            gap[members[max(first_held - GAP_WINDOWS, 0) : first_held]] = True
    return gap


def _best_temperature(window_scores: np.ndarray, truth: np.ndarray) -> float:
    """The temperature minimising the held-out log loss of softmax(score / T) (grid search)."""
    if window_scores.shape[1] < 2:
        return 1.0
    best, best_loss = 1.0, float("inf")
    for temperature in np.geomspace(1.0 / 256.0, 16.0, 49):
        log_post = window_scores / temperature
        log_post = log_post - log_post.max(axis=1, keepdims=True)
        log_post -= np.log(np.exp(log_post).sum(axis=1, keepdims=True))
        loss = -float(log_post[np.arange(len(truth)), truth].mean())
        if loss < best_loss:
            best, best_loss = float(temperature), loss
    return best
