"""The ``rl`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = "grpo_math_tiny.yaml"


def configs_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "configs"


def _config_args(args) -> tuple[str | None, list[str]]:
    """``rl train [CONFIG.yaml] [key=value ...]``: the first argument is a file unless it has '='."""
    rest = list(args.args)
    path = None
    if rest and "=" not in rest[0]:
        path = rest.pop(0)
    elif args.command == "train":
        path = str(configs_dir() / DEFAULT_CONFIG)
    return path, rest


def cmd_train(args) -> int:
    from rl.config import load_config
    from rl.train import train

    if args.resume:
        run_dir = train(resume_dir=args.resume, overrides=args.args)
    else:
        path, overrides = _config_args(args)
        cfg = load_config(path, overrides)
        run_dir = train(cfg)
    print(f"run folder: {run_dir}")
    _print_curve(run_dir / "metrics.jsonl")
    return 0


def cmd_report(args) -> int:
    from rl.report import report

    written = report(args.runs, args.out)
    out = Path(args.out) if args.out else Path(args.runs[0]) / "report"
    print(f"wrote {', '.join(sorted(written))} and summary.md to {out}")
    print((out / "summary.md").read_text(), end="")
    return 0


def _print_curve(path: Path, width: int = 50) -> None:
    """A reward curve in the terminal (W&B shows the same online or after ``wandb sync``)."""
    from rl.tracking import read_metrics

    if not path.exists():
        return
    rows = [r for r in read_metrics(path) if "train/reward_mean" in r]  # not a step-0 validation
    if not rows:
        return
    bucket = max(1, len(rows) // 20)
    print("train/reward_mean by step")
    for i in range(0, len(rows), bucket):
        chunk = rows[i:i + bucket]
        r = sum(x["train/reward_mean"] for x in chunk) / len(chunk)
        print(f"  step {chunk[0]['step']:>5}  {r:6.3f}  {'#' * int(round(r * width))}")


def cmd_eval(args) -> int:
    from rl.config import EnvironmentConfig, load_config
    from rl.evaluate import evaluate

    cfg = load_config(args.config, args.overrides)
    if args.env:  # the named environments, with the config's options where it has them
        names = args.env.split(",")
        cfg = cfg.model_copy(update={"environments": {
            n: cfg.environments.get(n, EnvironmentConfig()) for n in names}})
    rollout = {k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("temperature", args.temperature),
                                 ("backend", args.backend)) if v is not None}
    cfg = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update=rollout)})
    # a model folder, a checkpoint or a run folder (its latest checkpoint): check_model_dir resolves it
    result = evaluate(cfg, args.checkpoint, split=args.split, samples=args.samples, limit=args.limit, seed=args.seed,
                      per_task=args.tasks_out is not None)
    if args.tasks_out:
        with open(args.tasks_out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in result.pop("tasks"))
    print(json.dumps(result, indent=2))
    return 0


def cmd_model_init(args) -> int:
    from rl.config import ModelInitConfig
    from rl.models import init_model, num_parameters

    init = ModelInitConfig(arch=args.arch, **({} if args.hidden_size is None else {"hidden_size": args.hidden_size}))
    path = init_model(init, args.out, seed=args.seed)
    from transformers import AutoModelForCausalLM

    print(f"{args.arch} model with {num_parameters(AutoModelForCausalLM.from_pretrained(path)):,} parameters in {path}")
    return 0


def cmd_sft(args) -> int:
    from rl.config import load_config
    from rl.models import check_model_dir
    from rl.sft import run_sft

    cfg = load_config(args.config or str(configs_dir() / DEFAULT_CONFIG), args.overrides)
    out = run_sft(check_model_dir(args.model), args.out, cfg)
    print(f"warmed-up model in {out}")
    return 0


def cmd_env_list(args) -> int:
    from environments.registry import available

    for name, target in sorted(available().items()):
        print(f"{name:20s} {target}")
    return 0


def cmd_env_new(args) -> int:
    from environments.tools import scaffold

    root = scaffold(args.name, args.dir)
    print(f"created {root}\n  pip install -e {root}   # then: rl env check {args.name}; "
          f"rl train {root}/configs/{args.name}_tiny.yaml")
    return 0


def cmd_env_check(args) -> int:
    from environments.tools import check
    from rl.config import load_config

    options = {}
    if args.config:
        cfg = load_config(args.config, args.overrides)
        if args.name in cfg.environments:
            options = cfg.environments[args.name].options
    report = check(args.name, options, splits=tuple(args.split or ("train", "test")), limit=args.limit)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def cmd_curriculum_profile(args) -> int:
    """Pass rates of each environment's train tasks under a model, for ``curriculum.profile``."""
    import random as _random

    from curricula.profile import profile_tasks
    from environments.registry import load_tasks
    from rl.config import load_config
    from rl.models import check_model_dir
    from rl.rollouts import local_rollouts
    from rl.sft import resolve_model

    cfg = load_config(args.config, args.overrides)
    if args.backend:
        cfg = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"backend": args.backend})})
    model = str(check_model_dir(args.model) if args.model else resolve_model(cfg))
    k = args.k or cfg.curriculum.k
    tasks = []
    for name, env in cfg.environments.items():
        pool_tasks = load_tasks(name, env.options, "train")
        if args.limit is not None and len(pool_tasks) > args.limit:
            pool_tasks = _random.Random(cfg.run.seed).sample(pool_tasks, args.limit)
        tasks += pool_tasks
    rollouts = local_rollouts(cfg, model, seed=cfg.run.seed)
    try:
        rates = profile_tasks(tasks, rollouts.rewards, k, args.out)
    finally:
        rollouts.close()
    hist = [0] * (k + 1)
    for p in rates.values():
        hist[round(p * k)] += 1
    print(json.dumps({"out": str(args.out), "tasks": len(rates), "k": k,
                      "mean_pass_rate": sum(rates.values()) / max(len(rates), 1),
                      "histogram": {f"{j}/{k}": n for j, n in enumerate(hist)}}, indent=2))
    return 0


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (dotted key), repeatable")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rl", description="Multi-environment RL post-training (GRPO on Ray + vLLM).")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train with GRPO (default: configs/grpo_math_tiny.yaml)")
    t.add_argument("args", nargs="*", metavar="[CONFIG] key=value", help="config file and dotted overrides")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run from its latest checkpoint; run.steps=N extends a finished run")
    t.set_defaults(fn=cmd_train)

    rp = sub.add_parser("report", help="PNG plots and a summary of one or more runs (overlaid)")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("-o", "--out", default=None, help="folder for the plots (default: RUN_DIR/report of the first)")
    rp.set_defaults(fn=cmd_report)

    e = sub.add_parser("eval", help="pass@1 / pass@k of a model or checkpoint")
    e.add_argument("checkpoint", help="HF model folder, or a run's checkpoints/step_N folder")
    e.add_argument("--env", default=None, help="comma-separated environments (default: the config's, or math)")
    e.add_argument("--split", default="test")
    e.add_argument("--samples", type=int, default=1, help="completions per task (k of pass@k)")
    e.add_argument("--limit", type=int, default=None, help="evaluate at most this many tasks per environment")
    e.add_argument("--max-new-tokens", type=int, default=None, help="default: the config's rollout.max_new_tokens")
    e.add_argument("--temperature", type=float, default=None, help="default: the config's rollout.temperature")
    e.add_argument("--backend", choices=["vllm", "transformers"], default=None,
                   help="default: the config's rollout.backend")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--tasks-out", default=None, metavar="FILE",
                   help="write one JSON line per task: id, prompt, answer, and each sample's reward, reason and text")
    e.add_argument("--config", default=None,
                   help="environments and rollout settings from this config (default: the built-in default)")
    _add_overrides(e)
    e.set_defaults(fn=cmd_eval)

    m = sub.add_parser("model", help="build models")
    msub = m.add_subparsers(dest="model_command", required=True)
    mi = msub.add_parser("init", help="build a tiny model + tokenizer from a transformers config")
    mi.add_argument("out")
    mi.add_argument("--arch", choices=["qwen3", "qwen3_moe", "nemotron_h"], default="qwen3")
    mi.add_argument("--hidden-size", type=int, default=None)
    mi.add_argument("--seed", type=int, default=0)
    mi.set_defaults(fn=cmd_model_init)

    s = sub.add_parser("sft", help="warm a model up on the environments' reference solutions (TRL SFTTrainer)")
    s.add_argument("model")
    s.add_argument("out")
    s.add_argument("--config", default=None)
    _add_overrides(s)
    s.set_defaults(fn=cmd_sft)

    c = sub.add_parser("curriculum", help="pass-rate curriculum tools")
    csub = c.add_subparsers(dest="curriculum_command", required=True)
    cp = csub.add_parser("profile", help="sample k completions per train task; write pass rates (resumable)")
    cp.add_argument("config", help="the run config (environments, model, rollout settings)")
    cp.add_argument("-O", "--out", default="profile.jsonl", help="profile file (appended to; resumes)")
    cp.add_argument("--model", default=None, help="model or checkpoint folder (default: the config's model)")
    cp.add_argument("--k", type=int, default=None, help="completions per task (default: curriculum.k)")
    cp.add_argument("--limit", type=int, default=None, help="profile at most this many tasks per environment")
    cp.add_argument("--backend", choices=["vllm", "transformers"], default=None)
    _add_overrides(cp)
    cp.set_defaults(fn=cmd_curriculum_profile)

    env = sub.add_parser("env", help="environment plugins")
    esub = env.add_subparsers(dest="env_command", required=True)
    el = esub.add_parser("list", help="installed environments")
    el.set_defaults(fn=cmd_env_list)
    en = esub.add_parser("new", help="scaffold an environment plugin package (code, config, data, test)")
    en.add_argument("name")
    en.add_argument("--dir", default=".", help="parent folder of the new package")
    en.set_defaults(fn=cmd_env_new)
    ec = esub.add_parser("check", help="load an environment's tasks; references must score 1, wrong answers 0")
    ec.add_argument("name")
    ec.add_argument("--split", action="append", default=None, help="split(s) to check (default: train and test)")
    ec.add_argument("--limit", type=int, default=None, help="check at most this many tasks per split")
    ec.add_argument("--config", default=None, help="take the environment's options from this config")
    _add_overrides(ec)
    ec.set_defaults(fn=cmd_env_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("rl").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rl.config import ConfigError
    from rl.train import RunStopped

    try:
        return args.fn(args)
    except RunStopped as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, FileExistsError, KeyError, ValueError) as exc:
        if args.verbose:  # the full traceback, for bugs rather than bad input
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

