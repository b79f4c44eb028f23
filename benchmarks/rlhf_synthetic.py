"""The RLHF stage end to end on a preference task whose truth is known in code
(reward_models/synthetic.py: a correct answer beats a wrong one; among
correct answers the shorter wins).

1. Train a tiny judge with the judge environment (configs/genrm_judge_tiny.yaml)
   and measure how often it prefers the truly better answer on held-out pairs.
2. RLHF the tiny math policy with that judge (configs/rlhf_genrm_tiny.yaml),
   with length control (A) and without (B), from the same start.
3. Print, for the start and both finals, on held-out questions: accuracy,
   the true preference score, and mean reasoning / answer lengths.

    python benchmarks/rlhf_synthetic.py --out runs/rlhf-synthetic [--judge-steps 20] [--rlhf-steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rl(*args: str) -> None:
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    subprocess.run([sys.executable, "-m", "rl.cli", *args], cwd=ROOT, env=env, check=True)


def judge_agreement(judge_path: str, limit: int, backend: str) -> dict:
    """On held-out labelled pairs: valid judgements and agreement with the true preference."""
    from environments.registry import load_tasks
    from reward_models.genrm import Judgement
    from reward_models.judge import Judge
    from rl.models import check_model_dir

    judge_path = str(check_model_dir(judge_path, "judge"))
    tasks = [t for t in load_tasks("genrm", {"math_levels": [1], "pairs_per_question": 8}, "test")][:limit]
    judge = Judge(backend, judge_path, max_new_tokens=112, retries=0, temperature=1.0)
    judgements, _ = judge.judge([t.messages for t in tasks])
    strict = [(j, Judgement(**t.answer)) for j, t in zip(judgements, tasks) if t.answer["score_1"] != t.answer["score_2"]]
    return {"pairs": len(tasks), "valid": sum(j is not None for j in judgements) / len(tasks),
            "prefers_better": sum(j is not None and (j.ranking <= 3) == (g.ranking <= 3) for j, g in strict)
            / max(len(strict), 1)}


def policy_report(model_path: str, limit: int, samples: int, backend: str) -> dict:
    """Accuracy, true preference score and lengths of sampled answers on held-out math questions."""
    from transformers import AutoTokenizer

    from environments.pool import EnvironmentPool
    from environments.registry import load_tasks
    from reward_models.synthetic import true_score
    from rl.models import check_model_dir
    from rl.rollout import RolloutWorker, SamplingSettings, prompt_token_ids
    from verifiers.text import split_reasoning

    path = str(check_model_dir(model_path))
    tok = AutoTokenizer.from_pretrained(path)
    opts = {"levels": [1, 2, 3]}
    tasks = load_tasks("math", opts, "test")[:limit]
    worker = RolloutWorker(backend, path, seed=1)
    groups = worker.generate([prompt_token_ids(tok, t.messages) for t in tasks],
                             SamplingSettings(n=samples, max_new_tokens=48))
    pool = EnvironmentPool({"math": opts}, path)
    try:
        flat = [c.token_ids for g in groups for c in g]
        scores, _ = pool.score([t for t, g in zip(tasks, groups) for _ in g], flat)
    finally:
        pool.close()
    parts = [split_reasoning(tok.decode(ids, skip_special_tokens=True)) for ids in flat]
    answers = [a.strip() for _, a in parts]
    n = len(flat)
    return {"accuracy": sum(s.reward for s in scores) / n,
            "true_preference": sum(true_score(s.reward >= 1, len(a)) for s, a in zip(scores, answers)) / n,
            "answer_chars": sum(map(len, answers)) / n,
            "think_chars": sum(len(r or "") for r, _ in parts) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/rlhf-synthetic")
    ap.add_argument("--judge-steps", type=int, default=20, help="GRPO steps of the judge (after its SFT)")
    ap.add_argument("--judge-sft-steps", type=int, default=400)
    ap.add_argument("--rlhf-steps", type=int, default=30)
    ap.add_argument("--eval-tasks", type=int, default=200)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--backend", default="vllm")
    args = ap.parse_args()
    out = Path(args.out)
    judge_run = out / "judge"
    if not (judge_run / "checkpoints").is_dir():
        rl("train", "configs/genrm_judge_tiny.yaml", f"run.dir={judge_run}", f"run.steps={args.judge_steps}",
           f"run.checkpoint_every={args.judge_steps}", f"model.sft.steps={args.judge_sft_steps}")
    runs = {"length_control": out / "rlhf_lc", "no_length_control": out / "rlhf_nolc"}
    for name, run in runs.items():
        if not (run / "checkpoints").is_dir():
            rl("train", "configs/rlhf_genrm_tiny.yaml", f"rlhf.judge.model_path={judge_run}", f"run.dir={run}",
               f"run.steps={args.rlhf_steps}", f"run.checkpoint_every={args.rlhf_steps}",
               f"rlhf.length_control.enabled={'true' if name == 'length_control' else 'false'}")
    from rl.config import load_config
    from rl.sft import resolve_model

    start = str(resolve_model(load_config(ROOT / "configs" / "rlhf_genrm_tiny.yaml",
                                          [f"rlhf.judge.model_path={judge_run}"])))
    report = {"judge": judge_agreement(str(judge_run), args.eval_tasks, args.backend),
              "start": policy_report(start, args.eval_tasks, args.samples, args.backend)}
    for name, run in runs.items():
        report[name] = policy_report(str(run), args.eval_tasks, args.samples, args.backend)
    print(json.dumps(report, indent=2))
    print(f"\n{'policy':<20}{'accuracy':>10}{'true pref':>11}{'answer ch':>11}{'think ch':>10}")
    for name in ("start", *runs):
        r = report[name]
        print(f"{name:<20}{r['accuracy']:>10.3f}{r['true_preference']:>11.3f}{r['answer_chars']:>11.1f}"
              f"{r['think_chars']:>10.1f}")
    j = report["judge"]
    print(f"\njudge: {j['valid']:.2f} valid judgements, prefers the truly better answer in "
          f"{j['prefers_better']:.2f} of held-out pairs")


if __name__ == "__main__":
    main()
