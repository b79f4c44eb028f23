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

from environments.base import Environment, Score, Task, split_of
from verifiers.isolation import IsolatedRunner
from verifiers.math import MAX_ANSWER_CHARS, last_boxed, numbers_equal, refusal, split_reasoning, symbolic_equal

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


class MathEnvironment(Environment):
    name = "math"

    def __init__(self, levels: list[int] = (1, 2, 3, 4, 5), train_size: int = 20000,
                 test_size: int = 500, test_fraction: float = 0.1, seed: int = 1234,
                 verify_timeout: float = 5.0, require_think: bool = True):
        unknown = [lv for lv in levels if lv not in LEVELS]
        if unknown or not levels:
            raise ValueError(f"environments.math.levels: expected values from {sorted(LEVELS)}, got {list(levels)}")
        if not 0 < test_fraction < 1:
            raise ValueError("environments.math.test_fraction: must be between 0 and 1")
        self.levels = list(levels)
        self.sizes = {"train": train_size, "test": test_size}
        self.test_fraction = test_fraction
        self.seed = seed
        self.verify_timeout = verify_timeout
        self.require_think = require_think
        self._runner: IsolatedRunner | None = None

    def tasks(self, split: str) -> list[Task]:
        if split not in self.sizes:
            raise ValueError(f"math: unknown split {split!r} (train or test)")
        rng = random.Random(f"{self.seed}-{split}")
        want, seen, out = self.sizes[split], set(), []
        attempts = 0
        while len(out) < want and attempts < want * 50:
            attempts += 1
            level = self.levels[attempts % len(self.levels)]
            question, answer, steps = LEVELS[level](rng)
            if question in seen or split_of(question, self.test_fraction) != split:
                continue
            seen.add(question)
            out.append(Task(
                id=f"math/{question}", env=self.name,
                messages=[{"role": "user", "content": question}],
                answer=str(answer),
                reference=f"<think>{steps}</think>\\boxed{{{answer}}}",
                difficulty=level,
            ))
        return out

    def score(self, task: Task, completion: str) -> Score:
        reasoning, answer = split_reasoning(completion)
        fmt = {"format": 0.0}
        if self.require_think and reasoning is None:
            return Score(0.0, fmt, "format: no </think> closing the reasoning")
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
