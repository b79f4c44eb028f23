"""Curriculum vs uniform sampling on the math environment: two GRPO runs with
the same model, seed, steps and batch, one with the Gaussian pass-rate
curriculum and one with uniform sampling; prints held-out pass@1 of both
final checkpoints (and of the start). A figure, not an assertion.

    .venv/bin/python benchmarks/curriculum_vs_uniform.py [--steps 60] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rl.checkpoint import latest_checkpoint
from rl.cli import configs_dir
from rl.config import load_config
from rl.evaluate import evaluate
from rl.sft import resolve_model
from rl.tracking import read_metrics
from rl.train import train


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-tasks", type=int, default=300)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--out", default="runs/bench-curriculum")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    common = [f"run.steps={args.steps}", f"run.checkpoint_every={args.steps}", "wandb.enabled=false",
              "environments.math.levels=[1,2,3,4,5]", *args.overrides]
    base = load_config(configs_dir() / "grpo_math_tiny.yaml", common + ["environments.math.levels=[1,2,3]"])
    start = str(resolve_model(base))  # the cached built-in model (warmed up on levels 1-3)
    held_out = load_config(configs_dir() / "grpo_math_tiny.yaml", common)

    def score(model: str) -> float:
        out = evaluate(held_out, model, samples=args.samples, limit=args.eval_tasks, seed=123)
        return out["envs"]["math"]["pass@1"]

    results = {"start": {"pass@1": score(start)}}
    for name, extra in [("uniform", ["curriculum.enabled=false"]), ("curriculum", ["curriculum.enabled=true"])]:
        cfg = load_config(configs_dir() / "grpo_math_tiny.yaml",
                          common + [f"model.path={start}", f"run.dir={args.out}/{name}-{int(time.time())}", *extra])
        t = time.perf_counter()
        run_dir = train(cfg)
        minutes = (time.perf_counter() - t) / 60
        step, ckpt = latest_checkpoint(run_dir)
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
        results[name] = {"pass@1": score(str(ckpt / "policy" / "model")), "minutes": round(minutes, 1),
                         "train_reward_last10": sum(r["train/reward_mean"] for r in rows[-10:]) / min(10, len(rows))}
    print(json.dumps(results, indent=2))
    print(f"held-out pass@1 (math levels 1-5, {args.eval_tasks} tasks x {args.samples}): "
          f"start {results['start']['pass@1']:.3f}, uniform {results['uniform']['pass@1']:.3f}, "
          f"curriculum {results['curriculum']['pass@1']:.3f}")


if __name__ == "__main__":
    main()
