"""Every metric the loop logs, computed in one place from the rollout groups.

- ``step_metrics``: one training step (``train/*``, ``episode/*``, ``rlhf/*``,
  ``judge/*``, ``timing/*``);
- ``environment_metrics``: per environment, its reward and what it weighs in
  the step's loss;
- ``validation_metrics``: ``val/reward_mean``, ``val/pass@1`` and
  ``val/pass@k``, overall and per environment (``rl eval`` reports the same,
  with ``pass_rate_standard_error``);
- ``pass_at_k``: the unbiased estimator.

A completion passes when its reward is at least 1.0 (full reward).
"""

from __future__ import annotations

import torch

from rl import grpo

PASS = 1.0
"""A completion with at least this reward counts as passed (pass rates, pass@k)."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def model_tokens(c) -> int:
    """Tokens of a completion that the model generated (its mask's ones; all, without a mask)."""
    return sum(c.mask) if c.mask else len(c.token_ids)


def environment_metrics(groups: list, loss_aggregation: str) -> dict[str, float]:
    """Per environment: mean reward, pass rate, mean completion length, the fraction
    of its groups with no learning signal (all rewards equal), and
    ``train/signal_share/<env>``, its share of the step's loss weight: under
    ``token`` aggregation every model token of a group with signal weighs the same,
    so an environment with long answers pulls harder on the gradient than its
    share of prompts; under ``sequence`` every such completion weighs the same;
    under ``environment`` each environment weighs its share of the completions,
    times the fraction of its tokens that are in groups with signal. The weights
    are the loss's own (``grpo.sequence_weights``), counted before the overlong and
    mismatch masks, which the policy applies later."""
    envs = sorted({gr.task.env for gr in groups})
    completions = [(gr.task.env, not gr.zero_std, model_tokens(c)) for gr in groups for c in gr.completions]
    tokens = torch.tensor([n for _, _, n in completions], dtype=torch.float64)
    w = grpo.sequence_weights(tokens, loss_aggregation, torch.tensor([envs.index(e) for e, _, _ in completions]))
    weight = {env: float(sum(wi * n for (e, signal, n), wi in zip(completions, w.tolist()) if e == env and signal))
              for env in envs}
    m = {}
    for env in envs:
        mine = [gr for gr in groups if gr.task.env == env]
        r = torch.tensor([gr.rewards for gr in mine])
        m[f"train/reward_mean/{env}"] = float(r.mean())
        m[f"train/pass_rate/{env}"] = float((r >= PASS).float().mean())
        lengths = [len(c.token_ids) for gr in mine for c in gr.completions]
        m[f"train/response_len_mean/{env}"] = sum(lengths) / len(lengths)
        m[f"train/frac_zero_std/{env}"] = sum(gr.zero_std for gr in mine) / len(mine)
    total = sum(weight.values())
    for env, share in weight.items():
        m[f"train/signal_share/{env}"] = share / total if total else 0.0
    return m


def validation_metrics(groups: list, k: int, prefix: str = "val") -> dict[str, float]:
    """``<prefix>/reward_mean``, ``/pass@1``, ``/pass@k`` over all groups, and ``/<env>`` for each."""
    out: dict[str, float] = {}
    for env in [None, *sorted({gr.task.env for gr in groups})]:
        mine = [gr for gr in groups if env is None or gr.task.env == env]
        correct = [sum(r >= PASS for r in gr.rewards) for gr in mine]
        suffix = "" if env is None else f"/{env}"
        out[f"{prefix}/reward_mean{suffix}"] = sum(sum(gr.rewards) / len(gr.rewards) for gr in mine) / len(mine)
        out[f"{prefix}/pass@1{suffix}"] = sum(pass_at_k(k, c, 1) for c in correct) / len(mine)
        if k > 1:
            out[f"{prefix}/pass@{k}{suffix}"] = sum(pass_at_k(k, c, k) for c in correct) / len(mine)
    return out


def pass_rate_standard_error(groups: list) -> float:
    """Standard error of pass@1 over tasks (each task's pass fraction is one observation)."""
    rates = [sum(r >= PASS for r in gr.rewards) / len(gr.rewards) for gr in groups]
    if len(rates) < 2:
        return 0.0
    mean = sum(rates) / len(rates)
    return (sum((r - mean) ** 2 for r in rates) / (len(rates) - 1) / len(rates)) ** 0.5


def step_metrics(groups: list, advantages: torch.Tensor, train: dict[str, float], timing: dict[str, float],
                 ds_rounds: int, zero_std_before: float, judge, loss_aggregation: str) -> dict[str, float]:
    """A training step's metrics: ``groups`` as trained on (after dynamic sampling's refills),
    ``zero_std_before`` the zero-variance fraction of the groups as first sampled, ``train``
    the policy's own metrics, ``timing`` seconds per phase, ``judge`` the step's
    ``JudgeStats`` (None: nothing judged), ``loss_aggregation`` as in ``grpo.loss_aggregation``
    (for ``train/signal_share/<env>``)."""
    rewards = torch.tensor([gr.rewards for gr in groups], dtype=torch.float32)
    lengths = torch.tensor([len(c.token_ids) for gr in groups for c in gr.completions], dtype=torch.float32)
    truncated = torch.tensor([c.truncated for gr in groups for c in gr.completions], dtype=torch.float32)
    m = {
        "train/reward_mean": float(rewards.mean()),
        "train/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "train/pass_rate": float((rewards >= PASS).float().mean()),
        "train/frac_zero_std": zero_std_before,
        "train/frac_zero_std_after_refill": float(grpo.zero_std_groups(rewards).float().mean()),
        "train/advantage_mean": float(advantages.mean()),
        "train/advantage_abs_mean": float(advantages.abs().mean()),
        "train/response_len_mean": float(lengths.mean()),
        "train/response_len_max": float(lengths.max()),
        "train/truncated_frac": float(truncated.mean()),
        "train/dynamic_sampling_rounds": float(ds_rounds),
    }
    completions = [c for gr in groups for c in gr.completions]
    if any(c.mask is not None for c in completions):
        m["train/model_tokens_mean"] = sum(model_tokens(c) for c in completions) / len(completions)
        m["train/turns_mean"] = sum(c.turns for c in completions) / len(completions)
        m["train/think_forced_frac"] = sum(c.forced_think_end > 0 for c in completions) / len(completions)
    for env in sorted({gr.task.env for gr in groups if "verifier" in gr.scores[0].components}):
        scores = [s for gr in groups if gr.task.env == env for s in gr.scores]
        m[f"train/verifier_reward_mean/{env}"] = sum(s.components["verifier"] for s in scores) / len(scores)
        m[f"rlhf/think_chars_mean/{env}"] = sum(s.components["think_chars"] for s in scores) / len(scores)
        m[f"rlhf/answer_chars_mean/{env}"] = sum(s.components["answer_chars"] for s in scores) / len(scores)
        for key in sorted({k for s in scores for k in s.components if k.startswith("verifier/")}):
            m[f"train/{key.replace('/', f'/{env}/', 1)}"] = sum(s.components.get(key, 0.0) for s in scores) / len(scores)
    for env in sorted({gr.task.env for gr in groups if gr.episode_metrics}):
        episodes = [em for gr in groups if gr.task.env == env for em in gr.episode_metrics or []]
        for key in sorted({k for em in episodes for k in em}):
            m[f"episode/{env}/{key}"] = sum(em.get(key, 0.0) for em in episodes) / len(episodes)
    m.update(environment_metrics(groups, loss_aggregation))
    reasons: dict[str, int] = {}
    for gr in groups:
        for s in gr.scores:
            if s.reason:
                key = s.reason.split(":")[0].strip().replace(" ", "_")[:40]
                reasons[key] = reasons.get(key, 0) + 1
    total = max(rewards.numel(), 1)
    for key, n in reasons.items():
        m[f"train/zero_reason/{key}"] = n / total
    if judge is not None:
        m.update(judge.metrics())
    m.update({f"train/{k}": v for k, v in train.items()})
    m.update({f"timing/{k}": v for k, v in timing.items()})
    return m
