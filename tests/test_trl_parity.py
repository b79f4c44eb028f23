"""Our GRPO loss and gradient equal TRL's (installed ``trl``) on identical inputs.

TRL's ``GRPOTrainer._compute_loss`` is called unbound on a stand-in trainer
that supplies the per-token logprobs, so both sides differentiate the same
leaf tensor.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.grpo_trainer import GRPOTrainer

from rl import grpo

N, T = 4, 6


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = (-torch.rand(N, T, generator=g) * 2).requires_grad_(True)
    lp_old = (lp.detach() + 0.3 * torch.randn(N, T, generator=g)).clamp(max=0)
    lp_gen = (lp_old + 0.2 * torch.randn(N, T, generator=g)).clamp(max=0)
    lp_ref = (lp.detach() + 0.1 * torch.randn(N, T, generator=g)).clamp(max=0)
    mask = torch.ones(N, T)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    adv = torch.tensor([1.0, -0.5, 0.25, -2.0])
    return lp, lp_old, lp_gen, lp_ref, mask, adv


def _trl_loss(lp, lp_old, lp_ref, mask, adv, loss_type, beta=0.0, is_ratio=None):
    accel = SimpleNamespace(num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
                            reduce=lambda x, reduction="sum": x)
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (lp, torch.zeros_like(lp), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=beta, loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.28,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        use_vllm=is_ratio is not None, vllm_importance_sampling_correction=is_ratio is not None,
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1, accelerator=accel,
        _entropy_bonus_enabled=False, aux_loss_enabled=False, max_completion_length=T,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros(N, 2, dtype=torch.long), "prompt_mask": torch.ones(N, 2, dtype=torch.long),
        "completion_ids": torch.zeros(N, T, dtype=torch.long), "completion_mask": mask,
        "advantages": adv, "old_per_token_logps": lp_old, "ref_per_token_logps": lp_ref,
        "num_items_in_batch": mask.sum(),
    }
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    return GRPOTrainer._compute_loss(fake, None, inputs)


def _ours(lp, lp_old, lp_gen, lp_ref, mask, adv, aggregation, kl_coef=0.0, mode="none", tis_cap=2.0):
    w = grpo.mismatch_weights(lp_old, lp_gen, mask, mode, tis_cap=tis_cap).weights
    token_loss, _ = grpo.grpo_token_loss(lp, lp_old, adv, w, 0.2, 0.28, kl_coef, lp_ref, "k3")
    return grpo.aggregate(token_loss, mask, grpo.sequence_weights(mask.sum(dim=1), aggregation))


@pytest.mark.parametrize("trl_type,ours", [("dapo", "token"), ("bnpo", "token"), ("grpo", "sequence")])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_match_trl(trl_type, ours, beta):
    lp, lp_old, lp_gen, lp_ref, mask, adv = _inputs()
    theirs = _trl_loss(lp, lp_old, lp_ref, mask, adv, trl_type, beta)
    (g_theirs,) = torch.autograd.grad(theirs, lp)
    mine = _ours(lp, lp_old, lp_gen, lp_ref, mask, adv, ours, kl_coef=beta)
    (g_mine,) = torch.autograd.grad(mine, lp)
    assert mine.item() == pytest.approx(theirs.item(), abs=1e-6)
    assert torch.allclose(g_mine * mask, g_theirs * mask, atol=1e-6)


def test_truncated_importance_sampling_matches_trl_token_truncate():
    lp, lp_old, lp_gen, lp_ref, mask, adv = _inputs(seed=1)
    cap = 2.0
    # TRL's token_truncate ratio: exp(lp_old - lp_sampling) clamped to [0, cap]
    ratio = torch.exp(lp_old - lp_gen).clamp(min=0.0, max=cap)
    theirs = _trl_loss(lp, lp_old, lp_ref, mask, adv, "dapo", is_ratio=ratio)
    (g_theirs,) = torch.autograd.grad(theirs, lp)
    mine = _ours(lp, lp_old, lp_gen, lp_ref, mask, adv, "token", mode="tis", tis_cap=cap)
    (g_mine,) = torch.autograd.grad(mine, lp)
    assert mine.item() == pytest.approx(theirs.item(), abs=1e-6)
    assert torch.allclose(g_mine * mask, g_theirs * mask, atol=1e-6)
