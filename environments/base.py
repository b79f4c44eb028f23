"""The environment interface.

An environment owns a pool of tasks per split and scores a completion of a
task. Scoring must never raise: a failure (timeout, crash, unparseable
output) is a ``Score`` with reward 0 and the reason.

Single-turn environments implement ``tasks`` and ``score``. Multi-turn ones
(tool use) implement ``tasks`` and ``start``, which opens an ``Episode``: the
model's turn goes in, the environment's reply (tool responses) comes out,
until the episode ends and is scored.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar


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


def generate_split(make: Callable[[random.Random], Task], split: str, size: int, seed: int,
                   test_fraction: float, tries_per_task: int = 20,
                   key: Callable[[Task], str] = lambda task: task.id) -> list[Task]:
    """``size`` distinct tasks of ``split`` from a seeded generator. A task
    belongs to the split its ``key`` (default: its id) hashes to, so train and
    test never share one."""
    rng = random.Random(f"{seed}-{split}")
    out: list[Task] = []
    seen: set[str] = set()
    for _ in range(size * tries_per_task):
        if len(out) == size:
            break
        task = make(rng)
        k = key(task)
        if k not in seen and split_of(k, test_fraction) == split:
            seen.add(k)
            out.append(task)
    return out


def check_split(env: str, split: str, sizes: dict[str, int]) -> None:
    if split not in sizes:
        raise ValueError(f"{env}: unknown split {split!r} (train or test)")


class Environment(ABC):
    """Single-turn environment: ``tasks(split)`` and ``score(task, completion)``."""

    name: ClassVar[str]
    max_reward: float = 1.0
    """The reward of a perfect sample (``rl env check`` expects it of every reference)."""
    min_reward: float = 0.0
    """The reward of a failed sample (``rl env check`` expects it of ``wrong_completion``)."""

    def reference_reward(self, task: "Task") -> float:
        """What ``task.reference`` should earn (``rl env check``): ``max_reward`` unless
        the environment's references are imperfect on purpose."""
        return self.max_reward

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

    def wrong_completion(self, task: Task, others: list[Task]) -> str:
        """A completion that must score 0 on ``task`` (``rl env check`` tries it).

        Default: the reference of another task with a different answer.
        Environments where that can pass (constraints, schemas) override this.
        """
        for other in others:
            if other.reference and other.answer != task.answer:
                return other.reference
        return "<think></think>"

    def close(self) -> None:
        """Release processes or files held by the environment."""


class GeneratedTasks:
    """Tasks from a seeded generator (``generate``), or from a JSON-lines file per
    split (``data_files: {train: a.jsonl}``, rows read by ``task_from_row``).
    Mixed into single-turn (``GeneratedEnvironment``) and multi-turn environments."""

    tries_per_task: ClassVar[int] = 20
    """Generator calls per wanted task before a split is given up as smaller."""

    def __init__(self, train_size: int, test_size: int, seed: int, test_fraction: float,
                 require_think: bool, data_files: dict[str, str] | None):
        if not 0 < test_fraction < 1:
            raise ValueError(f"environments.{self.name}.test_fraction: must be between 0 and 1")
        self.sizes = {"train": train_size, "test": test_size}
        self.seed, self.test_fraction, self.require_think = seed, test_fraction, require_think
        self.data_files = data_files or {}

    @abstractmethod
    def generate(self, rng: random.Random) -> Task:
        """One generated task (its ``split_key`` decides its split)."""

    @abstractmethod
    def task_from_row(self, row: dict, default_id: str) -> Task:
        """A task from one row of a task file; raise KeyError/ValueError on a malformed row."""

    def split_key(self, task: Task) -> str:
        """What decides a generated task's split, and what makes two tasks the same."""
        return task.id

    def generator(self) -> Callable[[random.Random], Task]:
        """The generator for one split (a fresh one per ``tasks`` call)."""
        return self.generate

    def tasks(self, split: str) -> list[Task]:
        if split in self.data_files:
            path = self.data_files[split]
            return read_jsonl(path, lambda row, lineno: self.task_from_row(row, f"{Path(path).stem}-{lineno}"))
        check_split(self.name, split, self.sizes)
        return generate_split(self.generator(), split, self.sizes[split], self.seed, self.test_fraction,
                              self.tries_per_task, self.split_key)


class GeneratedEnvironment(GeneratedTasks, Environment):
    """A single-turn environment with ``GeneratedTasks``."""


class Episode(ABC):
    """One multi-turn interaction with a task."""

    @abstractmethod
    def step(self, completion: str) -> list[dict[str, str]] | None:
        """Take the model's turn (decoded); return the messages to append
        (e.g. ``{"role": "tool", "content": ...}``), or None when the episode
        is over (a final answer). Never raises: a malformed turn gets an
        error message back."""

    @abstractmethod
    def score(self) -> Score:
        """The episode's reward once it is over (or cut at the turn/token limit)."""

    def metrics(self) -> dict[str, float]:
        """Counters of the episode (tool calls, tool errors ...), summed into the step's metrics."""
        return {}

    def close(self) -> None:
        """Release the episode's resources (database files ...)."""


class MultiTurnEnvironment(Environment):
    """An environment whose tasks are episodes of several model turns."""

    @abstractmethod
    def start(self, task: Task) -> Episode:
        """A fresh episode of ``task`` (its own state, e.g. a database copy)."""

    def reference_turns(self, task: Task) -> list[str]:
        """The model turns of a reference solution (``task.reference`` is the first)."""
        return [task.reference] if task.reference else []

    def play(self, task: Task, turns: list[str]) -> tuple[Score, list[dict[str, str]]]:
        """Run an episode with fixed model turns; the score and the conversation
        after the prompt (assistant turns and the environment's replies)."""
        episode = self.start(task)
        transcript: list[dict[str, str]] = []
        try:
            for turn in turns:
                transcript.append({"role": "assistant", "content": turn})
                reply = episode.step(turn)
                if reply is None:
                    break
                transcript.extend(reply)
            return episode.score(), transcript
        finally:
            episode.close()

    def score(self, task: Task, completion: str) -> Score:
        """A one-turn episode: what a single completion achieves on its own."""
        return self.play(task, [completion])[0]


# ------------------------------------------------------------- task data


class DataError(ValueError):
    """A malformed task file; the message names the file and line."""


Row = TypeVar("Row")


def read_jsonl(path: str | Path, make_task: Callable[[dict, int], Row]) -> list[Row]:
    """Tasks from a JSON-lines file, one object per line (blank lines skipped).

    ``make_task(row, line_number)`` builds a task (or what the caller makes of a row); any error it raises (a
    missing key, a wrong type) is reported with the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: task file not found")
    tasks = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            try:
                tasks.append(make_task(row, lineno))
            except KeyError as exc:
                raise DataError(f"{path}:{lineno}: missing field {exc}") from None
            except (TypeError, ValueError) as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None
    if not tasks:
        raise DataError(f"{path}: no tasks")
    return tasks
