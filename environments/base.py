"""The environment interface.

An environment owns a pool of tasks per split and scores a completion of a
task. Scoring must never raise: a failure (timeout, crash, unparseable
output) is a ``Score`` with reward 0 and the reason.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class Task:
    id: str
    """Stable identifier, unique within the environment."""
    env: str
    messages: list[dict[str, str]]
    """The prompt as a chat conversation."""
    answer: Any
    """What the verifier checks against (gold answer, tests, constraints...)."""
    reference: str | None = None
    """A reference completion (used for supervised warm-up and ``rl env check``)."""
    difficulty: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Score:
    reward: float
    components: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    """Why the reward is not 1 (format error, wrong answer, timeout...)."""


def split_of(task_id: str, test_fraction: float) -> str:
    """Deterministic train/test assignment from the task's identity."""
    h = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big")
    return "test" if (h % 10_000) < test_fraction * 10_000 else "train"


class Environment(ABC):
    """Single-turn environment: ``tasks(split)`` and ``score(task, completion)``."""

    name: ClassVar[str]

    def __init__(self, **options: Any):
        if options:
            raise ValueError(
                f"environments.{self.name}: unknown option(s) {sorted(options)}"
            )

    @abstractmethod
    def tasks(self, split: str) -> list[Task]:
        """The task pool of ``split`` ('train' or 'test'), deterministic."""

    @abstractmethod
    def score(self, task: Task, completion: str) -> Score:
        """Score the decoded completion (reasoning and answer). Never raises."""

    def close(self) -> None:
        """Release processes or files held by the environment."""
