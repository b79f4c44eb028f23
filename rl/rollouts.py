"""Steps 2-3 of the loop, for everything that samples the policy: ``Rollouts``.

``rl train`` (its steps, dynamic sampling's refills, validation, curriculum
profiling), ``rl eval`` and ``rl curriculum profile`` all call
``Rollouts.groups(tasks, n)``: G completions of every task, single-turn or
multi-turn per task's environment (a batch may mix them), generated with the
same reasoning control and limits, scored by the environments, then rescored
by the group-reward stage (the GenRM judge) where an environment asks for it.

``open_rollouts`` builds the engines, the environment pool and the judge
from the config (as Ray actors or in-process, ``rl.cluster``); engines are
built from one ``EngineSpec`` each.

Worker death is survived: when a rollout engine, the environment pool or
the judge dies (its actor, or a vLLM engine-core process) or stops
answering within ``ray.call_timeout_s``, ``groups`` builds that worker again
(``on_restart`` then gives a new engine the latest weights) and runs the
call again, at most ``ray.max_restarts`` times per call; beyond that the
``WorkerFailed`` goes up and the run stops with the resume command.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from environments.base import Score, Task
from reward_models.group_reward import GenRMReward, JudgeStats
from rl.cluster import Actor, Cluster, Placement, WorkerTimeout, gather
from rl.config import Config
from rl.episodes import EpisodeLimits, ReasoningControl, Trajectory, TurnGenerator, run_episodes
from rl.rollout import Completion, EngineSpec, RolloutWorker, SamplingSettings, context_length, prompt_token_ids

log = logging.getLogger(__name__)
T = TypeVar("T")

WORKERS = {"rollout": "rollout engine", "environments": "environment pool", "judge": "judge"}


class WorkerFailed(RuntimeError):
    """A rollout engine (``index``), the environment pool or the judge died or stopped answering."""

    def __init__(self, worker: str, index: int, cause: BaseException):
        self.worker, self.index, self.cause = worker, index, cause
        self.restarts = 0
        """Restarts tried before giving up."""
        what = f"{WORKERS[worker]} {index}" if worker == "rollout" else WORKERS[worker]
        root = getattr(cause, "cause", None) or cause  # a Ray task error's cause
        lines = str(root).strip().splitlines()
        super().__init__(f"the {what} failed ({type(root).__name__.split('(')[-1].rstrip(')')}: "
                         f"{lines[-1][:300] if lines else ''})")


def is_worker_fault(exc: BaseException) -> bool:
    """A worker's death or silence (not an error in the work it was given): Ray's actor
    errors, vLLM's ``EngineDeadError`` (also wrapped in a Ray task error), ``WorkerTimeout``."""
    if isinstance(exc, WorkerTimeout):
        return True
    names = {c.__name__ for c in type(exc).__mro__}  # Ray's and vLLM's, without importing either
    if names & {"RayActorError", "EngineDeadError"}:
        return True
    cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
    return isinstance(cause, BaseException) and cause is not exc and is_worker_fault(cause)


@contextmanager
def _guard(worker: str, index: int = 0):
    try:
        yield
    except WorkerFailed:
        raise
    except Exception as exc:
        if is_worker_fault(exc):
            raise WorkerFailed(worker, index, exc) from exc
        raise


@dataclass
class Group:
    """One prompt's G completions and their scores."""

    task: Task
    prompt: list[int]
    completions: list[Completion]
    scores: list[Score]
    episode_metrics: list[dict[str, float]] | None = None
    """Multi-turn: each episode's counters (turns, tool calls, tool errors ...)."""

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.scores]

    @property
    def zero_std(self) -> bool:
        """All rewards equal: the group's advantages are 0 (no learning signal)."""
        return len(set(self.rewards)) == 1


@dataclass
class RolloutStats:
    """Seconds per phase and the judge's counters; they add up over a step's rounds."""

    generation_s: float = 0.0
    """Engine time (a multi-turn episode's environment steps taken out)."""
    env_s: float = 0.0
    """Scoring, and the episodes' environment steps."""
    judge: JudgeStats | None = None
    """None when no environment is judged."""

    def __add__(self, other: RolloutStats) -> RolloutStats:
        judge = other.judge if self.judge is None else self.judge if other.judge is None else self.judge + other.judge
        return RolloutStats(self.generation_s + other.generation_s, self.env_s + other.env_s, judge)

    def timing(self) -> dict[str, float]:
        out = {"generation_s": self.generation_s, "env_s": self.env_s}
        if self.judge is not None:
            out["judge_s"] = self.judge.seconds
        return out


@dataclass
class Rollouts:
    """Steps 2-3 of the loop: the engines, the environment pool, the episode loop with its
    reasoning control, and the judge's group-reward stage (``open_rollouts`` builds one)."""

    engines: list[Actor]
    """Rollout workers (``rl.rollout.RolloutWorker``); prompts are split evenly between them."""
    envs: Actor
    """The ``EnvironmentPool``."""
    tokenizer: object
    cfg: Config
    max_model_len: int
    judge: GenRMReward | None = None
    judged: frozenset[str] = frozenset()
    """Environments whose rewards the judge gives."""
    multi_turn: dict[str, bool] = field(default_factory=dict, init=False)
    """Environment -> whether its tasks are episodes (asked of the pool once)."""
    respawn: dict[str, Callable[[int], Actor]] = field(default_factory=dict)
    """worker kind -> build it again (the engine's index); a kind without one is not restarted."""
    kill: Callable[[Actor], None] = lambda actor: None
    on_restart: Callable[[str, Actor], None] = lambda worker, actor: None
    """Called with each rebuilt worker (the trainer refits a new engine)."""
    max_restarts: int = 0
    """Restarts per ``groups`` call before a ``WorkerFailed`` goes up."""
    restarts: Counter = field(default_factory=Counter, init=False)
    """Restarts per worker kind since the last ``take_restarts``."""

    def __post_init__(self):
        ro = self.cfg.rollout
        with _guard("environments"):
            self.multi_turn = self.envs.multi_turn_environments()
        self.settings = SamplingSettings(n=1, max_new_tokens=ro.max_new_tokens, temperature=ro.temperature,
                                         top_p=ro.top_p)
        self.turn = TurnGenerator.for_tokenizer(self.generate, self.settings, self.tokenizer,
                                                ReasoningControl(ro.thinking, ro.reasoning_budget))

    def generate(self, prompts: list[list[int]], settings: SamplingSettings,
                 max_tokens: list[int]) -> list[list[Completion]]:
        """One engine call, the prompts split evenly between the engines."""
        shards = [s for s in _split(list(range(len(prompts))), len(self.engines)) if s]
        futures = [w.submit("generate", [prompts[i] for i in shard], settings, [max_tokens[i] for i in shard])
                   for w, shard in zip(self.engines, shards)]
        out = []
        for i, future in enumerate(futures):
            with _guard("rollout", i):
                out += gather([future])[0]
        return out

    def groups(self, tasks: list[Task], n: int) -> tuple[list[Group], RolloutStats]:
        """``n`` completions (single-turn) or episodes (multi-turn) per task, scored; a dead
        worker is rebuilt and the call run again (``survive``)."""
        return self.survive(lambda: self._groups(tasks, n))

    def survive(self, fn: Callable[[], T]) -> T:
        """``fn()``; when a worker dies meanwhile (``WorkerFailed``), rebuild it and call ``fn``
        again, at most ``max_restarts`` times; then the failure goes up."""
        failures = 0
        while True:
            try:
                return fn()
            except WorkerFailed as failure:
                if failures >= self.max_restarts or failure.worker not in self.respawn:
                    failure.restarts = failures
                    raise
                failures += 1
                log.warning("%s: restarting it and trying again (restart %d of at most %d)",
                            failure, failures, self.max_restarts)
                self.restart(failure)

    def call_engines(self, method: str, *args) -> list:
        """``method`` on every engine at once; a dead engine raises ``WorkerFailed``."""
        futures = [w.submit(method, *args) for w in self.engines]
        out = []
        for i, future in enumerate(futures):
            with _guard("rollout", i):
                out.append(gather([future])[0])
        return out

    def restart(self, failure: WorkerFailed) -> None:
        """Stop the failed worker (if anything is left of it) and build it again."""
        if failure.worker == "rollout":
            self.kill(self.engines[failure.index])
            new = self.engines[failure.index] = self.respawn["rollout"](failure.index)
        elif failure.worker == "environments":
            self.kill(self.envs)
            new = self.envs = self.respawn["environments"](0)
        else:
            self.kill(self.judge.judge)
            new = self.judge.judge = self.respawn["judge"](0)
        self.restarts[failure.worker] += 1
        self.on_restart(failure.worker, new)

    def take_restarts(self) -> dict[str, int]:
        """Restarts per worker kind since the last call."""
        out, self.restarts = dict(self.restarts), Counter()
        return out

    def _groups(self, tasks: list[Task], n: int) -> tuple[list[Group], RolloutStats]:
        ro = self.cfg.rollout
        prompts = [prompt_token_ids(self.tokenizer, t.messages, ro.thinking) for t in tasks]
        single = [i for i, t in enumerate(tasks) if not self.multi_turn.get(t.env, False)]
        multi = [i for i, t in enumerate(tasks) if self.multi_turn.get(t.env, False)]
        trajs: dict[int, list[Trajectory]] = {}
        scored: dict[int, tuple[list[Score], list[dict] | None]] = {}
        t0 = time.perf_counter()
        if single:
            forks = self.turn([Trajectory(prompts[i]) for i in single], n, [ro.max_new_tokens] * len(single))
            trajs.update(zip(single, forks))
        env_s = 0.0
        if multi:
            client = _EpisodeClient(self.envs)
            room = self.max_model_len - max(len(prompts[i]) for i in multi)
            limits = EpisodeLimits(ro.max_turns, max(1, min(ro.max_episode_tokens, room)), ro.max_new_tokens)
            groups, keys = run_episodes([tasks[i] for i in multi], [prompts[i] for i in multi], n, self.turn,
                                        client, self.tokenizer, limits, ro.thinking)
            env_s += client.seconds
            t = time.perf_counter()
            with _guard("environments"):
                finished = self.envs.finish([k for ks in keys for k in ks])
            env_s += time.perf_counter() - t
            for j, (i, group) in enumerate(zip(multi, groups)):
                trajs[i] = group
                done = finished[j * n:(j + 1) * n]
                scored[i] = ([s for s, _ in done], [m for _, m in done])
        stats = RolloutStats(generation_s=time.perf_counter() - t0 - env_s)
        if single:
            flat_tasks = [tasks[i] for i in single for _ in range(n)]
            with _guard("environments"):
                scores, s = self.envs.score(flat_tasks, [t.tokens for i in single for t in trajs[i]])
            env_s += s
            for j, i in enumerate(single):
                scored[i] = (scores[j * n:(j + 1) * n], None)
        stats.env_s = env_s
        out = [Group(t, prompts[i], [tr.completion() for tr in trajs[i]], *scored[i]) for i, t in enumerate(tasks)]
        if self.judge is not None:
            t = time.perf_counter()
            with _guard("judge"):
                stats.judge = self.judge([gr for gr in out if gr.task.env in self.judged])
            stats.judge.seconds = time.perf_counter() - t
        return out, stats

    def rewards(self, tasks: list[Task], n: int) -> list[list[float]]:
        """The rewards of ``n`` completions of each task (profiling)."""
        groups, _ = self.groups(tasks, n)
        return [gr.rewards for gr in groups]

    def close(self) -> None:
        judge = [self.judge.judge] if self.judge is not None and self.judge.judge is not None else []
        for component in (self.envs, *self.engines, *judge):
            try:
                component.close()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass


def engine_specs(cfg: Config, weights: str, num: int, seed: int, sleep_mode: bool = False) -> list[EngineSpec]:
    """One spec per rollout engine: the ``rollout`` section whole, the run's dtype and context, and
    a seed per engine."""
    return [EngineSpec(weights, cfg.rollout, cfg.model.dtype, context_length(weights, cfg.rollout.max_model_len),
                       seed + i, sleep_mode) for i in range(num)]


def open_rollouts(cfg: Config, cluster: Cluster, placement: Placement, model_path: str, tokenizer,
                  weights: str | None = None, seed: int | None = None) -> Rollouts:
    """Engines (serving ``weights``, default ``model_path``; engine i seeded ``seed + i``), the
    environment pool and, when an environment has ``reward: genrm``, the judge, placed as
    ``placement`` says."""
    from environments.pool import EnvironmentPool
    from reward_models.judge import Judge
    from rl.models import check_model_dir

    specs = engine_specs(cfg, weights or model_path, cfg.rollout.num_workers,
                         cfg.run.seed if seed is None else seed, placement.mode == "colocated")
    env_specs = {n: e.options for n, e in cfg.environments.items()}
    timeouts = {n: e.timeout_s for n, e in cfg.environments.items()}
    respawn = {
        "rollout": lambda i: cluster.spawn(RolloutWorker, specs[i], slot=placement.engines[i]),
        "environments": lambda _: cluster.spawn(EnvironmentPool, env_specs, model_path, timeouts=timeouts),
    }
    engines = [respawn["rollout"](i) for i in range(len(specs))]
    envs = respawn["environments"](0)
    judged = frozenset(cfg.judged_environments)
    stage = None
    if judged:
        judge = None  # rlhf.oracle_judge
        if cfg.needs_judge_model:
            jc = cfg.rlhf.judge
            path = str(check_model_dir(jc.model_path, "rlhf.judge.model_path"))
            spec = EngineSpec(path, jc, cfg.model.dtype, context_length(path, cfg.rollout.max_model_len),
                              cfg.run.seed + 7)
            respawn["judge"] = lambda _: cluster.spawn(Judge, spec, slot=placement.judge)
            judge = respawn["judge"](0)
        stage = GenRMReward(judge, lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                            cfg.rlhf.length_control, cfg.rlhf.tied_groups, seed=cfg.run.seed + 7,
                            samples=cfg.rlhf.judge.samples)
    return Rollouts(engines, envs, tokenizer, cfg, specs[0].max_model_len, stage, judged,
                    respawn=respawn, kill=cluster.kill, max_restarts=cfg.ray.max_restarts)


def local_rollouts(cfg: Config, model_path: str, seed: int | None = None) -> Rollouts:
    """In-process rollouts of a model folder (``rl eval``, ``rl curriculum profile``): the same
    engines, environments, episodes and judge as training, without Ray."""
    from transformers import AutoTokenizer

    cluster = Cluster(cfg.ray.model_copy(update={"enabled": False}))
    placement = cluster.place("cpu", 1, cfg.rollout.num_workers, False)
    return open_rollouts(cfg, cluster, placement, model_path, AutoTokenizer.from_pretrained(model_path), seed=seed)


class _EpisodeClient:
    """The environment actor as the episode loop sees it, timing its steps."""

    def __init__(self, envs):
        self.envs, self.seconds = envs, 0.0

    def start(self, tasks: list[Task]) -> list[str]:
        t = time.perf_counter()
        with _guard("environments"):
            keys = self.envs.start(tasks)
        self.seconds += time.perf_counter() - t
        return keys

    def step(self, keys: list[str], texts: list[str]) -> list[list[dict] | None]:
        t = time.perf_counter()
        with _guard("environments"):
            replies = self.envs.step(keys, texts)
        self.seconds += time.perf_counter() - t
        return replies


def _split(items: list, n: int) -> list[list]:
    k, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        stop = start + k + (1 if i < r else 0)
        out.append(items[start:stop])
        start = stop
    return out
