"""Held-out pass@1 along one training run: validate the start and every N steps on
one fixed, seeded set of test tasks, and print the curve.

    .venv/bin/python benchmarks/learning_curve.py grpo_mcq_tiny --every 50 --tasks 300 --samples 8 run.steps=200
    # on a GPU machine, several variants side by side:
    python benchmarks/learning_curve.py grpo_mcq_tiny --out runs/curves/base ray.enabled=false rollout.backend=transformers &
    python benchmarks/learning_curve.py grpo_mcq_tiny --out runs/curves/g16 ray.enabled=false rollout.backend=transformers \
        grpo.prompts_per_step=32 grpo.group_size=16 &

benchmarks/learning.py measures one before/after pair per config; this shows where
between them the gain comes (or goes), which is what choosing the number of steps,
the warm-up or the learning rate needs. Every point is the run's own validation
(`run.eval_every`, `run.eval_prompts`, `run.eval_samples`), so all points share the
tasks; the start is validated before the first step (`run.eval_before_train`) and
logged as step 0. The curve is also written to <run folder>/curve.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rl.cli import configs_dir
from rl.config import load_config
from rl.tracking import read_metrics
from rl.train import train


def curve(rows: list[dict]) -> list[dict]:
    """The validation points of a metrics log: step and each ``val/pass@1*`` value."""
    return [{"step": r["step"], **{k: v for k, v in r.items() if k.startswith("val/pass@1")}}
            for r in rows if any(k.startswith("val/pass@1") for k in r)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config name in configs/, or a YAML path")
    p.add_argument("--every", type=int, default=50, help="validate every N steps (and at the last)")
    p.add_argument("--tasks", type=int, default=300, help="test tasks per environment")
    p.add_argument("--samples", type=int, default=8, help="completions per test task")
    p.add_argument("--out", default=None, help="run folder (default: a new one under run.output_dir)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_intermixed_args()  # options before, between or after the key=value overrides
    path = Path(args.config) if args.config.endswith((".yaml", ".yml")) else configs_dir() / f"{args.config}.yaml"
    overrides = [f"run.eval_every={args.every}", f"run.eval_prompts={args.tasks}",
                 f"run.eval_samples={args.samples}", "run.eval_before_train=true", *args.overrides]
    if args.out:
        overrides.append(f"run.dir={args.out}")
    run_dir = train(load_config(path, overrides))
    points = curve(read_metrics(run_dir / "metrics.jsonl"))
    (run_dir / "curve.json").write_text(json.dumps(points, indent=2))
    keys = sorted({k for pt in points for k in pt if k != "step"})
    print(f"{run_dir}  ({args.tasks} test tasks x {args.samples} samples per environment)")
    print("| step | " + " | ".join(keys) + " |")
    print("| --- |" + " --- |" * len(keys))
    for pt in points:
        print(f"| {pt['step']} | " + " | ".join(f"{pt[k]:.3f}" if k in pt else "" for k in keys) + " |")


if __name__ == "__main__":
    main()
