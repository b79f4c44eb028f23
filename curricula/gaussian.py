"""Gaussian pass-rate curriculum (docs/recipe.md section 3).

Every task has a profiled pass rate p (fraction of k sampled completions
with full reward). At step s of S the target distribution of p in a batch
is N(mu_s, sigma^2) with mu_s moving linearly from mu_start to mu_end (easy
to hard). Each domain (environment) gets its fixed quota of the batch; the
quota is spread over the k+1 pass-rate bins in proportion to the Gaussian
density at each bin, capped by the unused tasks left in the bin; capacity
left over goes to the bins with the largest remaining pools. The batch is
shuffled across domains.

Beyond the report, each step's rollouts (G completions per prompt) blend a
fresh pass-rate estimate into the profile (``observe``), and a plateau of
the batch reward triggers a re-profile of a sample of every pool with the
current policy (``Plateau``; the profiling function comes from the trainer).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from curricula.mixed import quotas
from environments.base import Task


# ------------------------------------------------------------- pure math


def target_mean(step: int, total_steps: int, mu_start: float, mu_end: float) -> float:
    """mu_s = mu_start + (mu_end - mu_start) * s / S."""
    return mu_start + (mu_end - mu_start) * min(max(step / max(total_steps, 1), 0.0), 1.0)


def bin_of(pass_rate: float, k: int) -> int:
    """The pass-rate bin (0..k) of an estimate: the nearest multiple of 1/k."""
    return min(max(int(round(pass_rate * k)), 0), k)


def gaussian_weights(k: int, mu: float, sigma: float) -> list[float]:
    """Density of N(mu, sigma^2) at the bins 0/k, 1/k, ..., k/k (unnormalised)."""
    return [math.exp(-0.5 * ((j / k - mu) / sigma) ** 2) for j in range(k + 1)]


def allocate(quota: int, available: list[int], weights: list[float]) -> list[int]:
    """How many tasks to take from each bin.

    1. ideal share of bin j: quota * w_j / sum(w), rounded by largest remainder;
    2. capped by ``available[j]``;
    3. capacity left over goes, one task at a time, to the bin with the most
       tasks still left (ties: the bin of larger weight, then the lower bin).
    The result sums to min(quota, sum(available)).
    """
    total_w = sum(weights)
    if total_w <= 0:
        weights, total_w = [1.0] * len(weights), float(len(weights))
    exact = [quota * w / total_w for w in weights]
    take = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda j: (-(exact[j] - take[j]), j))
    for j in by_remainder[:quota - sum(take)]:
        take[j] += 1
    take = [min(t, a) for t, a in zip(take, available)]
    left = min(quota, sum(available)) - sum(take)
    for _ in range(left):
        j = max(range(len(take)), key=lambda b: (available[b] - take[b], weights[b], -b))
        take[j] += 1
    return take


# ------------------------------------------------------------- the sampler


@dataclass
class Plateau:
    """Re-profile when the moving average of the reward has not improved by
    ``delta`` for ``patience`` steps."""

    window: int = 10
    patience: int = 20
    delta: float = 0.01
    history: list[float] = field(default_factory=list)
    best: float = -math.inf
    since_best: int = 0

    def update(self, reward: float) -> bool:
        self.history = (self.history + [reward])[-self.window:]
        if len(self.history) < self.window:
            return False
        avg = sum(self.history) / len(self.history)
        if avg > self.best + self.delta:
            self.best, self.since_best = avg, 0
            return False
        self.since_best += 1
        if self.since_best >= self.patience:
            self.best, self.since_best, self.history = -math.inf, 0, []
            return True
        return False

    def state_dict(self) -> dict:
        return {"history": self.history, "best": self.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best, self.since_best = list(state["history"]), state["best"], state["since_best"]


class GaussianCurriculum:
    """A ``curricula.base.Sampler`` with the batch composition of docs/recipe.md section 3.

    ``profile``: task id -> pass rate in [0, 1]; ``k``: completions per task
    of the profile (the number of bins is k+1). Tasks missing from the
    profile count as ``default_pass_rate``. ``online_weight`` > 0 blends each
    step's groups into the profile. With ``plateau`` and ``profiler``
    (tasks -> pass rates with the current policy), a plateau re-profiles up
    to ``reprofile_tasks`` tasks of every pool.
    """

    def __init__(self, pools: dict[str, list[Task]], ratios: dict[str, float], profile: dict[str, float], k: int,
                 total_steps: int, mu_start: float = 0.8, mu_end: float = 0.2, sigma: float = 0.15,
                 drop_solved: bool = True, drop_unsolved: bool = False, online_weight: float = 0.5,
                 default_pass_rate: float = 0.5, seed: int = 0, plateau: Plateau | None = None,
                 profiler: Callable[[list[Task]], dict[str, float]] | None = None, reprofile_tasks: int = 256):
        empty = [d for d, pool in pools.items() if not pool]
        if empty:
            raise ValueError(f"environments {empty}: no training tasks")
        self.pools, self.ratios, self.k = pools, ratios, k
        self.total_steps, self.mu_start, self.mu_end, self.sigma = total_steps, mu_start, mu_end, sigma
        self.drop_solved, self.drop_unsolved = drop_solved, drop_unsolved
        self.online_weight, self.default_pass_rate = online_weight, default_pass_rate
        self.profile = dict(profile)
        self.step = 0
        self.used: dict[str, set[str]] = {d: set() for d in pools}
        self.epochs: dict[str, int] = {d: 0 for d in pools}
        self.seed, self.rng = seed, random.Random(seed)
        self.last_batch_stats: dict[str, float] = {}
        self.plateau, self.profiler, self.reprofile_tasks = plateau, profiler, reprofile_tasks
        self.reprofiles = 0
        self.reprofile_s: float | None = None  # seconds of this step's re-profile, if one ran

    # -- state

    def pass_rate(self, task: Task) -> float:
        return self.profile.get(task.id, self.default_pass_rate)

    def eligible(self, task: Task) -> bool:
        p = self.pass_rate(task)
        return not ((self.drop_solved and p >= 1.0) or (self.drop_unsolved and p <= 0.0))

    def _bins(self, domain: str) -> list[list[Task]]:
        bins: list[list[Task]] = [[] for _ in range(self.k + 1)]
        used = self.used[domain]
        for t in self.pools[domain]:
            if t.id not in used and self.eligible(t):
                bins[bin_of(self.pass_rate(t), self.k)].append(t)
        return bins

    def pool_left(self) -> int:
        return sum(len(b) for d in self.pools for b in self._bins(d))

    # -- sampling

    def target_mean(self) -> float:
        return target_mean(self.step, self.total_steps, self.mu_start, self.mu_end)

    def _draw(self, domain: str, n: int, weights: list[float]) -> list[Task]:
        bins = self._bins(domain)
        if sum(len(b) for b in bins) < n:  # the domain's unused pool ran out: a new epoch over it
            self.used[domain] = set()
            self.epochs[domain] += 1
            bins = self._bins(domain)
        take = allocate(n, [len(b) for b in bins], weights)
        chosen = [t for b, m in zip(bins, take) for t in self.rng.sample(b, m)]
        self.used[domain].update(t.id for t in chosen)
        return chosen

    def next_batch(self, batch_size: int, step: int) -> list[Task]:
        self.step = step
        weights = gaussian_weights(self.k, self.target_mean(), self.sigma)
        batch = []
        stats: dict[str, float] = {}
        for domain, n in quotas(batch_size, self.ratios).items():
            chosen = self._draw(domain, n, weights)
            if chosen:
                stats[domain] = sum(self.pass_rate(t) for t in chosen) / len(chosen)
            batch += chosen
        if not batch:
            raise ValueError("curriculum: no eligible tasks left in any environment (all solved or dropped)")
        self.rng.shuffle(batch)
        self.last_batch_stats = {"all": sum(self.pass_rate(t) for t in batch) / len(batch), **stats}
        return batch

    # -- updates

    def observe(self, results: list[tuple[Task, list[float]]]) -> None:
        """Blend each group's pass rate (full-reward fraction) into the profile; on a
        plateau of the batch reward, re-profile."""
        self.reprofile_s = None
        if self.online_weight > 0:
            for task, rewards in results:
                self.blend(task.id, sum(r >= 1.0 for r in rewards), len(rewards))
        rewards = [r for _, group in results for r in group]
        if self.plateau is not None and self.profiler is not None and rewards \
                and self.plateau.update(sum(rewards) / len(rewards)):
            t = time.perf_counter()
            self.reprofile()
            self.reprofile_s = time.perf_counter() - t

    def blend(self, task_id: str, passes: int, n: int) -> None:
        """Blend one estimate (passes of n rollouts) into the profile."""
        fresh = passes / n
        old = self.profile.get(task_id)
        self.profile[task_id] = fresh if old is None else (1 - self.online_weight) * old + self.online_weight * fresh

    def reprofile(self) -> None:
        """Replace the pass rates of a seeded sample of every pool by the profiler's."""
        self.reprofiles += 1
        rng = random.Random(self.seed + 7919 * self.reprofiles)
        sample = [t for pool in self.pools.values() for t in rng.sample(pool, min(self.reprofile_tasks, len(pool)))]
        self.profile.update(self.profiler(sample))

    def metrics(self) -> dict[str, float]:
        m = {"curriculum/target_mean": self.target_mean(), "curriculum/pool_left": float(self.pool_left()),
             "curriculum/reprofiles": float(self.reprofiles)}
        if self.reprofile_s is not None:
            m["timing/reprofile_s"] = self.reprofile_s
        for key, value in self.last_batch_stats.items():
            suffix = "" if key == "all" else f"/{key}"
            m[f"curriculum/batch_pass_rate_mean{suffix}"] = value
        return m

    def state_dict(self) -> dict:
        return {"profile": self.profile, "used": {d: sorted(u) for d, u in self.used.items()},
                "epochs": self.epochs, "step": self.step, "rng": self.rng.getstate(), "reprofiles": self.reprofiles,
                "plateau": None if self.plateau is None else self.plateau.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.profile = dict(state["profile"])
        self.used = {d: set(state["used"].get(d, [])) for d in self.pools}
        self.epochs = {d: state["epochs"].get(d, 0) for d in self.pools}
        self.step = state["step"]
        rng = state["rng"]
        self.rng.setstate((rng[0], tuple(rng[1]), rng[2]))
        self.reprofiles = state.get("reprofiles", 0)
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
