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

import itertools
import re

from environments.base import Environment, Episode, MultiTurnEnvironment, Score, Task
from environments.registry import make_environment
from verifiers.isolation import IsolatedRunner

DEFAULT_TIMEOUT_S = 10.0

# ------------------------------------------------ inside the host process

_HOSTED: dict[str, Environment] = {}


def _host_init(name: str, options: dict) -> None:
    _HOSTED[name] = make_environment(name, options)


_EPISODES: dict[str, Episode] = {}


def _host_multi_turn(name: str) -> bool:
    return isinstance(_HOSTED[name], MultiTurnEnvironment)


def _host_score(name: str, task: Task, completion: str) -> Score:
    return _HOSTED[name].score(task, completion)


def _host_start(name: str, key: str, task: Task) -> None:
    _EPISODES[key] = _HOSTED[name].start(task)


def _host_step(key: str, completion: str) -> list[dict] | None:
    return _EPISODES[key].step(completion)


def _host_finish(key: str) -> tuple[Score, dict[str, float]]:
    episode = _EPISODES.pop(key)
    try:
        return episode.score(), episode.metrics()
    finally:
        episode.close()


# ------------------------------------------------------- in the caller


def checked_score(score: object) -> Score:
    """The score if it is a valid ``Score`` with a finite reward, else reward 0 with the reason."""
    try:
        if isinstance(score, Score) and math.isfinite(float(score.reward)):
            return score
    except (TypeError, ValueError):
        pass
    return Score(0.0, reason=f"environment returned an invalid score: {score!r}"[:300])


def _checked_reply(reply: object) -> list[dict] | None:
    """A list of {role, content} messages, None, or else an error reply."""
    if reply is None:
        return None
    if isinstance(reply, list) and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                       and isinstance(m.get("content"), str) for m in reply):
        return reply
    return [{"role": "tool", "content": f"environment error: invalid reply {reply!r}"[:300]}]


def _checked_metrics(metrics: object) -> dict[str, float]:
    if not isinstance(metrics, dict):
        return {}
    out = {}
    for k, v in metrics.items():
        try:
            if isinstance(k, str) and math.isfinite(float(v)):
                out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


class EnvironmentPool:
    """``pool.score(tasks, completion_token_ids)`` -> (scores, seconds).

    ``timeouts``: seconds per verification, per environment name
    (default ``DEFAULT_TIMEOUT_S``). ``isolate=False`` scores in this process
    (debugging; no time limit).
    """

    def __init__(self, specs: dict[str, dict], tokenizer_path: str | None, timeouts: dict[str, float] | None = None,
                 isolate: bool = True, memory_limit_mb: int = 4096, tokenizer=None,
                 environments: dict[str, Environment] | None = None, construct_timeout_s: float = 120.0):
        """``environments``: already built environments, used in this process
        as they are (tests, debugging). Each isolated environment must construct
        within ``construct_timeout_s`` (a plugin whose constructor hangs fails
        with its name, instead of stalling the run)."""
        from transformers import AutoTokenizer

        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(tokenizer_path)
        self.timeouts = {name: (timeouts or {}).get(name, DEFAULT_TIMEOUT_S) for name in specs}
        self.local: dict[str, Environment] = {}
        self.multi_turn: dict[str, bool] = {}
        self.hosts: dict[str, IsolatedRunner] = {}
        for name, opts in specs.items():
            if not isolate:
                self.local[name] = make_environment(name, opts)
                self.multi_turn[name] = isinstance(self.local[name], MultiTurnEnvironment)
                continue
            # Built in its host now, so that a bad option or a hanging constructor fails at once, with its name.
            runner = IsolatedRunner(memory_limit_mb, initializer=(_host_init, (name, opts)),
                                    start_timeout=construct_timeout_s)
            probe = runner.call(_host_multi_turn, name, timeout=construct_timeout_s)
            if not probe.ok:
                runner.close()
                self.close()
                why = (f"its constructor did not return within {construct_timeout_s:g} s"
                       if probe.error.startswith(("timeout", "start timeout")) else probe.error.removeprefix("error: "))
                why = re.sub(r"^\w+(Error|Exception): (?=environments\.)", "", why)
                raise ValueError(why if why.startswith(f"environments.{name}") else f"environments.{name}: {why}")
            self.multi_turn[name] = probe.value
            self.hosts[name] = runner
        for name, env in (environments or {}).items():
            self.local[name] = env
            self.multi_turn[name] = isinstance(env, MultiTurnEnvironment)
        self._keys = itertools.count()
        self._episodes: dict[str, tuple[str, Episode | None]] = {}  # key -> (environment, local episode)
        self._lost: dict[str, str] = {}  # key -> why the episode is gone (its host crashed or timed out)

    def multi_turn_environments(self) -> dict[str, bool]:
        return dict(self.multi_turn)

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

    # ------------------------------------------------------ multi-turn episodes

    def _episode_call(self, key: str, fn, *args):
        """Run ``fn`` for the episode ``key`` where its environment lives; (ok, value)."""
        env, local = self._episodes[key]
        if env in self.hosts:
            runner = self.hosts[env]
            before = runner.restarts
            outcome = runner.call(fn, *args, timeout=self.timeouts[env])
            if not outcome.ok:
                self._lost[key] = f"environment {outcome.error}"[:300]
                if runner.restarts != before:  # the host was replaced: its open episodes are gone
                    for other, (e, _) in self._episodes.items():
                        if e == env and other not in self._lost:
                            self._lost[other] = f"environment {outcome.error} (in another episode)"[:300]
                return False, None
            return True, outcome.value
        try:
            return True, fn(*args)
        except Exception as exc:  # noqa: BLE001 - recorded as the episode's reason
            self._lost[key] = f"environment error: {type(exc).__name__}: {exc}"[:300]
            return False, None

    def start(self, tasks: list[Task]) -> list[str]:
        """Open an episode per task; their keys."""
        keys = []
        for task in tasks:
            key = f"ep{next(self._keys)}"
            keys.append(key)
            self._episodes[key] = (task.env, None)
            if task.env not in self.hosts and task.env not in self.local:
                self._lost[key] = f"no environment '{task.env}' in this run"
            elif not self.multi_turn[task.env]:
                self._lost[key] = f"environment '{task.env}' is single-turn"
            elif task.env in self.hosts:
                self._episode_call(key, _host_start, task.env, key, task)
            else:
                ok, episode = self._episode_call(key, self.local[task.env].start, task)
                self._episodes[key] = (task.env, episode if ok else None)
        return keys

    def step(self, keys: list[str], completions: list[str]) -> list[list[dict] | None]:
        """Each episode's reply to the model's turn; None when it is over."""
        replies = []
        for key, text in zip(keys, completions):
            if key in self._lost:
                replies.append(None)
                continue
            local = self._episodes[key][1]
            if local is None:
                ok, reply = self._episode_call(key, _host_step, key, text)
            else:
                ok, reply = self._episode_call(key, local.step, text)
            replies.append(_checked_reply(reply) if ok else None)
        return replies

    def finish(self, keys: list[str]) -> list[tuple[Score, dict[str, float]]]:
        """Score and close the episodes."""
        out = []
        for key in keys:
            env, local = self._episodes[key]
            if key not in self._lost:
                if local is None:
                    ok, value = self._episode_call(key, _host_finish, key)
                else:
                    ok, value = self._episode_call(key, lambda e: (e.score(), e.metrics()), local)
                    local.close()
                if ok:
                    score, metrics = value
                    out.append((checked_score(score), _checked_metrics(metrics)))
                    del self._episodes[key]
                    continue
            out.append((Score(0.0, reason=self._lost.pop(key)), {}))
            del self._episodes[key]
        return out

    def close(self) -> None:
        for env in self.local.values():
            env.close()
        for host in self.hosts.values():
            host.close()
