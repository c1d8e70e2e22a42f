"""Extension points between collection and publishing, for embedders of `Agent`.

The driver-identification stage (`identity.stage`) is wired in by the agent itself: it reads frames, and
fills `batch.driver` as the first annotator; these hooks run after it.

- A `SampleObserver` sees every sample the decode stage produces (after E2E checks), in time order, before
  the collector does; it may emit events (e.g. `driver_change`) through the `emit` callable it was given.
- A `BatchAnnotator` sees each batch after the collector closes it and before the outbox signs it; it may
  set `batch.driver` or add events (e.g. the identified driver and its confidence).

Both run on the pipeline thread and must be quick; neither may keep a reference to a batch it was shown.
"""

from __future__ import annotations

from typing import Protocol

from firmware_agent.values import Batch, Sample


class SampleObserver(Protocol):
    """Called for every sample, in order."""

    def observe(self, sample: Sample) -> None:
        """Look at one sample."""


class BatchAnnotator(Protocol):
    """Called for every batch, in order, before it is committed to the outbox."""

    def annotate(self, batch: Batch) -> None:
        """Add to or amend `batch` in place."""
