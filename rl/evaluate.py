"""``rl eval``: pass@1 (and unbiased pass@k) of a model on an environment split."""

from __future__ import annotations

import random

from environments.pool import EnvironmentPool
from environments.registry import load_tasks
from rl.episodes import EpisodeLimits, ReasoningControl, TurnGenerator, run_episodes
from rl.grpo import pass_at_k
from rl.models import check_model_dir
from rl.rollout import RolloutWorker, SamplingSettings, context_length, prompt_token_ids


def sample_rewards(worker: RolloutWorker, pool: EnvironmentPool, tokenizer, tasks: list, n: int,
                   max_new_tokens: int, temperature: float, context: int) -> list[list[float]]:
    """The rewards of ``n`` sampled completions of each task (``context``: the
    engine's length, which bounds a multi-turn episode with its prompt)."""
    prompts = [prompt_token_ids(tokenizer, t.messages) for t in tasks]
    settings = SamplingSettings(n=n, max_new_tokens=max_new_tokens, temperature=temperature)
    if tasks and pool.multi_turn.get(tasks[0].env, False):
        turn = TurnGenerator.for_tokenizer(worker.generate, settings, tokenizer, ReasoningControl())
        limits = EpisodeLimits(max_new_tokens=max_new_tokens, max_tokens=max(1, context - max(map(len, prompts))))
        _, keys = run_episodes(tasks, prompts, n, turn, pool, tokenizer, limits)
        scores = [s for s, _ in pool.finish([k for ks in keys for k in ks])]
    else:
        groups = worker.generate(prompts, settings)
        scores, _ = pool.score([t for t, g in zip(tasks, groups) for _ in g], [c.token_ids for g in groups for c in g])
    return [[s.reward for s in scores[i * n:(i + 1) * n]] for i in range(len(tasks))]


def evaluate(model_path: str, envs: dict[str, dict], split: str = "test", samples: int = 1,
             max_new_tokens: int = 48, temperature: float = 1.0, backend: str = "vllm",
             limit: int | None = None, seed: int = 0) -> dict:
    """Sample ``samples`` completions per task; report pass@1 (and pass@k for k = samples)."""
    from transformers import AutoTokenizer

    model_path = str(check_model_dir(model_path))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    context = context_length(model_path)
    worker = RolloutWorker(backend, model_path, seed=seed, max_model_len=context)
    pool = EnvironmentPool(envs, model_path)
    result: dict = {"model": model_path, "split": split, "samples": samples, "envs": {}}
    try:
        for name, opts in envs.items():
            tasks = load_tasks(name, opts, split)
            if limit is not None and len(tasks) > limit:
                tasks = random.Random(seed).sample(tasks, limit)
            rewards = sample_rewards(worker, pool, tokenizer, tasks, samples, max_new_tokens, temperature, context)
            correct = [sum(r >= 1.0 for r in group) for group in rewards]
            entry = {"tasks": len(tasks), "pass@1": sum(pass_at_k(samples, c, 1) for c in correct) / len(tasks)}
            if samples > 1:
                entry[f"pass@{samples}"] = sum(pass_at_k(samples, c, samples) for c in correct) / len(tasks)
            result["envs"][name] = entry
    finally:
        pool.close()
    return result
