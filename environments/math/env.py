"""Procedural math: seeded tasks of graded difficulty with a boxed answer.

Levels (``difficulty``):
  1. one-digit addition / subtraction        ``7+5``
  2. two-digit addition / subtraction        ``47-19``
  3. multiplication                          ``13*7``
  4. two operations with precedence          ``4+6*3``
  5. two-step word problems                  ``Ann has 12 pens. She buys 5 more ...``

Completions are ``<think>steps</think>\\boxed{answer}``; the reward is 1 when
the last boxed answer equals the gold answer (exact for numbers, symbolic
equivalence otherwise, in an isolated process with a time limit).
Train and test splits are disjoint by construction: a task's split is a
hash of its question.
"""

from __future__ import annotations

import random

from environments.base import GeneratedEnvironment, Score, Task
from verifiers.isolation import IsolatedRunner
from environments.math.verifier import MAX_ANSWER_CHARS, last_boxed, numbers_equal, refusal, symbolic_equal
from verifiers.text import answer_part

_NAMES = ["Ann", "Bob", "Cy", "Dee", "Eve", "Fox", "Gus", "Ida"]
_ITEMS = ["pens", "cards", "eggs", "coins", "books", "shells"]


def _add_or_sub(rng: random.Random, a: int, b: int) -> tuple[str, int, str]:
    """a+b, or the larger minus the smaller (answers stay non-negative)."""
    if rng.random() < 0.5:
        return f"{a}+{b}", a + b, f"{a}+{b}={a + b}"
    a, b = max(a, b), min(a, b)
    return f"{a}-{b}", a - b, f"{a}-{b}={a - b}"


def _level1(rng: random.Random) -> tuple[str, int, str]:
    return _add_or_sub(rng, rng.randint(0, 9), rng.randint(0, 9))


def _level2(rng: random.Random) -> tuple[str, int, str]:
    return _add_or_sub(rng, rng.randint(10, 99), rng.randint(1, 99))


def _level3(rng: random.Random) -> tuple[str, int, str]:
    a, b = rng.randint(2, 19), rng.randint(2, 9)
    return f"{a}*{b}", a * b, f"{a}*{b}={a * b}"


def _level4(rng: random.Random) -> tuple[str, int, str]:
    a, b, c = rng.randint(1, 20), rng.randint(2, 9), rng.randint(2, 9)
    if rng.random() < 0.5:
        return f"{a}+{b}*{c}", a + b * c, f"{b}*{c}={b * c} {a}+{b * c}={a + b * c}"
    a = rng.randint(b * c, b * c + 30)
    return f"{a}-{b}*{c}", a - b * c, f"{b}*{c}={b * c} {a}-{b * c}={a - b * c}"


def _level5(rng: random.Random) -> tuple[str, int, str]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(2, 30), rng.randint(2, 20)
    c = rng.randint(1, a + b)
    q = f"{name} has {a} {item}, gets {b} more, then gives away {c}. How many {item} now?"
    return q, a + b - c, f"{a}+{b}={a + b} {a + b}-{c}={a + b - c}"


LEVELS = {1: _level1, 2: _level2, 3: _level3, 4: _level4, 5: _level5}


class MathEnvironment(GeneratedEnvironment):
    """Generated questions of ``levels`` (cycled), or task files with rows
    ``{"question", "answer"[, "id", "reference", "level"]}`` (``data_files``)."""

    name = "math"
    tries_per_task = 50

    def __init__(self, levels: list[int] = (1, 2, 3, 4, 5), train_size: int = 20000,
                 test_size: int = 500, test_fraction: float = 0.1, seed: int = 1234,
                 verify_timeout: float = 5.0, require_think: bool = True, data_files: dict[str, str] | None = None):
        unknown = [lv for lv in levels if lv not in LEVELS]
        if unknown or not levels:
            raise ValueError(f"environments.math.levels: expected values from {sorted(LEVELS)}, got {list(levels)}")
        super().__init__(train_size, test_size, seed, test_fraction, require_think, data_files)
        self.levels = list(levels)
        self.verify_timeout = verify_timeout
        self._runner: IsolatedRunner | None = None

    def task(self, task_id: str, question: str, answer, reference: str | None, level: int) -> Task:
        return Task(id=task_id, env=self.name, messages=[{"role": "user", "content": question}],
                    answer=str(answer), reference=reference, difficulty=level)

    def question(self, rng: random.Random, level: int) -> Task:
        question, answer, steps = LEVELS[level](rng)
        return self.task(f"math/{question}", question, answer, f"<think>{steps}</think>\\boxed{{{answer}}}", level)

    def generator(self):
        """A split's questions take the levels in turn, one per generator call (rejected draws
        included), so each level gets its share of the split."""
        calls = 0

        def make(rng: random.Random) -> Task:
            nonlocal calls
            calls += 1
            return self.question(rng, self.levels[calls % len(self.levels)])
        return make

    def generate(self, rng: random.Random) -> Task:
        """One question of a level drawn from ``rng``."""
        return self.question(rng, rng.choice(self.levels))

    def split_key(self, task: Task) -> str:
        return task.messages[-1]["content"]

    def task_from_row(self, row: dict, default_id: str) -> Task:
        question, answer = str(row["question"]), row["answer"]
        if not question.strip() or not str(answer).strip():
            raise ValueError("'question' and 'answer' must be non-empty")
        return self.task(str(row.get("id", f"math/{default_id}")), question, answer, row.get("reference"),
                         int(row.get("level", 0)))

    def score(self, task: Task, completion: str) -> Score:
        answer, reason = answer_part(completion, self.require_think)
        fmt = {"format": 0.0}
        if answer is None:
            return Score(0.0, fmt, reason)
        boxed = last_boxed(answer)
        if boxed is None:
            return Score(0.0, fmt, "format: no \\boxed{} answer")
        fmt = {"format": 1.0}
        if len(boxed) > MAX_ANSWER_CHARS:
            return Score(0.0, fmt, f"answer longer than {MAX_ANSWER_CHARS} characters")
        same = numbers_equal(boxed, str(task.answer))
        if same is None and (refused := refusal(boxed)):
            return Score(0.0, fmt, refused)
        if same is None:
            if self._runner is None:
                self._runner = IsolatedRunner()
            outcome = self._runner.call(symbolic_equal, boxed, str(task.answer), timeout=self.verify_timeout)
            if not outcome.ok:
                return Score(0.0, fmt, f"verifier {outcome.error}")
            same = outcome.value
        return Score(1.0, fmt) if same else Score(0.0, fmt, "wrong answer")

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
