"""Does every shipped config learn? Train each at its own defaults on this
machine and print one table: train reward (mean of the first 10 steps
against the last 10) and held-out pass@1 before and after, per environment,
with its standard error over tasks, and the wall time.

    .venv/bin/python benchmarks/learning.py                      # every config
    .venv/bin/python benchmarks/learning.py --config grpo_code_tiny [key=value ...]
    .venv/bin/python benchmarks/learning.py --config NAME --resume RUN_DIR [key=value ...] run.steps=N

Warm-ups are the cached built-in models (built on first use, as `rl train`
does). Each config's result is written to OUT/<config>.json as soon as it is
done; the table is printed from all results in OUT, so configs can be run
one at a time. pass@1 is measured with `--samples` completions of up to
`--tasks` test tasks per environment (the same seeded sample before and
after), through the same rollout path as training.
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

CONFIGS = ["grpo_math_tiny", "grpo_ifeval_tiny", "grpo_code_tiny", "grpo_mcq_tiny", "grpo_workplace_tiny", "grpo_mixed_tiny", "grpo_moe_tiny"]

HELD_OUT = {"grpo_code_tiny": ["environments.code.humaneval=false"]}
"""Overrides of the held-out evaluation: the code config's test split also holds HumanEval's
164 problems, which a 1.2M-parameter model does not solve before or after (measured apart,
docs/experiments.md section 2.1); the row is the procedural test split."""


def first_last(rows: list[dict], key: str, n: int = 10) -> tuple[float | None, float | None]:
    values = [r[key] for r in rows if key in r]
    if not values:
        return None, None
    n = min(n, max(1, len(values) // 2))
    return sum(values[:n]) / n, sum(values[-n:]) / n


def run_config(name: str, overrides: list[str], out: Path, tasks: int, samples: int, resume: str | None = None) -> dict:
    cfg = load_config(configs_dir() / f"{name}.yaml", ["wandb.enabled=false", *overrides])
    if resume is not None:
        earlier = load_config(Path(resume) / "config.yaml", [f"run.steps={cfg.run.steps}", "run.dir=null"])
        if earlier.model_dump() != cfg.model_dump():
            raise SystemExit(f"--resume {resume}: that run's config.yaml is not {name} with these overrides "
                             "(only run.steps may differ)")
    t0 = time.perf_counter()
    start = str(resolve_model(cfg))
    warm_s = time.perf_counter() - t0
    held_out = load_config(configs_dir() / f"{name}.yaml", [*overrides, *HELD_OUT.get(name, [])])
    before = evaluate(held_out, start, samples=samples, limit=tasks, seed=123)
    t1 = time.perf_counter()
    if resume is not None:  # extend that run to run.steps (train_s counts the added steps only)
        run_dir = Path(resume)
        train(resume_dir=run_dir, overrides=[f"run.steps={cfg.run.steps}"])
    else:
        run_dir = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        train(cfg.model_copy(update={"run": cfg.run.model_copy(update={"dir": str(run_dir)})}))
    train_s = time.perf_counter() - t1
    _, ckpt = latest_checkpoint(run_dir)
    after = evaluate(held_out, str(ckpt / "policy" / "model"), samples=samples, limit=tasks, seed=123)
    rows = read_metrics(run_dir / "metrics.jsonl")
    result = {"config": name, "overrides": overrides, "run_dir": str(run_dir), "steps": len(rows), "resumed": resume is not None,
              "warmup_s": warm_s, "train_s": train_s, "wall_s": time.perf_counter() - t0, "envs": {}}
    for env in cfg.environments:
        first, last = first_last(rows, f"train/reward_mean/{env}")
        b, a = before["envs"][env], after["envs"][env]
        result["envs"][env] = {"train_first10": first, "train_last10": last, "tasks": b["tasks"],
                               "pass@1_before": b["pass@1"], "se_before": b["pass@1_se"],
                               "pass@1_after": a["pass@1"], "se_after": a["pass@1_se"]}
    return result


def table(results: list[dict]) -> str:
    lines = ["| config | environment | train reward first 10 -> last 10 | test pass@1 before -> after (tasks x samples) "
             "| gain (SE) | steps | wall |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for env, e in r["envs"].items():
            gain = e["pass@1_after"] - e["pass@1_before"]
            se = (e["se_before"] ** 2 + e["se_after"] ** 2) ** 0.5
            train = "n/a" if e["train_first10"] is None else f"{e['train_first10']:.3f} -> {e['train_last10']:.3f}"
            lines.append(f"| {r['config']}{' ' + ' '.join(r['overrides']) if r['overrides'] else ''} | {env} | {train} "
                         f"| {e['pass@1_before']:.3f} -> {e['pass@1_after']:.3f} ({e['tasks']} x {r.get('samples', '?')}) "
                         f"| {gain:+.3f} ({se:.3f}) | {r['steps']} | {r['wall_s'] / 60:.1f} min{' (the extension)' if r.get('resumed') else ''} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", help="config name in configs/ (repeatable; default: all)")
    p.add_argument("--out", default="runs/learning")
    p.add_argument("--tasks", type=int, default=300, help="test tasks per environment")
    p.add_argument("--samples", type=int, default=8, help="completions per test task")
    p.add_argument("--tag", default=None, help="name of this result (default: the config name)")
    p.add_argument("--resume", metavar="RUN_DIR", help="extend this earlier run of --config (same overrides) to run.steps; "
                   "before is measured again from the warm-up")
    p.add_argument("--table-only", action="store_true", help="print the table of the results in OUT")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.resume and len(args.config or []) != 1:
        p.error("--resume extends one run: name its config with one --config")
    if not args.table_only:
        for name in args.config or CONFIGS:
            result = run_config(name, args.overrides, out, args.tasks, args.samples, args.resume)
            result["samples"] = args.samples
            (out / f"{args.tag or name}.json").write_text(json.dumps(result, indent=2))
    results = [json.loads(f.read_text()) for f in sorted(out.glob("*.json"))]
    print(table(results))


if __name__ == "__main__":
    main()
