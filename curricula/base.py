"""What the training loop asks of a task sampler (fixed ratios or the curriculum)."""

from __future__ import annotations

from typing import Protocol

from environments.base import Task


class Sampler(Protocol):
    def next_batch(self, batch_size: int, step: int) -> list[Task]:
        """``batch_size`` tasks for training step ``step`` (1-based)."""

    def observe(self, results: list[tuple[Task, list[float]]]) -> None:
        """The rewards of each sampled task's group, once the step has rolled them out."""

    def metrics(self) -> dict[str, float]:
        """Metrics of the last batch and of the sampler's state (``curriculum/*``)."""

    def state_dict(self) -> dict:
        """Everything needed to continue exactly after a resume (plain JSON data)."""

    def load_state_dict(self, state: dict) -> None: ...
