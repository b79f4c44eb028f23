"""Policy-step throughput on one GPU: the project's trainer against a plain loop, in one run.

The batch of issue 15: a Qwen3-0.6B-shaped model (random init), 128 sequences
of a 256-token prompt and a completion of 128-1792 tokens (uniform). Each
setting runs one warm-up step, then ``--steps`` timed steps, and prints useful
(non-padding) tokens/s, peak GPU memory, MFU, and both as a ratio of the plain
loop's. All settings keep fp32 master weights and fp32 Adam states.

- ``plain``: ``benchmarks/policy_bench.PlainLoop`` (bf16 autocast, padded
  micro-batches of 4 sequences, full-vocabulary log-softmax, a separate
  lp_old pass);
- ``speed``: ``rl.policy.PolicyWorker``: FSDP2 mixed precision (bf16
  compute), 32k-token micro-batches of length-sorted sequences with SDPA's
  causal flash kernel, compiled decoder layers with activation
  checkpointing, chunked head log-probs, lp_old from the training forward;
- ``memory``: 16k-token micro-batches and 1024-position head chunks;
- ``eager``: ``speed`` without compilation or checkpointing, at 16k tokens;
- ``flex``: ``eager`` with sequences packed into 16k-token rows and flex
  attention (rows padded to the budget, so it compiles once);
- ``liger``: ``eager`` with Liger-Kernel's fused linear log-probs (on
  Hopper it needs ``nvidia-cutlass-dsl`` too).

Then the refit of the speed setting: the bucketed gather of the weights, cast
to bf16 and copied into one preallocated buffer (an engine's weights), as a
share of the step.

    python benchmarks/trainer_throughput.py                       # one GPU, about 3 min
    python benchmarks/trainer_throughput.py --shape tiny --seqs 16 --device cpu   # the code path on CPU

"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from policy_bench import PlainLoop, grpo_batch, make_model, measure, train_flops  # noqa: E402
from rl.config import GRPOConfig, PolicyConfig  # noqa: E402


def policy_setting(model: str, device: torch.device, **policy):
    from rl.policy import PolicyWorker

    cfg = GRPOConfig(lr=1e-6, warmup_steps=0, is_correction={"mode": "none"})
    return PolicyWorker(model, cfg, PolicyConfig(**policy), device=str(device))


def time_refit(worker, device: torch.device) -> float:
    """Seconds to gather the weights bucket by bucket into one engine buffer (bf16)."""
    sizes = {n: p.numel() for n, p in worker.lm.state_dict().items() if p.is_floating_point()}
    buffer = torch.empty(sum(sizes.values()), dtype=torch.bfloat16, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    offset = 0
    for bucket in worker.weight_buckets(worker.pcfg.refit_bucket_mb << 20, checkpoint_format=False,
                                        dtype=torch.bfloat16):
        for _, tensor in bucket:
            buffer[offset:offset + tensor.numel()].copy_(tensor.reshape(-1), non_blocking=True)
            offset += tensor.numel()
    sync()
    return time.perf_counter() - t


def release(*objs) -> None:
    for o in objs:
        del o
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="qwen3-0.6b")
    ap.add_argument("--seqs", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per setting (after one warm-up)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--settings", default="plain,speed,memory", help="comma-separated, of plain, speed, memory, "
                    "eager, flex, liger")
    ap.add_argument("--model-dir", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    workdir = Path(args.model_dir or tempfile.mkdtemp(prefix="rl-bench-"))
    model = str(make_model(args.shape, workdir / args.shape))
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model).vocab_size
    lo, hi = (128, 1792) if args.shape != "tiny" else (16, 112)
    batch = grpo_batch(args.seqs, 256 if args.shape != "tiny" else 16, lo, hi, vocab)
    flops = train_flops(model, batch)
    print(f"{args.shape}, {args.seqs} sequences: {int(batch.attention_mask.sum())} useful tokens, "
          f"padded {batch.attention_mask.numel()}; {flops / 1e12:.1f} TFLOP per step; device "
          f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}", flush=True)
    wanted = args.settings.split(",")
    results, baseline = [], None
    if "plain" in wanted:
        loop = PlainLoop(model, device)
        baseline = measure("plain loop (padded mb 4, autocast)", lambda: loop.step(batch), batch, flops,
                           args.steps, device)
        results.append(baseline)
        print(baseline.row(None), flush=True)
        release(loop)
        del loop
    budget = 16384 if device.type == "cuda" else 1024  # small for the CPU smoke run
    settings = {
        "speed": dict(max_tokens_per_microbatch=2 * budget, activation_checkpointing=True, compile=True),
        "memory": dict(max_tokens_per_microbatch=budget, activation_checkpointing=True, compile=True,
                       logprob_chunk_size=1024),
        "eager": dict(max_tokens_per_microbatch=budget, compile=False, activation_checkpointing=False),
        "flex": dict(max_tokens_per_microbatch=budget, pad_to_multiple_of=budget, packing="on",
                     attn_implementation="flex_attention", compile=False, activation_checkpointing=False),
        "liger": dict(max_tokens_per_microbatch=budget, logprob_impl="liger", compile=False,
                      activation_checkpointing=False),
    }
    for name in [s for s in settings if s in wanted]:
        try:
            worker = policy_setting(model, device, **settings[name])
            metrics = {}

            def step():
                metrics.update(worker.train_step(batch))

            r = measure(f"{name} ({'packed' if worker.packed else 'sorted'})",
                        step, batch, flops, args.steps, device)
            refit_s = time_refit(worker, device)
            r.extra = (f"padding {100 * metrics['padding_frac']:.1f}%, refit {refit_s:.2f} s "
                       f"= {100 * refit_s / (r.step_s + refit_s):.1f}% of the step")
            results.append(r)
            print(r.row(baseline), flush=True)
            release(worker)
            del worker
        except Exception as exc:  # noqa: BLE001 - report the setting's failure, go on with the others
            print(f"{name}: failed: {type(exc).__name__}: {str(exc)[:400]}", flush=True)
            release()
    print("\nsummary (ratios against the plain loop, same run):")
    for r in results:
        print("  " + r.row(baseline))


if __name__ == "__main__":
    main()
