"""``rl eval``: pass@1 (and unbiased pass@k) of a model on environment splits.

The completions come from ``rl.rollouts`` exactly as in training (same
engine settings, reasoning control, episode limits and judge), so an
evaluation and a run's ``val/*`` metrics measure the same thing.
"""

from __future__ import annotations

import json
import random

from environments.registry import load_tasks
from rl.config import Config
from rl.metrics import pass_rate_standard_error, validation_metrics
from rl.models import check_model_dir
from rl.rollouts import Group, local_rollouts


def evaluate(cfg: Config, model_path: str, split: str = "test", samples: int = 1, limit: int | None = None,
             seed: int = 0, per_task: bool = False) -> dict:
    """``samples`` completions of every task of ``split`` in each of ``cfg``'s environments (at most
    ``limit`` tasks each, a seeded sample); pass@1, pass@k (k = samples) and the mean reward.
    ``per_task``: also ``result["tasks"]``, one record per task (``task_records``)."""
    model_path = str(check_model_dir(model_path))
    tasks = []
    for name, env in cfg.environments.items():
        pool = load_tasks(name, env.options, split)
        tasks += random.Random(seed).sample(pool, limit) if limit is not None and len(pool) > limit else pool
    rollouts = local_rollouts(cfg, model_path, seed=seed)
    try:
        groups, _ = rollouts.groups(tasks, samples)
        records = task_records(groups, rollouts.tokenizer) if per_task else None
    finally:
        rollouts.close()
    metrics = validation_metrics(groups, samples, prefix="eval")
    result: dict = {"model": model_path, "split": split, "samples": samples, "envs": {}}
    for name in cfg.environments:
        entry = {"tasks": sum(t.env == name for t in tasks)}
        for key in ("pass@1", f"pass@{samples}", "reward_mean"):
            if f"eval/{key}/{name}" in metrics:
                entry[key] = metrics[f"eval/{key}/{name}"]
        entry["pass@1_se"] = pass_rate_standard_error([gr for gr in groups if gr.task.env == name])
        result["envs"][name] = entry
    if records is not None:
        result["tasks"] = records
    return result


def task_records(groups: list[Group], tokenizer) -> list[dict]:
    """Per task: its id, environment, difficulty, prompt (the last message) and what the verifier
    checks against (as text where JSON cannot hold it), and per completion the reward, the reason
    it is not 1, and the text (tool responses included)."""
    return [{"id": g.task.id, "env": g.task.env, "difficulty": g.task.difficulty,
             "prompt": g.task.messages[-1]["content"], "answer": _jsonable(g.task.answer),
             "rewards": g.rewards, "reasons": [s.reason for s in g.scores],
             "completions": [tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in g.completions]}
            for g in groups]


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
