"""The policy: a transformers causal LM, its optimizer, and one GRPO update.

``PolicyWorker`` is a plain class; ``rl.cluster`` runs it as a Ray actor.
It recomputes ``lp_old`` (step 5), applies the loss of steps 6-8 in
micro-batches with gradient accumulation, clips the gradient, steps AdamW
over every weight except frozen MoE routers (step 9), and exports the new
weights for the rollout engines in checkpoint naming (step 10).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from rl import grpo
from rl.batch import TrainBatch
from rl.config import GRPOConfig

# Router (gate) weights of MoE layers: Qwen3-MoE / Mixtral style ``mlp.gate``,
# Nemotron-H ``mixer.gate``, and generic ``router`` modules.
ROUTER_PATTERNS = (r"\.mlp\.gate\.weight$", r"\.mixer\.gate\.weight$", r"\.block_sparse_moe\.gate\.weight$",
                   r"\.router\.(weight|bias)$", r"e_score_correction_bias$")


def router_parameter_names(model: torch.nn.Module, patterns=ROUTER_PATTERNS) -> list[str]:
    regs = [re.compile(p) for p in patterns]
    return [n for n, _ in model.named_parameters() if any(r.search(n) for r in regs)]


class ExpertLoads:
    """Counts tokens routed to each expert by routers that carry an
    ``e_score_correction_bias`` (Nemotron-H, DeepSeek-V3 style), from the
    top-k indices they return, while ``active``."""

    def __init__(self, model: torch.nn.Module):
        self.routers = {n: m for n, m in model.named_modules()
                        if isinstance(getattr(m, "e_score_correction_bias", None), torch.Tensor)}
        self.loads = {n: torch.zeros(m.e_score_correction_bias.numel()) for n, m in self.routers.items()}
        self.active = False
        for name, module in self.routers.items():
            module.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def count(module, inputs, output):
            if self.active:
                indices = output[-1]
                self.loads[name] += torch.bincount(indices.flatten().cpu(), minlength=self.loads[name].numel())
        return count

    def apply_bias_update(self, rate: float) -> dict[str, float]:
        """Update every router's bias from this step's loads, then reset the counts."""
        imbalance = []
        for name, module in self.routers.items():
            load = self.loads[name]
            if load.sum() > 0:
                with torch.no_grad():
                    module.e_score_correction_bias.copy_(
                        grpo.expert_bias_update(module.e_score_correction_bias, load.to(module.e_score_correction_bias.device), rate))
                imbalance.append(float(load.max() / load.mean().clamp(min=1e-9)))
            load.zero_()
        return {"moe/max_over_mean_load": max(imbalance)} if imbalance else {}


class PolicyWorker:
    def __init__(self, model_path: str, grpo_cfg: GRPOConfig, dtype: str = "float32", seed: int = 0,
                 device: str | None = None, trainer_state: str | None = None):
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        self.cfg = grpo_cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model_path = model_path
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device)
        self.model.config.use_cache = False
        if hasattr(self.model.config, "output_router_logits"):
            # The GRPO objective has no router aux loss (routers are frozen; the
            # expert-bias update balances load instead).
            self.model.config.output_router_logits = False
        self.frozen = router_parameter_names(self.model) if grpo_cfg.freeze_router else []
        for name, p in self.model.named_parameters():
            p.requires_grad_(name not in self.frozen)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=grpo_cfg.lr, betas=grpo_cfg.adam_betas,
                                           weight_decay=grpo_cfg.weight_decay)
        warmup = grpo_cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0)
        self.expert_loads = ExpertLoads(self.model)
        self.ref_model = None
        if grpo_cfg.kl.coef > 0:
            self.ref_model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device)
            self.ref_model.eval().requires_grad_(False)
        if trainer_state is not None:
            self.load_trainer_state(trainer_state)

    def info(self) -> dict:
        return {"num_parameters": sum(p.numel() for p in self.model.parameters()),
                "num_trainable": sum(p.numel() for p in self.params),
                "frozen_router_weights": len(self.frozen),
                "routers_with_expert_bias": len(self.expert_loads.routers)}

    # ---------------------------------------------------------- forward

    def _forward(self, model, mb: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1]
        return grpo.token_logprobs_and_entropy(logits, mb.input_ids[:, 1:])

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch, reference: bool = False) -> torch.Tensor:
        """lp_old (or reference logprobs): [N, L-1], 0 off the completion."""
        model = self.ref_model if reference else self.model
        model.eval()
        out = []
        for start in range(0, len(batch), self.cfg.micro_batch_size):
            mb = batch.slice(start, start + self.cfg.micro_batch_size).to(self.device)
            lp, _ = self._forward(model, mb)
            out.append((lp * mb.completion_mask).cpu())
        return torch.cat(out)

    # ------------------------------------------------------------- update

    def train_step(self, batch: TrainBatch, lp_old: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        lp_ref = self.logprobs(batch, reference=True) if self.ref_model is not None else None
        corr = cfg.is_correction
        mw = grpo.mismatch_weights(lp_old, batch.lp_gen, batch.completion_mask, corr.mode, corr.tis_cap,
                                   corr.band_low, corr.band_high, corr.seq_mae_threshold)
        lmask = grpo.loss_mask(batch.completion_mask, batch.truncated, cfg.overlong_filter)
        num_tokens = float(lmask.sum())
        num_seqs = float((lmask.sum(dim=1) > 0).sum())

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.expert_loads.active = True
        loss_sum = ent_sum = clip_sum = 0.0
        for start in range(0, len(batch), cfg.micro_batch_size):
            stop = start + cfg.micro_batch_size
            mb = batch.slice(start, stop).to(self.device)
            lp, entropy = self._forward(self.model, mb)
            token_loss, clipped = grpo.grpo_token_loss(
                lp, lp_old[start:stop].to(self.device), mb.advantages, mw.weights[start:stop].to(self.device),
                cfg.eps_low, cfg.eps_high, cfg.kl.coef,
                None if lp_ref is None else lp_ref[start:stop].to(self.device), cfg.kl.estimator)
            m = lmask[start:stop].to(self.device)
            loss = grpo.aggregate(token_loss, m, cfg.loss_aggregation, num_tokens, num_seqs)
            loss.backward()
            loss_sum += float(loss.detach())
            cm = mb.completion_mask
            ent_sum += float((entropy.detach() * cm).sum())
            clip_sum += float((clipped.float() * m).sum())
        self.expert_loads.active = False
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        moe = self.expert_loads.apply_bias_update(cfg.expert_bias_update_rate)

        completion_tokens = float(batch.completion_mask.sum())
        diff = (lp_old - batch.lp_gen) * batch.completion_mask
        return {
            "loss": loss_sum,
            "grad_norm": float(grad_norm),
            "lr": lr,
            "entropy": ent_sum / max(completion_tokens, 1.0),
            "clip_frac": clip_sum / max(num_tokens, 1.0),
            "mismatch_abs_mean": float(diff.abs().sum()) / max(completion_tokens, 1.0),
            "mismatch_k3": float(((torch.exp(-diff) + diff - 1) * batch.completion_mask).sum())
            / max(completion_tokens, 1.0),
            "masked_token_frac": float(mw.token_masked.sum()) / max(completion_tokens, 1.0),
            "masked_seq_frac": float(mw.seq_masked.float().mean()),
            "loss_tokens": num_tokens,
            "moe/frozen_router_weights": float(len(self.frozen)),
            **moe,
        }

    # ------------------------------------------------------ weights, state

    def checkpoint_state_dict(self, checkpoint_format: bool = True) -> dict[str, torch.Tensor]:
        """Weights on CPU, tied copies removed; in checkpoint naming (what
        ``from_pretrained`` and vLLM read) or in the model's in-memory naming."""
        from transformers.core_model_loading import revert_weight_conversion
        from transformers.modeling_utils import remove_tied_weights_from_state_dict

        state = remove_tied_weights_from_state_dict(self.model.state_dict(), self.model)
        if checkpoint_format:
            state = revert_weight_conversion(self.model, state)
        return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    def export_weights(self, path: str, checkpoint_format: bool = True) -> str:
        """Write the weights for refit (safetensors, atomically) and return the path.

        vLLM reads checkpoint naming; the transformers engine (the same model
        class as the trainer) takes the in-memory naming as it is.
        """
        from safetensors.torch import save_file

        tmp = f"{path}.tmp"
        save_file(self.checkpoint_state_dict(checkpoint_format), tmp)
        Path(tmp).replace(path)
        return path

    def save(self, directory: str) -> None:
        """HF model folder + tokenizer in ``directory/model``; optimizer, scheduler, RNG beside it."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        self.model.save_pretrained(directory / "model")
        AutoTokenizer.from_pretrained(self.model_path).save_pretrained(directory / "model")
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, directory / "trainer_state.pt")

    def load_trainer_state(self, path: str) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])

