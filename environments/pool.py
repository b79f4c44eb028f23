"""Scoring across environments: what runs in the environment actor.

Every completion is decoded and routed to its task's environment; any
exception becomes reward 0 with the reason, so one bad sample or a broken
verifier never stops the run.
"""

from __future__ import annotations

import math
import time

from environments.base import Environment, Score, Task
from environments.registry import make_environment


class EnvironmentPool:
    def __init__(self, specs: dict[str, dict], tokenizer_path: str):
        from transformers import AutoTokenizer

        self.envs: dict[str, Environment] = {name: make_environment(name, opts) for name, opts in specs.items()}
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def score(self, tasks: list[Task], completions: list[list[int]]) -> tuple[list[Score], float]:
        """Scores in input order, and the seconds spent."""
        start = time.perf_counter()
        scores = []
        for task, ids in zip(tasks, completions):
            env = self.envs.get(task.env)
            if env is None:
                scores.append(Score(0.0, reason=f"no environment '{task.env}' in this run"))
                continue
            try:
                s = env.score(task, self.decode(ids))
                if not isinstance(s, Score) or not math.isfinite(float(s.reward)):
                    s = Score(0.0, reason=f"environment returned an invalid score: {s!r}"[:300])
            except Exception as exc:  # noqa: BLE001 - recorded as the sample's reason
                s = Score(0.0, reason=f"environment error: {type(exc).__name__}: {exc}"[:300])
            scores.append(s)
        return scores, time.perf_counter() - start

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
