"""The running decision over a drive: who drives, given the key and the behaviour seen so far.

A Bayesian tally. The prior puts `explicit_prior` on the profile the key names (when the behavioural model
knows it) and spreads the rest over the other profiles and an unknown driver. Each window adds the model's
per-window log-likelihoods (tempered by the model, since neighbouring windows overlap), and older evidence
fades with a time constant of `evidence_horizon_seconds`, so the belief can still move when the driver
changes at a stop. The posterior is what the batches report as `confidence`.
"""

from __future__ import annotations

import math

import numpy as np

UNKNOWN = "unknown"


class RunningDecision:
    """Posterior over `labels` and an unknown driver, updated window by window."""

    def __init__(self, labels: tuple[str, ...], explicit_prior: float, step_seconds: float, horizon: float):
        self.labels = (*labels, UNKNOWN)
        self.explicit_prior = explicit_prior
        self.decay = math.exp(-step_seconds / horizon)
        self.evidence = np.zeros(len(self.labels))
        self.windows = 0
        self.log_prior = self._prior(None)

    def _prior(self, explicit: str | None) -> np.ndarray:
        count = len(self.labels)
        if explicit is None or explicit not in self.labels:
            return np.full(count, -math.log(count))
        prior = np.full(count, (1.0 - self.explicit_prior) / (count - 1))
        prior[self.labels.index(explicit)] = self.explicit_prior
        log_prior: np.ndarray = np.log(prior)
        return log_prior

    def set_explicit(self, explicit: str | None) -> None:
        """The key (or profile) in use changed: the prior follows it, the behavioural evidence stays."""
        self.log_prior = self._prior(explicit)

    def add(self, log_likelihoods: np.ndarray) -> None:
        """One window's evidence: log-likelihood per label, the last entry for an unknown driver."""
        self.evidence = self.decay * self.evidence + np.nan_to_num(log_likelihoods, nan=0.0, neginf=-50.0)
        self.windows += 1

    def posterior(self) -> np.ndarray:
        """Probability of each label (and, last, of an unknown driver)."""
        scores = self.log_prior + self.evidence
        scores = np.exp(scores - scores.max())
        normalised: np.ndarray = scores / scores.sum()
        return normalised

    def probability(self, label: str) -> float:
        """The posterior of one label (0 for a label the model does not know)."""
        if label not in self.labels:
            return 0.0
        return float(self.posterior()[self.labels.index(label)])

    def best(self, excluding: str | None = None) -> tuple[str, float]:
        """The most probable label (optionally other than `excluding`) and its probability."""
        posterior = self.posterior()
        order = np.argsort(-posterior)
        for index in order:
            if self.labels[index] != excluding:
                return self.labels[index], float(posterior[index])
        return UNKNOWN, 0.0
