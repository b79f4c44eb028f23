"""Fixed-ratio sampling across environments, without replacement per epoch.

Each environment d gets ``q_d = B * ratio_d`` prompts of every batch (ratios
normalised; rounding by largest remainder so the quotas sum to B). Within an
environment, tasks are drawn from a permutation of its pool that is a pure
function of (seed, environment, epoch), so the sampler's whole state is a
position per environment: checkpoints store it and resume exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from environments.base import Task


def quotas(batch_size: int, ratios: dict[str, float]) -> dict[str, int]:
    """Split ``batch_size`` by ``ratios`` with the largest-remainder rule."""
    total = sum(ratios.values())
    exact = {k: batch_size * r / total for k, r in ratios.items()}
    q = {k: int(v) for k, v in exact.items()}
    left = batch_size - sum(q.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - q[k]), k))[:left]:
        q[k] += 1
    return q


@dataclass
class _Cursor:
    epoch: int = 0
    pos: int = 0


class MixedSampler:
    """A ``curricula.base.Sampler``: fixed ratios, each pool in a seeded order per epoch."""

    def __init__(self, pools: dict[str, list[Task]], ratios: dict[str, float], seed: int = 0):
        empty = [k for k, pool in pools.items() if not pool]
        if empty:
            raise ValueError(f"environments {empty}: no training tasks")
        self.pools, self.ratios, self.seed = pools, ratios, seed
        self.cursors = {k: _Cursor() for k in pools}
        self._orders: dict[str, tuple[int, list[int]]] = {}  # env -> (epoch, permutation)

    def _order(self, env: str, epoch: int) -> list[int]:
        cached = self._orders.get(env)
        if cached is None or cached[0] != epoch:
            order = list(range(len(self.pools[env])))
            random.Random(f"{self.seed}-{env}-{epoch}").shuffle(order)
            self._orders[env] = cached = (epoch, order)
        return cached[1]

    def _draw(self, env: str, n: int) -> list[Task]:
        out, cur = [], self.cursors[env]
        while len(out) < n:
            order = self._order(env, cur.epoch)
            take = order[cur.pos: cur.pos + n - len(out)]
            out += [self.pools[env][i] for i in take]
            cur.pos += len(take)
            if cur.pos >= len(order):
                cur.epoch, cur.pos = cur.epoch + 1, 0
        return out

    def next_batch(self, batch_size: int, step: int = 0) -> list[Task]:
        batch = []
        for env, n in quotas(batch_size, self.ratios).items():
            batch += self._draw(env, n)
        return batch

    def observe(self, results: list[tuple[Task, list[float]]]) -> None:
        """Fixed ratios learn nothing from rewards."""

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {k: {"epoch": c.epoch, "pos": c.pos} for k, c in self.cursors.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, c in state.items():
            if k in self.cursors:
                self.cursors[k] = _Cursor(**c)
