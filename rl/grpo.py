"""GRPO math (docs/recipe.md section 1), as pure functions over tensors.

Shapes: ``N`` sequences (completions), ``T`` token positions. Token tensors
are aligned so that position t holds the log-probability of token t of the
completion; ``mask`` is 1 on tokens the model produced and 0 on padding
(and on prompt or tool-response tokens).

No Ray, no I/O: everything here is tested against hand-computed numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ADV_EPS = 1e-6


# ----------------------------------------------------------------- step 4


def group_advantages(rewards: torch.Tensor, baseline: str = "leave_one_out",
                     std_normalize: bool = True, eps: float = ADV_EPS) -> torch.Tensor:
    """Advantages per group: ``A_i = (r_i - b_i) / (std_group + eps)``.

    ``rewards`` is [num_groups, G]. ``b_i`` is the group mean
    (``group_mean``) or the leave-one-out mean ``sum_{j!=i} r_j / (G-1)``
    (``leave_one_out``, Nano). The std is the group's sample std (unbiased,
    as TRL and NeMo RL compute it). A group whose rewards are all equal gets
    A = 0 exactly.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [num_groups, G>=2], got {tuple(rewards.shape)}")
    g = rewards.shape[1]
    if baseline == "group_mean":
        b = rewards.mean(dim=1, keepdim=True)
    elif baseline == "leave_one_out":
        b = (rewards.sum(dim=1, keepdim=True) - rewards) / (g - 1)
    else:
        raise ValueError(f"unknown baseline {baseline!r}")
    adv = rewards - b
    if std_normalize:
        adv = adv / (rewards.std(dim=1, keepdim=True) + eps)
    return torch.where(zero_std_groups(rewards)[:, None], torch.zeros_like(adv), adv)


def zero_std_groups(rewards: torch.Tensor) -> torch.Tensor:
    """[num_groups] bool: groups whose rewards are all equal (no learning signal)."""
    return (rewards == rewards[:, :1]).all(dim=1)


# ----------------------------------------------------------------- step 7


@dataclass
class MismatchWeights:
    weights: torch.Tensor
    """[N, T] detached importance weights (0 where masked out)."""
    token_masked: torch.Tensor
    """[N, T] bool: valid tokens zeroed by the correction."""
    seq_masked: torch.Tensor
    """[N] bool: sequences dropped whole."""


def mismatch_weights(lp_old: torch.Tensor, lp_gen: torch.Tensor, mask: torch.Tensor, mode: str = "seq_mask",
                     tis_cap: float = 2.0, band_low: float = 0.5, band_high: float = 2.0,
                     seq_mae_threshold: float = 2.0) -> MismatchWeights:
    """Correction for the rollout/trainer mismatch, ``w = exp(lp_old - lp_gen)``.

    - ``none``: w = 1.
    - ``tis``: w = min(w, tis_cap).
    - ``token_mask``: w = 0 for tokens with w outside [band_low, band_high].
    - ``seq_mask``: per sequence ``g = exp(mean_t(lp_old - lp_gen))``; the
      sequence gets weight 0 when g is outside the band or when
      ``mean_t exp(|lp_gen - lp_old|) > seq_mae_threshold``; kept sequences
      use the token weights w.
    """
    mask = mask.to(lp_old.dtype)
    valid = mask > 0
    log_w = (lp_old - lp_gen).detach() * mask
    w = torch.exp(log_w)
    n = lp_old.shape[0]
    no_tokens = torch.zeros_like(valid)
    no_seqs = torch.zeros(n, dtype=torch.bool, device=lp_old.device)
    if mode == "none":
        return MismatchWeights(mask.clone(), no_tokens, no_seqs)
    if mode == "tis":
        return MismatchWeights(w.clamp(max=tis_cap) * mask, no_tokens, no_seqs)
    if mode == "token_mask":
        keep = (w >= band_low) & (w <= band_high)
        return MismatchWeights(w * keep * mask, valid & ~keep, no_seqs)
    if mode == "seq_mask":
        count = mask.sum(dim=1).clamp(min=1)
        geo = torch.exp(log_w.sum(dim=1) / count)
        mae = (torch.exp(log_w.abs()) * mask).sum(dim=1) / count
        drop = (geo < band_low) | (geo > band_high) | (mae > seq_mae_threshold)
        weights = w * mask * (~drop)[:, None]
        return MismatchWeights(weights, valid & drop[:, None], drop)
    raise ValueError(f"unknown mismatch correction mode {mode!r}")


# ------------------------------------------------------------- steps 6, 8


def clipped_surrogate(lp: torch.Tensor, lp_old: torch.Tensor, advantages: torch.Tensor,
                      eps_low: float = 0.2, eps_high: float = 0.28) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss with asymmetric clipping ("clip-higher").

    ``ratio = exp(lp - lp_old)``;
    ``pg = -min(ratio*A, clip(ratio, 1-eps_low, 1+eps_high)*A)``.
    Returns (pg [N, T], clipped [N, T] bool: the clipped branch was taken).
    """
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    ratio = torch.exp(lp - lp_old)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv
    pg = -torch.minimum(unclipped, clipped)
    return pg, clipped < unclipped


def kl_penalty(lp: torch.Tensor, lp_ref: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1/k2/k3)."""
    log_ratio = lp - lp_ref
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(-log_ratio) + log_ratio - 1
    raise ValueError(f"unknown KL estimator {estimator!r}")


def sequence_weights(tokens: torch.Tensor, mode: str, env_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[N] float64: the weight of each loss token of each sequence of the *whole*
    step's batch, from ``tokens`` [N], each sequence's count of loss tokens (its
    mask's sum), so that the step's loss is ``sum_i w_i * sum_t loss_it * mask_it``.
    Taken from the whole batch, these make the losses of its micro-batches (and of
    data-parallel ranks) add up exactly to the loss of the batch.

    - ``token``: 1 / T, T the batch's loss tokens (Nano).
    - ``sequence``: 1 / (n * T_i): each sequence's mean over its T_i tokens, then the
      mean over the n sequences with any loss token.
    - ``environment``: n_e / (n * T_e) for a sequence of environment ``env_ids[i] = e``:
      token-level inside each environment (T_e its tokens), each environment weighted
      by its share n_e / n of the sequences. Under ``token`` an environment whose
      answers are ten times longer pulls ten times harder per prompt; here each
      environment pulls with its share of the batch.
    Sequences with no loss token weigh 0.
    """
    per_seq = tokens.to(torch.float64)
    live = per_seq > 0
    n = float(live.sum())
    if mode == "token":
        w = torch.full_like(per_seq, 1.0 / max(float(per_seq.sum()), 1.0))
    elif mode == "sequence":
        w = 1.0 / (max(n, 1.0) * per_seq.clamp(min=1.0))
    elif mode == "environment":
        if env_ids is None:
            raise ValueError("loss aggregation 'environment' needs each sequence's environment (env_ids)")
        w = torch.zeros_like(per_seq)
        for e in env_ids.unique():
            mine = env_ids == e
            w[mine] = float((mine & live).sum()) / (max(n, 1.0) * max(float(per_seq[mine].sum()), 1.0))
    else:
        raise ValueError(f"unknown loss aggregation {mode!r}")
    return torch.where(live, w, torch.zeros_like(w))


def aggregate(token_loss: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The loss of these sequences: ``sum_i weights_i * sum_t token_loss_it * mask_it``,
    ``weights`` from ``sequence_weights`` over the whole step's batch (its rows for these)."""
    per_seq = (token_loss * mask.to(token_loss.dtype)).sum(dim=1)
    return (per_seq * weights.to(per_seq.dtype)).sum()


def loss_mask(completion_mask: torch.Tensor, truncated: torch.Tensor, overlong_filter: bool) -> torch.Tensor:
    """Tokens that carry loss: model tokens, minus truncated completions when
    overlong filtering is on (they still count in their group's baseline)."""
    if not overlong_filter:
        return completion_mask
    return completion_mask * (~truncated)[:, None].to(completion_mask.dtype)


def grpo_token_loss(lp: torch.Tensor, lp_old: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor,
                    eps_low: float, eps_high: float, kl_coef: float = 0.0, lp_ref: torch.Tensor | None = None,
                    kl_estimator: str = "k3") -> tuple[torch.Tensor, torch.Tensor]:
    """``w * pg (+ kl_coef * kl)`` per token; returns (token_loss, clipped)."""
    pg, clipped = clipped_surrogate(lp, lp_old, advantages, eps_low, eps_high)
    loss = weights * pg
    if kl_coef > 0:
        if lp_ref is None:
            raise ValueError("kl_coef > 0 needs reference logprobs")
        loss = loss + kl_coef * kl_penalty(lp, lp_ref, kl_estimator)
    return loss, clipped


def token_logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor,
                               temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and the entropy of the (temperature-scaled) distribution, per position."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    lp = logp.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return lp, entropy


def expert_bias_update(bias: torch.Tensor, load: torch.Tensor, rate: float = 1e-3) -> torch.Tensor:
    """Aux-loss-free MoE balancing (docs/recipe.md 1.9): ``bias_e += u * sign(mean_load - load_e)``.

    ``load`` counts the tokens routed to each expert in the step's forward
    passes; under-used experts get a higher selection bias.
    """
    load = load.to(bias.dtype)
    return bias + rate * torch.sign(load.mean() - load)
