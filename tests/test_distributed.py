"""The sharded trainer: N gloo ranks make the same update as one, packing
changes nothing, and the chunked log-probs equal the plain computation."""

from __future__ import annotations

import pytest
import torch

from rl import grpo
from rl.batch import TrainBatch, collate
from rl.config import GRPOConfig, ModelInitConfig, PolicyConfig
from rl.logprobs import chunked_logprobs
from rl.models import init_model
from rl.parallel import RankGroup, free_port, launch_local

ARCHS = ["qwen3", "qwen3_moe", "nemotron_h"]


def _batch(seed: int = 0, n: int = 10) -> TrainBatch:
    """Prompts and completions of uneven lengths, one truncated sequence, a tool-response gap."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(10, 90, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]
    comps = [torch.randint(10, 90, (int(torch.randint(2, 14, (1,), generator=g)),), generator=g).tolist()
             for _ in range(n)]
    lp_gen = [(-torch.rand(len(c), generator=g) * 3 - 2).tolist() for c in comps]
    masks = [[1] * len(c) for c in comps]
    masks[0][1:3] = [0, 0]
    adv = torch.randn(n, generator=g).tolist()
    return collate(prompts, comps, lp_gen, [i == 3 for i in range(n)], adv, pad_id=0, model_token_masks=masks,
                   env_ids=[i % 3 for i in range(n)])


def _model(arch: str, root) -> str:
    init = ModelInitConfig(arch=arch, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32,
                           intermediate_size=64)
    return str(init_model(init, root / arch, seed=0))


GRPO = dict(lr=1e-3, warmup_steps=0, is_correction={"mode": "tis"}, expert_bias_update_rate=0.01)


def _train(path: str, rank: RankGroup, steps: int = 2, grpo_overrides: dict | None = None, **policy) -> dict:
    from rl.policy import PolicyWorker

    from rl.parallel import full_tensor

    policy = {"compute_dtype": "float32", **policy}  # equality to 1e-5 is an fp32 property
    worker = PolicyWorker(path, GRPOConfig(**GRPO, **(grpo_overrides or {})), PolicyConfig(**policy), rank=rank,
                          device="cpu")
    grads: dict[str, torch.Tensor] = {}

    def first_gradient(optimizer, args, kwargs):  # every rank takes part in the gathers
        if not grads:
            grads.update({n: full_tensor(p.grad).clone() for n, p in worker.model.named_parameters()
                          if p.grad is not None})

    worker.optimizer.register_step_pre_hook(first_gradient)
    metrics = [worker.train_step(_batch(seed)) for seed in range(steps)]
    weights = worker.state_dict(checkpoint_format=False)
    # small buckets: the refit's gathers must end their buckets at the same names on every rank
    bucket_names = [[n for n, _ in b] for b in worker.weight_buckets(4096, checkpoint_format=False)]
    buffers = {n: b.clone() for n, b in worker.lm.named_buffers() if "e_score_correction_bias" in n}
    return {"metrics": metrics, "weights": weights, "buffers": buffers, "info": worker.info(), "grads": grads,
            "buckets": bucket_names}


def _rank_main(rank: int, world: int, port: int, path: str, policy: dict, grpo_overrides: dict, out: str) -> None:
    torch.save(_train(path, RankGroup(rank, world, "127.0.0.1", port), grpo_overrides=grpo_overrides, **policy),
               f"{out}.{rank}")


def _train_ranks(path: str, world: int, grpo_overrides: dict | None = None, **policy) -> list[dict]:
    """``world`` ranks, one process each (a fresh process group every time)."""
    out = f"{path}.result-{free_port()}"
    codes = launch_local(_rank_main, world, path, policy, grpo_overrides or {}, out, timeout_s=300)
    assert codes == [0] * world, f"rank processes exited with {codes}"
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    return {arch: _model(arch, root) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_two_gloo_ranks_make_the_update_of_one(models, arch):
    packing = "off" if arch == "nemotron_h" else "on"  # Mamba layers cannot pack
    one = _train_ranks(models[arch], 1, max_tokens_per_microbatch=48, packing=packing)[0]
    two = _train_ranks(models[arch], 2, max_tokens_per_microbatch=48, packing=packing)
    for a, b in zip(one["metrics"], two[0]["metrics"]):
        for key in ("loss", "grad_norm", "entropy", "mismatch_abs_mean", "loss_tokens"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), key
    assert two[0]["metrics"] == two[1]["metrics"]  # every rank reports the reduced metrics
    assert two[1]["weights"] == {}  # only rank 0 holds the gathered weights
    assert len(two[0]["buckets"]) == len(two[1]["buckets"]) == len(one["buckets"]) > 1
    assert [n for b in two[0]["buckets"] for n in b] == [n for b in one["buckets"] for n in b]
    assert all(b == [] for b in two[1]["buckets"])
    assert one["weights"].keys() == two[0]["weights"].keys()
    for name, w in one["weights"].items():
        assert torch.allclose(two[0]["weights"][name], w, atol=1e-5), name
    for name, g in one["grads"].items():
        assert torch.allclose(two[0]["grads"][name], g, rtol=1e-4, atol=1e-7), name
    for name, b in one["buffers"].items():  # the expert bias moves the same on every rank
        assert torch.allclose(two[0]["buffers"][name], b, atol=1e-6) and torch.equal(two[0]["buffers"][name],
                                                                                     two[1]["buffers"][name])
    if arch == "nemotron_h":
        assert one["buffers"] and not one["info"]["packed"]
    else:
        assert one["info"]["packed"]


def test_packed_loss_and_gradient_equal_padded(models):
    packed = _train_ranks(models["qwen3"], 1, packing="on", max_tokens_per_microbatch=40)[0]
    padded = _train_ranks(models["qwen3"], 1, packing="off", max_tokens_per_microbatch=40)[0]
    for a, b in zip(packed["metrics"], padded["metrics"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert a["padding_frac"] == 0.0 < b["padding_frac"]
    assert packed["grads"].keys() == padded["grads"].keys() and packed["grads"]
    for name, g in packed["grads"].items():  # the gradient itself (Adam's first step only keeps its sign)
        assert torch.allclose(padded["grads"][name], g, rtol=1e-4, atol=1e-7), name


def test_environment_aggregation_is_exact_over_ranks_and_micro_batches(models):
    """``loss_aggregation=environment`` takes its weights from the whole batch (three
    environments here): two ranks of small micro-batches make the update of one
    rank with one micro-batch, and the loss differs from token-level's."""
    env = {"loss_aggregation": "environment"}
    whole = _train_ranks(models["qwen3"], 1, env, max_tokens_per_microbatch=4096)[0]
    split = _train_ranks(models["qwen3"], 2, env, max_tokens_per_microbatch=40)[0]
    token = _train_ranks(models["qwen3"], 1, max_tokens_per_microbatch=4096)[0]
    for a, b, t in zip(whole["metrics"], split["metrics"], token["metrics"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
        assert abs(a["loss"] - t["loss"]) > 1e-4
    for name, g in whole["grads"].items():
        assert torch.allclose(split["grads"][name], g, rtol=1e-4, atol=1e-7), name


def test_chunked_logprobs_and_entropy_equal_the_plain_computation():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=g)
    lp, entropy = chunked_logprobs(hidden, weight, targets, temperature=0.7, chunk_size=8)
    plain_lp, plain_entropy = grpo.token_logprobs_and_entropy(hidden @ weight.t(), targets, temperature=0.7)
    assert torch.allclose(lp, plain_lp, atol=1e-5) and torch.allclose(entropy, plain_entropy, atol=1e-5)
    g1 = torch.autograd.grad((lp * torch.arange(37.0)).sum(), (hidden, weight))
    g2 = torch.autograd.grad((plain_lp * torch.arange(37.0)).sum(), (hidden, weight))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-4)
