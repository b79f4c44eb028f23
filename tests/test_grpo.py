"""GRPO math against numbers computed by hand."""

import math

import pytest
import torch

from rl import grpo


def test_leave_one_out_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    # b_0 = (0+0+1)/3 = 1/3 -> r-b = 2/3; b_1 = 2/3 -> -2/3. sample std of [1,0,0,1] = sqrt(1/3)
    std = math.sqrt(1 / 3)
    a = grpo.group_advantages(r, "leave_one_out", std_normalize=True)
    expected = torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]]) / (std + 1e-6)
    assert torch.allclose(a, expected, atol=1e-6)
    a_raw = grpo.group_advantages(r, "leave_one_out", std_normalize=False)
    assert torch.allclose(a_raw, torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]]))


def test_group_mean_advantages_and_zero_std():
    r = torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    a = grpo.group_advantages(r, "group_mean", std_normalize=False)
    assert torch.allclose(a, torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]))
    a = grpo.group_advantages(r, "group_mean", std_normalize=True)
    assert torch.allclose(a[0], torch.tensor([1.0, -1.0, 0.0]) / (1.0 + 1e-6))
    assert torch.equal(a[1], torch.zeros(3))
    assert grpo.zero_std_groups(r).tolist() == [False, True]


def test_advantages_reject_bad_shape():
    with pytest.raises(ValueError):
        grpo.group_advantages(torch.tensor([1.0, 2.0]))


def _lp_pair():
    # two sequences, three positions; the second has 2 valid tokens
    lp_gen = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -2.0, 0.0]])
    lp_old = torch.tensor([[-1.0 + math.log(1.5), -1.0 + math.log(3.0), -1.0], [-1.0 + math.log(0.25), -2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return lp_old, lp_gen, mask


def test_mismatch_none_and_tis():
    lp_old, lp_gen, mask = _lp_pair()
    w = grpo.mismatch_weights(lp_old, lp_gen, mask, "none").weights
    assert torch.equal(w, mask)
    w = grpo.mismatch_weights(lp_old, lp_gen, mask, "tis", tis_cap=2.0).weights
    assert torch.allclose(w, torch.tensor([[1.5, 2.0, 1.0], [0.25, 1.0, 0.0]]))


def test_mismatch_token_mask():
    lp_old, lp_gen, mask = _lp_pair()
    mw = grpo.mismatch_weights(lp_old, lp_gen, mask, "token_mask", band_low=0.5, band_high=2.0)
    assert torch.allclose(mw.weights, torch.tensor([[1.5, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert mw.token_masked.tolist() == [[False, True, False], [True, False, False]]
    assert mw.seq_masked.tolist() == [False, False]


def test_mismatch_seq_mask_geometric_band_and_mae():
    lp_old, lp_gen, mask = _lp_pair()
    # seq 0: g = exp((log1.5 + log3 + 0)/3) = 4.5^(1/3) = 1.651 (in band);
    #        mean exp|d| = (1.5 + 3 + 1)/3 = 1.833 <= 2 -> kept with token weights
    # seq 1: g = exp((log0.25 + 0)/2) = 0.5 (in band, edge); mean exp|d| = (4 + 1)/2 = 2.5 > 2 -> dropped
    mw = grpo.mismatch_weights(lp_old, lp_gen, mask, "seq_mask", band_low=0.5, band_high=2.0, seq_mae_threshold=2.0)
    assert mw.seq_masked.tolist() == [False, True]
    assert torch.allclose(mw.weights, torch.tensor([[1.5, 3.0, 1.0], [0.0, 0.0, 0.0]]))
    assert mw.token_masked.tolist() == [[False, False, False], [True, True, False]]
    # with a looser threshold the second survives; a tighter band drops the first
    mw = grpo.mismatch_weights(lp_old, lp_gen, mask, "seq_mask", seq_mae_threshold=3.0)
    assert mw.seq_masked.tolist() == [False, False]
    mw = grpo.mismatch_weights(lp_old, lp_gen, mask, "seq_mask", band_low=0.6, band_high=1.6, seq_mae_threshold=3.0)
    assert mw.seq_masked.tolist() == [True, True]


def test_clipped_surrogate_by_hand():
    lp_old = torch.zeros(1, 4)
    lp = torch.log(torch.tensor([[0.5, 1.1, 1.5, 1.5]]))
    pos = grpo.clipped_surrogate(lp, lp_old, torch.tensor([1.0]), 0.2, 0.28)
    # A>0: -min(r, clip(r)) = -min(.5,.8), -min(1.1,1.1), -min(1.5,1.28), -min(1.5,1.28)
    assert torch.allclose(pos[0], torch.tensor([[-0.5, -1.1, -1.28, -1.28]]))
    assert pos[1].tolist() == [[False, False, True, True]]
    neg = grpo.clipped_surrogate(lp, lp_old, torch.tensor([-2.0]), 0.2, 0.28)
    # A<0: -min(-2r, -2clip(r)) = 2*max(r, clip(r)) = [1.6, 2.2, 3.0, 3.0]
    assert torch.allclose(neg[0], torch.tensor([[1.6, 2.2, 3.0, 3.0]]))
    assert neg[1].tolist() == [[True, False, False, False]]


def test_kl_estimators():
    lp, lp_ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    d = math.log(2.0)
    assert torch.allclose(grpo.kl_penalty(lp, lp_ref, "k1"), torch.tensor([d]))
    assert torch.allclose(grpo.kl_penalty(lp, lp_ref, "k2"), torch.tensor([0.5 * d * d]))
    assert torch.allclose(grpo.kl_penalty(lp, lp_ref, "k3"), torch.tensor([0.5 + d - 1]))


def test_aggregation_token_sequence_and_environment():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [5.0, 6.0, 0.0], [7.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    env = torch.tensor([0, 1, 1, 0])

    def agg(mode):
        return grpo.aggregate(loss, mask, grpo.sequence_weights(mask.sum(dim=1), mode, env)).item()

    # token: 6 loss tokens summing to 21; the fourth row has none
    assert agg("token") == pytest.approx(21 / 6)
    # sequence: means 2, 4, 5.5 over the 3 rows with loss tokens
    assert agg("sequence") == pytest.approx((2.0 + 4.0 + 5.5) / 3)
    # environment: env 0 holds 1 of the 3 live rows (token mean 6/3 = 2), env 1 holds 2
    # (token mean (4 + 11) / 3 = 5): 1/3 * 2 + 2/3 * 5
    assert agg("environment") == pytest.approx(2 / 3 + 10 / 3)
    # one environment: the same as token-level
    one = grpo.sequence_weights(mask.sum(dim=1), "environment", torch.zeros(4, dtype=torch.long))
    assert torch.allclose(one, grpo.sequence_weights(mask.sum(dim=1), "token"))
    assert grpo.sequence_weights(mask.sum(dim=1), "environment", env)[3] == 0.0
    with pytest.raises(ValueError, match="env_ids"):
        grpo.sequence_weights(mask.sum(dim=1), "environment")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        grpo.sequence_weights(mask.sum(dim=1), "tokens")


def test_overlong_filter():
    cm = torch.ones(2, 3)
    lm = grpo.loss_mask(cm, torch.tensor([False, True]), overlong_filter=True)
    assert lm.tolist() == [[1, 1, 1], [0, 0, 0]]
    assert torch.equal(grpo.loss_mask(cm, torch.tensor([False, True]), overlong_filter=False), cm)


@pytest.mark.parametrize("mode", ["token", "sequence", "environment"])
def test_micro_batches_give_the_full_batch_gradient(mode):
    torch.manual_seed(0)
    n, t, v = 6, 5, 7
    logits = torch.randn(n, t, v, requires_grad=True)
    targets = torch.randint(0, v, (n, t))
    mask = (torch.rand(n, t) > 0.3).float()
    mask[:, 0] = 1
    lp_old = torch.log_softmax(torch.randn(n, t, v), -1).gather(-1, targets[..., None]).squeeze(-1)
    adv = torch.randn(n)
    w = torch.rand(n, t) + 0.5
    env = torch.tensor([0, 1, 0, 2, 1, 1])
    weights = grpo.sequence_weights(mask.sum(dim=1), mode, env)

    def loss_of(rows):
        lp, _ = grpo.token_logprobs_and_entropy(logits[rows], targets[rows])
        tl, _ = grpo.grpo_token_loss(lp, lp_old[rows], adv[rows], w[rows], 0.2, 0.28)
        return grpo.aggregate(tl, mask[rows], weights[rows])

    full = loss_of(slice(0, n))
    (g_full,) = torch.autograd.grad(full, logits)
    total = 0.0
    for rows in (slice(0, 2), slice(2, 5), slice(5, 6)):
        total = total + loss_of(rows)
    (g_micro,) = torch.autograd.grad(total, logits)
    assert torch.allclose(full, total, atol=1e-6)
    assert torch.allclose(g_full, g_micro, atol=1e-7)


def test_entropy_and_logprobs():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    lp, ent = grpo.token_logprobs_and_entropy(logits, torch.tensor([[1]]))
    assert lp.item() == pytest.approx(math.log(0.25))
    assert ent.item() == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


def test_pass_at_k():
    from rl.metrics import pass_at_k

    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - (3 / 4) * (2 / 3))
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0


def test_environment_metrics_weigh_tokens_sequences_or_environments_of_groups_with_signal():
    """Hand-computed: math has two groups of 2 completions (one with signal,
    lengths 3 and 5), mcq one group with signal (lengths 1 and 1), ifeval one
    multi-turn group with signal whose model tokens are 4 of 6 and 2 of 2."""
    from environments.base import Score, Task
    from rl.metrics import environment_metrics
    from rl.rollout import Completion
    from rl.rollouts import Group

    def group(env, lengths, rewards, masks=None):
        masks = masks or [None] * len(lengths)
        return Group(Task(id=f"{env}{lengths}", env=env, messages=[], answer=None), prompt=[1],
                     completions=[Completion([0] * n, [0.0] * n, False, mask=m) for n, m in zip(lengths, masks)],
                     scores=[Score(r) for r in rewards])

    groups = [group("math", [3, 5], [1.0, 0.0]), group("math", [7, 9], [0.0, 0.0]),
              group("mcq", [1, 1], [0.0, 1.0]),
              group("ifeval", [6, 2], [0.5, 0.0], masks=[[1, 1, 0, 0, 1, 1], [1, 1]])]
    by_token = environment_metrics(groups, "token")
    # tokens with signal: math 3 + 5 = 8, mcq 2, ifeval 4 + 2 = 6; total 16
    assert by_token["train/signal_share/math"] == pytest.approx(8 / 16)
    assert by_token["train/signal_share/mcq"] == pytest.approx(2 / 16)
    assert by_token["train/signal_share/ifeval"] == pytest.approx(6 / 16)
    assert by_token["train/frac_zero_std/math"] == 0.5 and by_token["train/frac_zero_std/mcq"] == 0.0
    assert by_token["train/response_len_mean/math"] == pytest.approx((3 + 5 + 7 + 9) / 4)
    assert by_token["train/reward_mean/math"] == pytest.approx(0.25)
    assert by_token["train/pass_rate/ifeval"] == 0.0 and by_token["train/pass_rate/mcq"] == 0.5
    by_seq = environment_metrics(groups, "sequence")
    # completions with signal: 2 each
    assert [by_seq[f"train/signal_share/{e}"] for e in ("math", "mcq", "ifeval")] == pytest.approx([1 / 3] * 3)
    by_env = environment_metrics(groups, "environment")
    # share of the 8 completions times the signal's share of the environment's tokens:
    # math 4/8 * 8/24, mcq 2/8 * 2/2, ifeval 2/8 * 6/6; normalised by their sum 2/3
    expected = [(1 / 6) / (2 / 3), (1 / 4) / (2 / 3), (1 / 4) / (2 / 3)]
    assert [by_env[f"train/signal_share/{e}"] for e in ("math", "mcq", "ifeval")] == pytest.approx(expected)
    none = environment_metrics([group("math", [3, 3], [1.0, 1.0])], "token")
    assert none["train/signal_share/math"] == 0.0 and none["train/frac_zero_std/math"] == 1.0
