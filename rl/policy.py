"""The policy: a transformers causal LM, sharded with FSDP2, and one GRPO update.

``PolicyWorker`` is one rank of the policy: a plain class that
``rl.cluster`` runs as a Ray actor (N of them form one process group). A step
is one optimizer update (the Nano recipe: batch = rollouts), so ``lp_old``
is the detached log-prob of the training forward itself: no separate pass.
``train_step`` plans token-budget micro-batches (packed where the model
allows, ``rl.packing``), applies the loss of steps 6-8 with gradient
accumulation, reduces the metrics over ranks, clips the gradient and steps
AdamW over every weight except frozen MoE routers (step 9). ``weight_buckets``
gathers the sharded weights a bucket at a time for the refit (step 10) and for
checkpoints.

Set-up order (torchtitan's): load fp32 -> freeze routers -> apply_ac ->
apply_compile -> apply_fsdp (bf16 compute on GPU, fp32 reduction) -> AdamW
(fp32 states, fused on GPU).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterator

import torch

from rl import grpo
from rl.batch import TrainBatch
from rl.config import GRPOConfig, PolicyConfig
from rl.logprobs import token_logprobs
from rl.packing import MicroBatch, build, can_pack, plan
from rl.parallel import (RankGroup, all_reduce_sum, apply_ac, apply_compile, apply_fsdp, decoder_layers, full_tensor,
                         init_rank)

log = logging.getLogger(__name__)

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
    top-k indices they return, while ``active``; only the tokens that
    ``real`` marks (padding and empty micro-batches are not counted)."""

    def __init__(self, model: torch.nn.Module):
        self.routers = {n: m for n, m in model.named_modules()
                        if isinstance(getattr(m, "e_score_correction_bias", None), torch.Tensor)}
        self.loads = {n: torch.zeros(m.e_score_correction_bias.numel()) for n, m in self.routers.items()}
        self.active = False
        self.real: torch.Tensor | None = None
        for name, module in self.routers.items():
            module.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def count(module, inputs, output):
            if self.active:
                indices = output[-1].reshape(-1, output[-1].shape[-1])
                if self.real is not None:
                    indices = indices[self.real.to(indices.device)]
                self.loads[name] += torch.bincount(indices.flatten().cpu(), minlength=self.loads[name].numel())
        return count

    def apply_bias_update(self, rate: float) -> dict[str, float]:
        """Update every router's bias from this step's loads (summed over the
        ranks, so every rank makes the same update), then reset the counts."""
        imbalance = []
        for name, module in self.routers.items():
            load = all_reduce_sum(self.loads[name])
            if load.sum() > 0:
                with torch.no_grad():
                    module.e_score_correction_bias.copy_(
                        grpo.expert_bias_update(module.e_score_correction_bias, load.to(module.e_score_correction_bias.device), rate))
                imbalance.append(float(load.max() / load.mean().clamp(min=1e-9)))
            self.loads[name].zero_()
        return {"moe/max_over_mean_load": max(imbalance)} if imbalance else {}


# Attention kernels that take packed rows without a dense [T, T] mask.
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


class PolicyModel(torch.nn.Module):
    """The causal LM as the trainer uses it, and the root that FSDP shards last:
    hidden states at the scored positions, then their log-probs and entropies
    through the head in chunks (``rl.logprobs``), never [tokens x vocab] logits."""

    def __init__(self, lm: torch.nn.Module, logprob_impl: str = "chunked", chunk_size: int = 4096):
        super().__init__()
        self.lm, self.logprob_impl, self.chunk_size = lm, logprob_impl, chunk_size

    def forward(self, mb: MicroBatch, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(lp, entropy) in the micro-batch's [n, L-1] layout, 0 off the scored positions."""
        out = self.lm.get_decoder()(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False)
        hidden = out.last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mb.src)
        lp, entropy = token_logprobs(hidden, self.lm.get_output_embeddings(), mb.targets, temperature,
                                     self.logprob_impl, self.chunk_size)
        return mb.scatter(lp), mb.scatter(entropy)


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """``policy.compute_dtype``: auto is bf16 on GPUs and on CPUs with bf16 instructions
    (avx512_bf16 / AMX: 2.6x faster than fp32 for an 18.9M model on 2 cores), else fp32."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" or cpu_has_bf16() else torch.float32
    return getattr(torch, name)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def _load_lm(model_path: str, attn_implementation: str | None):
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    lm = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, **kwargs)
    lm.config.use_cache = False
    if hasattr(lm.config, "output_router_logits"):
        # The GRPO objective has no router aux loss (routers are frozen; the
        # expert-bias update balances load instead).
        lm.config.output_router_logits = False
    for name in ("final_logit_softcapping", "logit_scale"):
        if getattr(lm.config.get_text_config(), name, None):
            raise ValueError(f"{model_path}: {name} is set; the trainer's log-probs apply the head alone")
    return lm


class PolicyWorker:
    """One rank of the policy. All ranks receive the same calls with the same
    arguments; each takes its share of the work, and the collectives inside
    (FSDP's gathers and reductions, the metric sums) keep them in step."""

    def __init__(self, model_path: str, grpo_cfg: GRPOConfig, policy_cfg: PolicyConfig | None = None, *,
                 temperature: float = 1.0, seed: int = 0, rank: RankGroup = RankGroup(), device: str | None = None,
                 trainer_state: str | None = None):
        from transformers import AutoTokenizer

        self.cfg, self.pcfg = grpo_cfg, policy_cfg or PolicyConfig()
        self.rank, self.temperature = rank, temperature
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        init_rank(rank, self.device)
        torch.manual_seed(seed)
        # Kept in memory: a later save must not read the folder this run started
        # from (a rotated-away checkpoint after a resume).
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.dtype = compute_dtype(self.pcfg.compute_dtype, self.device)

        lm = _load_lm(model_path, self.pcfg.attn_implementation)
        self.lm = lm
        self.frozen = router_parameter_names(lm) if grpo_cfg.freeze_router else []
        for name, p in lm.named_parameters():
            p.requires_grad_(name not in self.frozen)
        self.expert_loads = ExpertLoads(lm)
        self.packed = self._packing(lm)
        self.model = self._shard(lm)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # fused: one kernel per step on GPUs, without foreach's parameter-sized temporaries
        self.optimizer = torch.optim.AdamW(self.params, lr=grpo_cfg.lr, betas=grpo_cfg.adam_betas,
                                           weight_decay=grpo_cfg.weight_decay, fused=self.device.type == "cuda")
        warmup = grpo_cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0)
        self.ref_model = None
        if grpo_cfg.kl.coef > 0:
            ref = _load_lm(model_path, self.pcfg.attn_implementation).requires_grad_(False)
            self.ref_model = self._shard(ref, checkpointing=False).eval()
        if trainer_state is not None:
            self.load_trainer_state(trainer_state)
        self._sender, self._buckets = None, None

    def _packing(self, lm) -> bool:
        """``policy.packing``: auto packs where it pays, with a variable-length attention
        kernel (flash / flex attention); with SDPA the dense block mask of a packed row
        is slower than padding length-sorted sequences (docs/scaling.md)."""
        setting = self.pcfg.packing
        able = can_pack(lm)
        if setting == "on" and not able:
            raise ValueError(f"policy.packing=on: {type(lm).__name__} has recurrent (Mamba) layers, whose state "
                             "would run from one packed sequence into the next; use packing=auto or off")
        if setting == "auto":
            if not able and self.rank.is_main:
                log.info("policy: %s cannot pack sequences (recurrent layers); micro-batches are padded "
                         "within the token budget instead", type(lm).__name__)
            return able and lm.config._attn_implementation in VARLEN_ATTENTION
        return able and setting == "on"

    def _shard(self, lm, checkpointing: bool | None = None) -> PolicyModel:
        gpu = self.device.type == "cuda"
        if checkpointing is None:
            checkpointing = gpu if self.pcfg.activation_checkpointing is None else self.pcfg.activation_checkpointing
        if checkpointing:
            apply_ac(lm)
        if gpu if self.pcfg.compile is None else self.pcfg.compile:
            apply_compile(lm)
        if not self.pcfg.cpu_offload:
            lm.to(self.device)
        root = PolicyModel(lm, self.pcfg.logprob_impl, self.pcfg.logprob_chunk_size)
        apply_fsdp(root, list(decoder_layers(lm)), self.device, self.dtype, self.pcfg.cpu_offload)
        return root

    def info(self) -> dict:
        return {"num_parameters": sum(p.numel() for p in self.lm.parameters()),
                "num_trainable": sum(p.numel() for p in self.params),
                "frozen_router_weights": len(self.frozen),
                "routers_with_expert_bias": len(self.expert_loads.routers),
                "packed": self.packed, "world_size": self.rank.world_size, "compute_dtype": str(self.dtype),
                "attention": self.lm.config._attn_implementation}

    # ------------------------------------------------------------ batches

    def microbatches(self, batch: TrainBatch) -> list[MicroBatch]:
        """This rank's share of the step's batch, in token-budget micro-batches."""
        pcfg = self.pcfg
        mine = plan(batch, pcfg.max_tokens_per_microbatch, self.rank.world_size, self.packed)[self.rank.rank]
        return [build(batch, seqs, self.packed, self.pad_id, pcfg.pad_to_multiple_of).to(self.device)
                for seqs in mine]

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch, reference: bool = False) -> torch.Tensor:
        """[N, L-1] log-probs of the batch's completion tokens (0 elsewhere), on every rank."""
        model = self.ref_model if reference else self.model
        out = torch.zeros_like(batch.completion_mask, dtype=torch.float64)
        for mb in self.microbatches(batch):
            lp, _ = model(mb, self.temperature)
            if len(mb.seqs):
                out[mb.seqs.cpu(), : lp.shape[1]] = (lp * mb.data.completion_mask).cpu().double()
        return all_reduce_sum(out).float()

    # ------------------------------------------------------------- update

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """Steps 6-9 on this rank's share; every rank returns the same metrics."""
        cfg, corr = self.cfg, self.cfg.is_correction
        lmask = grpo.loss_mask(batch.completion_mask, batch.truncated, cfg.overlong_filter)
        # Loss weights from the whole step's batch (every rank holds all of it), so
        # the micro-batches' and ranks' losses add up to the loss of the batch.
        weights = grpo.sequence_weights(lmask.sum(dim=1), cfg.loss_aggregation, batch.env_ids)
        num_tokens = float(lmask.sum())

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.expert_loads.active = True
        sums = torch.zeros(8, dtype=torch.float64)
        for mb in self.microbatches(batch):
            d = mb.data
            self.expert_loads.real = mb.real
            lp, entropy = self.model(mb, self.temperature)
            lp_old = lp.detach()  # one update per step: the policy that generated is the one being trained
            mw = grpo.mismatch_weights(lp_old, d.lp_gen, d.completion_mask, corr.mode, corr.tis_cap,
                                       corr.band_low, corr.band_high, corr.seq_mae_threshold)
            lp_ref = None
            if self.ref_model is not None:
                with torch.no_grad():  # a frozen copy: no autograd bookkeeping for its forward
                    lp_ref = self.ref_model(mb, self.temperature)[0]
            token_loss, clipped = grpo.grpo_token_loss(lp, lp_old, d.advantages, mw.weights, cfg.eps_low,
                                                       cfg.eps_high, cfg.kl.coef, lp_ref, cfg.kl.estimator)
            m = grpo.loss_mask(d.completion_mask, d.truncated, cfg.overlong_filter)
            # an empty micro-batch (one pad row, mask 0) still runs backward, with weight 0
            w = weights[mb.seqs.cpu()] if len(mb.seqs) else torch.zeros(1, dtype=weights.dtype)
            loss = grpo.aggregate(token_loss, m, w.to(token_loss.device))
            loss.backward()
            cm = d.completion_mask
            diff = (lp_old - d.lp_gen) * cm
            sums += torch.tensor([
                float(loss.detach()), float((entropy * cm).sum()), float((clipped.float() * m).sum()),
                float(diff.abs().sum()), float(((torch.exp(-diff) + diff - 1) * cm).sum()),
                float(mw.token_masked.sum()), float(mw.seq_masked[: len(mb.seqs)].sum()), float(mb.num_tokens),
            ], dtype=torch.float64)
        self.expert_loads.active = False
        grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        moe = self.expert_loads.apply_bias_update(cfg.expert_bias_update_rate)

        (loss_sum, ent_sum, clip_sum, abs_sum, k3_sum, masked_tokens, masked_seqs,
         model_tokens) = all_reduce_sum(sums).tolist()
        completion_tokens = max(float(batch.completion_mask.sum()), 1.0)
        return {
            "loss": loss_sum,
            "grad_norm": float(grad_norm),
            "lr": lr,
            "entropy": ent_sum / completion_tokens,
            "clip_frac": clip_sum / max(num_tokens, 1.0),
            "mismatch_abs_mean": abs_sum / completion_tokens,
            "mismatch_k3": k3_sum / completion_tokens,
            "masked_token_frac": masked_tokens / completion_tokens,
            "masked_seq_frac": masked_seqs / len(batch),
            "loss_tokens": num_tokens,
            "model_tokens": model_tokens,
            "padding_frac": 1.0 - float(batch.attention_mask.sum()) / max(model_tokens, 1.0),
            "moe/frozen_router_weights": float(len(self.frozen)),
            **moe,
        }

    # ------------------------------------------------------ weights, state

    def weight_buckets(self, bucket_bytes: int, checkpoint_format: bool = True, device: str | None = None,
                       dtype: torch.dtype | None = None) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """The weights in buckets of about ``bucket_bytes``, tied copies removed; in
        checkpoint naming (what ``from_pretrained`` and vLLM read) or in the model's
        in-memory naming; on ``device`` (None: where the policy computes). A
        collective: every rank iterates; only rank 0's buckets hold tensors (the
        others yield empty lists)."""
        from transformers.core_model_loading import revert_weight_conversion
        from transformers.modeling_utils import remove_tied_weights_from_state_dict

        from torch.distributed.tensor import DTensor

        state = self.lm.state_dict()
        local = {k: v.to_local() if isinstance(v, DTensor) else v for k, v in state.items()}
        names = list(remove_tied_weights_from_state_dict(local, self.lm))
        bucket, size = {}, 0
        for i, name in enumerate(names):
            tensor = full_tensor(state[name].detach())  # every rank takes part in the gather
            cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
            # Counted on every rank (each holds the whole tensor now), so all ranks end
            # their buckets at the same names and stay in step through the gathers.
            size += tensor.numel() * cast.itemsize
            if self.rank.is_main:
                bucket[name] = tensor.to(device or self.device, cast, copy=True).contiguous()
            if size >= bucket_bytes or i == len(names) - 1:
                if checkpoint_format and bucket:
                    bucket = revert_weight_conversion(self.lm, bucket)
                yield list(bucket.items())
                bucket, size = {}, 0

    def refit_start(self, transport: str, checkpoint_format: bool, dtype: str | None = None) -> None:
        """Begin sending the weights (step 10), cast to the engines' ``dtype``:
        ``refit_next`` then yields one bucket handle at a time (``rl.refit``)."""
        from rl.refit import Sender

        if self._sender is None or self._sender.transport != transport:
            if self._sender is not None:
                self._sender.close()
            self._sender = Sender(transport)
        self._buckets = self.weight_buckets(self.pcfg.refit_bucket_mb << 20, checkpoint_format,
                                            dtype=getattr(torch, dtype) if dtype else None)

    def refit_next(self):
        """The next bucket's handle on rank 0 (None on the others), or ``"done"`` on
        every rank after the last. A collective: every rank calls it."""
        bucket = next(self._buckets, None)
        if bucket is None:
            self._buckets = None
            return "done"
        return self._sender.send(bucket) if self.rank.is_main else None

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def state_dict(self, checkpoint_format: bool = True) -> dict[str, torch.Tensor]:
        """All the weights at once (rank 0; {} on the others)."""
        return {k: v for bucket in self.weight_buckets(1 << 62, checkpoint_format, "cpu") for k, v in bucket}

    def save(self, directory: str) -> None:
        """HF model folder + tokenizer in ``directory/model``; optimizer, scheduler, RNG
        beside it (``trainer_state.pt``, the optimizer state gathered whole, so a run
        can resume on another number of ranks)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        directory = Path(directory)
        weights = self.state_dict(checkpoint_format=False)
        optim = get_optimizer_state_dict(self.model, self.optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.rank.is_main:
            return
        self.lm.save_pretrained(directory / "model", state_dict=weights)
        self.tokenizer.save_pretrained(directory / "model")
        torch.save({"optimizer": optim, "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, directory / "trainer_state.pt")

    def load_trainer_state(self, path: str) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        state = torch.load(path, map_location="cpu", weights_only=False)
        set_optimizer_state_dict(self.model, self.optimizer, optim_state_dict=state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
