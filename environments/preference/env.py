"""The synthetic preference task (``reward_models.synthetic``) as a policy
environment, for testing RLHF end to end: math questions whose verifier reward
is the true preference score (1 correct and short, 0.75 correct and long, 0
wrong). Run it with ``reward: genrm`` and the judge's circular comparison
gives the training reward while this score, the truth the judge approximates,
is logged as ``train/verifier_reward_mean/preference``.

A fraction ``padded_references`` of the references end with a filler sentence
(the same fillers the judge's labelled pairs use), so a policy warmed up on
them pads some of its answers, which RLHF with a good judge should undo. Each
question is ``copies`` tasks (ids ``preference/7+5#k``), each padded or not on
its own: the warmed-up policy then pads a question's answer some of the time,
which gives a group of answers to it different lengths to compare.
"""

from __future__ import annotations

import dataclasses
import random

from environments.base import Score, Task
from environments.math.env import MathEnvironment
from reward_models.synthetic import FILLERS, SHORT_ANSWER_CHARS, true_score
from verifiers.text import split_reasoning

PADDING = [f for f in FILLERS if f]


class PreferenceMathEnvironment(MathEnvironment):
    name = "preference"

    def __init__(self, levels: list[int] = (1,), padded_references: float = 0.5, copies: int = 4, **math_options):
        if not 0 <= padded_references <= 1:
            raise ValueError(f"environments.preference.padded_references: expected a fraction in [0, 1], "
                             f"got {padded_references}")
        if copies < 1:
            raise ValueError(f"environments.preference.copies: expected >= 1, got {copies}")
        super().__init__(levels=levels, **math_options)
        self.padded_references, self.copies = padded_references, copies

    def tasks(self, split: str) -> list[Task]:
        rng = random.Random(f"{self.seed}-{split}-padding")
        tasks = []
        for t in super().tasks(split):
            question = t.messages[0]["content"]
            for k in range(self.copies):
                padding = rng.choice(PADDING) if rng.random() < self.padded_references else ""
                tasks.append(dataclasses.replace(t, id=f"preference/{question}#{k}", env=self.name,
                                                 reference=t.reference + padding))
        return tasks

    def score(self, task: Task, completion: str) -> Score:
        correctness = super().score(task, completion)
        answer = (split_reasoning(completion)[1] or "").strip()
        correct = correctness.reward >= 1
        short = len(answer) <= SHORT_ANSWER_CHARS
        reason = correctness.reason or (None if short else f"answer longer than {SHORT_ANSWER_CHARS} characters")
        return Score(true_score(correct, len(answer)),
                     {**correctness.components, "correct": float(correct), "short": float(short),
                      "answer_chars": float(len(answer))}, reason)

    def reference_reward(self, task: Task) -> float:
        return self.score(task, task.reference).reward
