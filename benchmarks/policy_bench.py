"""Shared parts of the trainer benchmarks: model shapes, the GRPO batch of issue
15, FLOP counts, and the plain training loop that the policy is measured against.

Models are random-initialised from a transformers config (no weights can be
downloaded); the character tokenizer of ``rl.models`` is saved beside them
(only its pad id is read by the trainer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rl import grpo
from rl.batch import TrainBatch, collate

# Published shapes (config.json of the Qwen3 releases); "tiny" is a smoke test of the code path.
SHAPES = {
    "tiny": dict(arch="qwen3", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, vocab_size=4096, tie_word_embeddings=True),
    "qwen3-0.6b": dict(arch="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                       tie_word_embeddings=True),
    "qwen3-1.7b": dict(arch="qwen3", hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                       tie_word_embeddings=True),
    "qwen3-8b": dict(arch="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                     tie_word_embeddings=False),
    "qwen3-moe-1.6b": dict(arch="qwen3_moe", hidden_size=1024, intermediate_size=3072, moe_intermediate_size=768,
                         num_experts=32, num_experts_per_tok=4, num_hidden_layers=16, num_attention_heads=16,
                         num_key_value_heads=4, head_dim=128, vocab_size=151936, tie_word_embeddings=False),
}

# Dense bf16 peak of the GPUs these benchmarks ran on (TFLOP/s), for MFU.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def make_model(shape: str, out: Path, seed: int = 0) -> Path:
    """Save a random-initialised model of ``shape`` (fp32) with a tokenizer in ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rl.models import build_tokenizer

    if (out / "config.json").is_file():
        return out
    spec = dict(SHAPES[shape])
    arch = spec.pop("arch")
    config = AutoConfig.for_model(arch, max_position_embeddings=4096, rope_theta=1e6, **spec)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    return out


def grpo_batch(num_seqs: int = 128, prompt: int = 256, lo: int = 128, hi: int = 1792, vocab: int = 151936,
               seed: int = 0) -> TrainBatch:
    """Issue 15's batch: random tokens, prompts of ``prompt`` tokens, completions
    uniform in [lo, hi], group-relative advantages of groups of 8."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (num_seqs,), generator=g).tolist()
    prompts = [torch.randint(min(100, vocab // 2), vocab, (prompt,), generator=g).tolist() for _ in range(num_seqs)]
    comps = [torch.randint(min(100, vocab // 2), vocab, (n,), generator=g).tolist() for n in lengths]
    rewards = torch.rand(num_seqs, generator=g).round().reshape(-1, min(8, num_seqs))
    adv = grpo.group_advantages(rewards).flatten().tolist()
    return collate(prompts, comps, [[-2.0] * n for n in lengths], [False] * num_seqs, adv, pad_id=0)


def useful_tokens(batch: TrainBatch) -> int:
    return int(batch.attention_mask.sum())


def train_flops(model_path: str, batch: TrainBatch) -> float:
    """FLOPs of one forward+backward over the batch's real tokens: 6 x (weights
    used per token, the head included, embeddings and unused experts not) per
    token, plus causal attention (6 x 2 x layers x seq^2 x heads x head_dim)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_path).get_text_config()
    d, layers, hd = c.hidden_size, c.num_hidden_layers, c.head_dim
    attn = d * hd * (c.num_attention_heads * 2 + c.num_key_value_heads * 2)
    if getattr(c, "num_experts", None):
        mlp = 3 * d * c.moe_intermediate_size * c.num_experts_per_tok + d * c.num_experts
    else:
        mlp = 3 * d * c.intermediate_size
    per_token = layers * (attn + mlp) + d * c.vocab_size
    lengths = batch.attention_mask.sum(dim=1).double()
    attention = 6 * 2 * layers * float((lengths ** 2).sum()) / 2 * c.num_attention_heads * hd
    return 6.0 * per_token * float(lengths.sum()) + attention


def peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


@dataclass
class Result:
    name: str
    step_s: float
    tokens_per_s: float
    peak_gib: float
    mfu: float | None
    extra: str = ""

    def row(self, baseline: "Result | None") -> str:
        ratio = f"{self.tokens_per_s / baseline.tokens_per_s:5.2f}x" if baseline else "  -  "
        mem = f"{self.peak_gib / baseline.peak_gib:5.2f}x" if baseline else "  -  "
        mfu = f"{100 * self.mfu:5.1f}%" if self.mfu is not None else "  n/a"
        return (f"{self.name:<34} {self.step_s:8.2f} s {self.tokens_per_s:10.0f} tok/s {ratio}  "
                f"{self.peak_gib:7.1f} GiB {mem}  MFU {mfu}  {self.extra}")


def measure(name: str, step, batch: TrainBatch, flops: float, steps: int, device: torch.device,
            extra: str = "") -> Result:
    """One warm-up step (compiles, allocator), then the mean of ``steps`` timed steps."""
    step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    tf = peak_tflops()
    return Result(name, dt, useful_tokens(batch) / dt, peak, flops / dt / (tf * 1e12) if tf else None, extra)


class PlainLoop:
    """The baseline: what a first GRPO trainer does. fp32 weights, bf16 autocast,
    padded micro-batches of ``micro_batch`` sequences, full-vocabulary fp32
    log-softmax, lp_old recomputed in a no-grad pass before the update."""

    def __init__(self, model_path: str, device: torch.device, micro_batch: int = 4, lr: float = 1e-6):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
        self.model.config.use_cache = False
        self.device, self.micro_batch = device, micro_batch
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def _logprobs(self, mb: TrainBatch) -> torch.Tensor:
        with self.autocast:
            logits = self.model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1]
        return torch.log_softmax(logits.float(), dim=-1).gather(-1, mb.input_ids[:, 1:, None]).squeeze(-1)

    def _micro(self, batch: TrainBatch):
        for start in range(0, len(batch), self.micro_batch):
            mb = batch.slice(start, start + self.micro_batch)
            width = int(mb.attention_mask.sum(dim=1).max())
            yield mb.slice_rows(torch.arange(len(mb)), width - 1).to(self.device)

    def step(self, batch: TrainBatch) -> None:
        with torch.no_grad():
            lp_old = [self._logprobs(mb) for mb in self._micro(batch)]
        weights = grpo.sequence_weights(batch.completion_mask.sum(dim=1), "token")
        self.optimizer.zero_grad(set_to_none=True)
        for i, (mb, old) in enumerate(zip(self._micro(batch), lp_old)):
            lp = self._logprobs(mb)
            token_loss, _ = grpo.grpo_token_loss(lp, old, mb.advantages, mb.completion_mask, 0.2, 0.28)
            w = weights[i * self.micro_batch: i * self.micro_batch + len(mb)].to(self.device)
            grpo.aggregate(token_loss, mb.completion_mask, w).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
