"""Scaling of the sharded trainer over the GPUs of one host (issue 16).

One process per GPU (``torch.multiprocessing``, NCCL; gloo on CPU), each
running ``rl.policy.PolicyWorker``: the class and code path ``rl train`` runs
as Ray actors. Every rank holds the whole step's batch and trains on its
token-balanced share, as in ``rl train``.

- weak scaling (default): ``--seqs`` sequences per GPU (prompt 256,
  completions uniform in 128-1792), for each world size of ``--gpus``;
  prints useful tokens/s per GPU, MFU, peak memory per GPU, and tokens/s per
  GPU as a share of the one-GPU run;
- ``--steps N`` on a fixed batch also shows that the model trains: the
  surrogate loss is the same at the start of every step (lp_old is the
  step's own forward), so the loss shown is the policy-gradient objective's,
  -sum(A x lp) / tokens of the same batch after each step, which falls as the
  model learns; and the memory per GPU against the states docs/scaling.md
  predicts (16 bytes per parameter / N);
- the refit: the bucketed gather of the sharded weights into one bf16
  buffer (an engine's), as a share of the step.

    python benchmarks/trainer_scaling.py --shape qwen3-0.6b --gpus 1,2,4,8
    python benchmarks/trainer_scaling.py --shape qwen3-8b --gpus 4,8 --steps 5 --seqs 32
    python benchmarks/trainer_scaling.py --shape qwen3-moe-1.6b --gpus 2 --seqs 64
    python benchmarks/trainer_scaling.py --shape tiny --gpus 1,2 --device cpu --seqs 8   # gloo, the code path
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from policy_bench import grpo_batch, make_model, peak_tflops, train_flops, useful_tokens  # noqa: E402


def rank_main(rank: int, world: int, port: int, args: argparse.Namespace, model: str, out: str) -> None:
    from rl.config import GRPOConfig, PolicyConfig
    from rl.parallel import RankGroup
    from rl.policy import PolicyWorker
    from trainer_throughput import time_refit

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    policy = dict(max_tokens_per_microbatch=args.max_tokens, logprob_chunk_size=1024)
    worker = PolicyWorker(model, GRPOConfig(lr=args.lr, warmup_steps=0, is_correction={"mode": "none"}),
                          PolicyConfig(**policy), rank=RankGroup(rank, world, "127.0.0.1", port), device=str(device))
    vocab = worker.lm.config.get_text_config().vocab_size
    small = args.shape == "tiny"
    batch = grpo_batch(args.seqs * world, 16 if small else 256, 16 if small else 128, 112 if small else 1792, vocab)
    losses, times = [], []
    for step in range(args.steps + 1):  # step 0: warm-up (compilation), not timed
        if cuda:
            torch.cuda.synchronize()
            if step == 1:
                torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        metrics = worker.train_step(batch)
        if cuda:
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t)
        lp = worker.logprobs(batch).to(batch.advantages.device)  # not timed
        losses.append(float(-(batch.advantages[:, None] * lp * batch.completion_mask).sum()
                            / batch.completion_mask.sum()))
    refit_s = time_refit(worker, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    params = sum(p.numel() for p in worker.lm.parameters())
    peaks = torch.tensor([peak], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        peaks = peaks.to(device)
        dist.all_reduce(peaks, op=dist.ReduceOp.MAX)
    if rank == 0:
        step_s = sum(times) / len(times)
        torch.save({"step_s": step_s, "tokens": useful_tokens(batch), "flops": train_flops(model, batch),
                    "peak_gib": float(peaks.max()), "losses": losses, "refit_s": refit_s, "params": params,
                    "moe": {k: v for k, v in metrics.items() if k.startswith("moe/")}}, out)


def run(world: int, args: argparse.Namespace, model: str, workdir: Path) -> dict:
    from rl.parallel import launch_local

    out = str(workdir / f"result-{world}.pt")
    codes = launch_local(rank_main, world, args, model, out)
    if any(codes):
        raise SystemExit(f"{world} ranks: a rank exited with {codes}")
    return torch.load(out, weights_only=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="qwen3-0.6b")
    ap.add_argument("--gpus", default="1", help="comma-separated world sizes")
    ap.add_argument("--seqs", type=int, default=128, help="sequences per GPU")
    ap.add_argument("--steps", type=int, default=2, help="timed steps on the fixed batch (after one warm-up)")
    ap.add_argument("--max-tokens", type=int, default=16384, help="policy.max_tokens_per_microbatch")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model-dir", default=None)
    args = ap.parse_args()
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    workdir = Path(args.model_dir or tempfile.mkdtemp(prefix="rl-scaling-"))
    model = str(make_model(args.shape, workdir / args.shape))
    tf = peak_tflops()
    base = None
    print(f"{args.shape}: {args.seqs} sequences per GPU, {args.max_tokens}-token micro-batches, device {args.device}")
    for world in [int(g) for g in args.gpus.split(",")]:
        r = run(world, args, model, workdir)
        per_gpu = r["tokens"] / r["step_s"] / world
        base = base or per_gpu
        mfu = f"{100 * r['flops'] / r['step_s'] / world / (tf * 1e12):.1f}%" if tf else "n/a"
        states = 16 * r["params"] / world / 2**30
        print(f"{world} x {args.device}: {r['step_s']:.2f} s/step, {per_gpu:.0f} tok/s per GPU "
              f"({100 * per_gpu / base:.0f}% of 1), MFU {mfu}, peak {r['peak_gib']:.1f} GiB per GPU "
              f"(states {states:.1f} GiB predicted), refit {r['refit_s']:.2f} s "
              f"= {100 * r['refit_s'] / (r['step_s'] + r['refit_s']):.1f}% of the step; "
              f"-sum(A lp)/tokens after each step {', '.join(f'{x:+.5f}' for x in r['losses'])} {r['moe']}", flush=True)


if __name__ == "__main__":
    main()
