"""Scoring across environments: what runs in the environment actor.

Every completion is decoded and routed to its task's environment. Each
environment lives in its own host process (``verifiers.isolation``) and
every verification has a wall-clock limit: a verifier that raises, hangs,
crashes or runs out of memory costs that one sample its reward (0, with the
reason recorded), never the run. After a hang or a crash the host is killed
and started afresh for the next sample.
"""

from __future__ import annotations

import math
import time

from environments.base import Environment, Score, Task
from environments.registry import make_environment
from verifiers.isolation import IsolatedRunner

DEFAULT_TIMEOUT_S = 10.0

# ------------------------------------------------ inside the host process

_HOSTED: dict[str, Environment] = {}


def _host_init(name: str, options: dict) -> None:
    _HOSTED[name] = make_environment(name, options)


def _host_score(name: str, task: Task, completion: str) -> Score:
    return _HOSTED[name].score(task, completion)


# ------------------------------------------------------- in the caller


def checked_score(score: object) -> Score:
    """The score if it is a valid ``Score`` with a finite reward, else reward 0 with the reason."""
    try:
        if isinstance(score, Score) and math.isfinite(float(score.reward)):
            return score
    except (TypeError, ValueError):
        pass
    return Score(0.0, reason=f"environment returned an invalid score: {score!r}"[:300])


class EnvironmentPool:
    """``pool.score(tasks, completion_token_ids)`` -> (scores, seconds).

    ``timeouts``: seconds per verification, per environment name
    (default ``DEFAULT_TIMEOUT_S``). ``isolate=False`` scores in this process
    (debugging; no time limit).
    """

    def __init__(self, specs: dict[str, dict], tokenizer_path: str, timeouts: dict[str, float] | None = None,
                 isolate: bool = True, memory_limit_mb: int = 4096):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.timeouts = {name: (timeouts or {}).get(name, DEFAULT_TIMEOUT_S) for name in specs}
        # Built here first so that a bad option fails now, with its name, not in a host.
        self.local: dict[str, Environment] = {name: make_environment(name, opts) for name, opts in specs.items()}
        self.hosts: dict[str, IsolatedRunner] = {}
        if isolate:
            for name, opts in specs.items():
                self.local.pop(name).close()
                self.hosts[name] = IsolatedRunner(memory_limit_mb, initializer=(_host_init, (name, opts)))

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def score_text(self, task: Task, completion: str) -> Score:
        if task.env in self.hosts:
            outcome = self.hosts[task.env].call(_host_score, task.env, task, completion,
                                                timeout=self.timeouts[task.env])
            if not outcome.ok:
                return Score(0.0, reason=f"verifier {outcome.error}"[:300])
            return checked_score(outcome.value)
        env = self.local.get(task.env)
        if env is None:
            return Score(0.0, reason=f"no environment '{task.env}' in this run")
        try:
            return checked_score(env.score(task, completion))
        except Exception as exc:  # noqa: BLE001 - recorded as the sample's reason
            return Score(0.0, reason=f"verifier error: {type(exc).__name__}: {exc}"[:300])

    def score(self, tasks: list[Task], completions: list[list[int]]) -> tuple[list[Score], float]:
        """Scores in input order, and the seconds spent."""
        start = time.perf_counter()
        scores = [self.score_text(task, self.decode(ids)) for task, ids in zip(tasks, completions)]
        return scores, time.perf_counter() - start

    def close(self) -> None:
        for env in self.local.values():
            env.close()
        for host in self.hosts.values():
            host.close()
