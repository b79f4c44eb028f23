"""Curriculum vs uniform sampling on the math environment, over seeds: for each
seed, two GRPO runs with the same warmed-up model, steps and batch (equal
training compute; the curriculum also spends its profiling pass, reported
apart), one with the Gaussian pass-rate curriculum and one with fixed-ratio
uniform sampling. Prints, per arm, held-out pass@1 (mean and spread over
seeds) and what explains it: the effective batch (the fraction of groups
with a nonzero advantage, 1 - train/frac_zero_std) and the batch's mean
profiled pass rate against the curriculum's target. A figure, not an
assertion.

    .venv/bin/python benchmarks/curriculum_vs_uniform.py [--steps 60] [--seeds 0,1,2] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rl.checkpoint import latest_checkpoint
from rl.cli import configs_dir
from rl.config import load_config
from rl.evaluate import evaluate
from rl.sft import resolve_model
from rl.tracking import read_metrics
from rl.train import train


def mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seeds", default="0,1,2")
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

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"start": {"pass@1": score(start)}, "runs": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm, extra in [("uniform", ["curriculum.enabled=false"]), ("curriculum", ["curriculum.enabled=true"])]:
            cfg = load_config(configs_dir() / "grpo_math_tiny.yaml",
                              common + [f"model.path={start}", f"run.seed={seed}",
                                        f"run.dir={out}/{arm}-seed{seed}-{int(time.time())}", *extra])
            t = time.perf_counter()
            run_dir = train(cfg)
            _, ckpt = latest_checkpoint(run_dir)
            rows = read_metrics(Path(run_dir) / "metrics.jsonl")
            profile = Path(run_dir) / "profile.jsonl"
            rates = [json.loads(line)["passes"] / json.loads(line)["k"] for line in profile.read_text().splitlines()] \
                if profile.is_file() else []
            run = {"arm": arm, "seed": seed, "pass@1": score(str(ckpt / "policy" / "model")),
                   "minutes": (time.perf_counter() - t) / 60,
                   "train_s": sum(r["timing/step_s"] for r in rows) / 60,
                   "effective_batch": 1 - mean(rows, "train/frac_zero_std"),
                   "train_reward": mean(rows, "train/reward_mean"),
                   "batch_profiled_pass_rate": mean(rows, "curriculum/batch_pass_rate_mean"),
                   "target_mean": mean(rows, "curriculum/target_mean"),
                   "profile_histogram": {f"{j}/8": sum(round(r * 8) == j for r in rates) for j in range(9)}
                   if rates else None}
            results["runs"].append(run)
            print(json.dumps(run))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"held-out pass@1 (math levels 1-5, {args.eval_tasks} tasks x {args.samples}), start "
          f"{results['start']['pass@1']:.3f}")
    for arm in ("uniform", "curriculum"):
        runs = [r for r in results["runs"] if r["arm"] == arm]
        p1 = [r["pass@1"] for r in runs]
        spread = statistics.stdev(p1) if len(p1) > 1 else 0.0
        print(f"  {arm:10s} pass@1 {statistics.mean(p1):.3f} +- {spread:.3f} over {len(p1)} seeds "
              f"({', '.join(f'{v:.3f}' for v in p1)}); effective batch "
              f"{statistics.mean(r['effective_batch'] for r in runs):.2f}; training "
              f"{statistics.mean(r['train_s'] for r in runs):.1f} min/run")


if __name__ == "__main__":
    main()
