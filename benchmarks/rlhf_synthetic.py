"""The RLHF stage end to end on a preference task whose truth is known in code
(reward_models/synthetic.py: a correct answer beats a wrong one; among
correct answers the shorter wins; environments/preference scores it).

1. Train a tiny judge with the judge environment (configs/genrm_judge_tiny.yaml:
   SFT on its labelled judgements, then GRPO with the GenRM reward) and measure
   how often it prefers the truly better answer, on new pairs for the training
   questions (what the RLHF run asks it about) and for held-out questions.
2. RLHF the tiny policy with that judge (configs/rlhf_genrm_tiny.yaml), with
   length control (A) and without (B), from the same start.
3. Print, for the start and both finals: accuracy, the true preference score,
   the fraction of long answers and mean answer / reasoning lengths.

    python benchmarks/rlhf_synthetic.py --out runs/rlhf-synthetic [--judge-model DIR] [--rlhf-steps N]

A judge trained on made-up answers alone misorders some of the policy's own
answers, and the policy learns those mistakes (docs/experiments.md section 4);
``--judge-errors RUN`` shows where the judge (``--out``'s) misorders a policy's
right and wrong answers, and whether its own worked result was the wrong one. With
``--policy-answers FILE`` the judge also trains on pairs of the policy's own
answers (``environments.genrm.policy_answers``); if FILE does not exist it is
written first, ``--answer-samples`` answers per training question from each
policy in ``--answers-from`` (``start``: the RLHF run's warm-up; or a run or
model folder, such as an earlier RLHF run whose mistakes the judge should learn).

The judge's warm-up (10.7M parameters, 2000 SFT steps) took 3.6 min on one
H100 and would take hours on 2 CPU cores (not timed); ``--judge-model`` starts
the judge's GRPO from a warm-up made elsewhere, for example on a GPU::

    rl model init INIT && rl sft INIT DIR --config configs/genrm_judge_tiny.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rl(*args: str) -> None:
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    subprocess.run([sys.executable, "-m", "rl.cli", *args], cwd=ROOT, env=env, check=True)


def judge_agreement(judge_path: str, split: str, limit: int, backend: str, levels=(1,)) -> dict:
    """On new labelled pairs for ``split``'s questions (a seed the judge never
    trained on): valid judgements, and how often the judge prefers the truly
    better answer where one is better."""
    from environments.genrm.env import GenRMJudgeEnvironment
    from reward_models.genrm import Judgement
    from reward_models.judge import Judge
    from reward_models.synthetic import labelled_pairs
    from rl.models import check_model_dir

    env = GenRMJudgeEnvironment(math_levels=list(levels))
    rows = labelled_pairs(env.math.tasks(split), random.Random(f"agreement-{split}"), per_task=8)
    random.Random(0).shuffle(rows)
    tasks = [env.task_from_row(r, r["id"]) for r in rows[:limit]]
    from rl.config import JudgeConfig
    from rl.rollout import EngineSpec, context_length

    path = str(check_model_dir(judge_path, "judge"))
    judge = Judge(EngineSpec(path, JudgeConfig(backend=backend, max_new_tokens=112, retries=0, temperature=1.0),
                             max_model_len=context_length(path)))
    judgements, _ = judge.judge([t.messages for t in tasks])
    strict = [(j, Judgement(**t.answer)) for j, t in zip(judgements, tasks) if t.answer["score_1"] != t.answer["score_2"]]
    return {"pairs": len(tasks), "valid": sum(j is not None for j in judgements) / len(tasks),
            "prefers_better": sum(j is not None and (j.ranking <= 3) == (g.ranking <= 3) for j, g in strict)
            / max(len(strict), 1)}


def sample_answers(model_path: str, env, split: str, samples: int, backend: str) -> list[tuple]:
    """(task, completion text) for ``samples`` answers of the policy to each of ``env``'s ``split`` tasks."""
    from transformers import AutoTokenizer

    from rl.models import check_model_dir
    from rl.config import RolloutConfig
    from rl.rollout import EngineSpec, RolloutWorker, SamplingSettings, prompt_token_ids

    path = str(check_model_dir(model_path))
    tok = AutoTokenizer.from_pretrained(path)
    tasks = env.tasks(split)
    worker = RolloutWorker(EngineSpec(path, RolloutConfig(backend=backend), seed=1))
    groups = worker.generate([prompt_token_ids(tok, t.messages) for t in tasks],
                             SamplingSettings(n=samples, max_new_tokens=96))
    return [(t, tok.decode(c.token_ids, skip_special_tokens=True)) for t, g in zip(tasks, groups) for c in g]


def write_policy_answers(policies: list[str], options: dict, samples: int, backend: str, path: Path) -> None:
    """The policies' answers to the training questions, one row per question (its copies merged),
    in the format of ``environments.genrm.policy_answers``."""
    from environments.registry import make_environment

    env = make_environment("preference", options)
    rows: dict[str, dict] = {}
    try:
        for policy in policies:
            for task, text in sample_answers(policy, env, "train", samples, backend):
                question = task.messages[0]["content"]
                row = rows.setdefault(question, {"question": question, "answer": task.answer,
                                                 "reference": task.reference, "completions": []})
                row["completions"].append(text)
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    print(f"wrote {path}: {len(rows)} questions, {sum(len(r['completions']) for r in rows.values())} answers")


def judge_errors(judge_path: str, policy_path: str, options: dict, backend: str, pairs: int = 4,
                 samples: int = 4) -> dict:
    """Where the judge misorders a policy's own answers: up to ``pairs`` right-against-wrong
    pairs of its answers (8 per training task) per question, ``samples`` judgements each.
    An error whose note quotes a worked result other than the gold ("6 vs 6: right" for
    5-1) is the judge's own arithmetic gone wrong; ``questions`` gives each question's
    error rate, worst first; ``worked_result_right`` the share of judgements whose every
    note quotes the gold as the worked result; ``accuracy`` the policy's share of right
    answers per question (compare two policies' files to see where accuracy was lost)."""
    import re
    from collections import defaultdict

    from environments.registry import make_environment
    from reward_models.genrm import parse_judgement, tie_adjusted
    from reward_models.judge import judge_messages
    from rl.config import RolloutConfig
    from rl.models import check_model_dir
    from rl.rollout import EngineSpec, RolloutWorker, SamplingSettings, prompt_token_ids
    from transformers import AutoTokenizer
    from verifiers.text import split_reasoning

    env = make_environment("preference", options)
    try:
        by_question = defaultdict(list)
        for task, text in sample_answers(policy_path, env, "train", 8, backend):
            by_question[task.messages[0]["content"]].append((task, text, env.score(task, text).components["correct"]))
    finally:
        env.close()
    rng, prompts, meta = random.Random(0), [], []
    for question, answers in by_question.items():
        right, wrong = [a for a in answers if a[2]], [a for a in answers if not a[2]]
        for _ in range(min(pairs, len(right) * len(wrong))):
            pair = [rng.choice(right), rng.choice(wrong)][::rng.choice([1, -1])]
            prompts.append(judge_messages(pair[0][0].messages, *(split_reasoning(a[1])[1].strip() for a in pair)))
            meta.append((question, pair[0][0].answer, bool(pair[0][2])))
    path = str(check_model_dir(judge_path, "judge"))
    tok = AutoTokenizer.from_pretrained(path)
    worker = RolloutWorker(EngineSpec(path, RolloutConfig(backend=backend), seed=5))
    outputs = worker.generate([prompt_token_ids(tok, p) for p in prompts],
                              SamplingSettings(n=samples, max_new_tokens=112, temperature=1.0))
    judged, errors, own_arithmetic, invalid, worked_right = 0, 0, 0, 0, 0
    per_question = defaultdict(lambda: [0, 0])
    for (question, gold, first_right), group in zip(meta, outputs):
        for completion in group:
            text = tok.decode(completion.token_ids, skip_special_tokens=True)
            j = parse_judgement(text)
            if j is None:
                invalid += 1
                continue
            s1, s2 = tie_adjusted(j)
            wrong_order = s1 == s2 or (s1 > s2) != first_right
            judged += 1
            errors += wrong_order
            per_question[question][0] += 1
            per_question[question][1] += wrong_order
            worked = re.findall(r"vs (-?\d+):", text)
            worked_right += bool(worked) and all(g == gold for g in worked)
            own_arithmetic += wrong_order and any(g != gold for g in worked)
    rates = sorted(((e / n, q) for q, (n, e) in per_question.items() if n), reverse=True)
    return {"judgements": judged, "invalid": invalid, "errors": errors, "errors_own_arithmetic": own_arithmetic,
            "worked_result_right": worked_right / max(judged, 1),
            "questions_with_pairs": len(per_question), "questions_error_rate_ge_half": sum(r >= 0.5 for r, _ in rates),
            "questions": [[q, round(r, 3)] for r, q in rates[:15]],
            "accuracy": {q: round(sum(a[2] for a in answers) / len(answers), 3) for q, answers in by_question.items()}}


def policy_report(model_path: str, options: dict, split: str, samples: int, backend: str) -> dict:
    """Accuracy, true preference score, long-answer fraction and lengths of sampled answers."""
    from environments.registry import make_environment
    from verifiers.text import split_reasoning

    env = make_environment("preference", options)
    try:
        texts = sample_answers(model_path, env, split, samples, backend)
        scores = [env.score(t, text) for t, text in texts]
    finally:
        env.close()
    n = len(texts)
    return {"questions": len({t.id for t, _ in texts}), "accuracy": sum(s.components["correct"] for s in scores) / n,
            "true_preference": sum(s.reward for s in scores) / n,
            "long_answers": sum(s.components["short"] == 0.0 for s in scores) / n,
            "answer_chars": sum(s.components["answer_chars"] for s in scores) / n,
            "think_chars": sum(len(split_reasoning(text)[0] or "") for _, text in texts) / n}


# The A/B of the shipped config, and (--diagnose) the runs that tell the
# candidate causes of an accuracy loss apart: the tie rule's noise on equal
# answers as std normalisation scales it (std_normalize=false), drift with and
# without KL (the config has kl.coef 0.1 since session 10: runs before it
# reproduce with --override grpo.kl.coef=0.0) and a stronger KL (0.3), and the judge itself (true_reward: GRPO on the
# environment's own score, no judge: a perfect judge without ties; a judge
# sampled near-greedily, which also makes its tie rankings cancel in the circle; groups the
# judge ties throughout given equal base rewards, so the tie rule's noise is not trained on; an
# error-free judge, rlhf.oracle_judge, through the same comparisons, tie rule and length control;
# four judgements of each comparison averaged, rlhf.judge.samples).
AB = {"length_control": ["rlhf.length_control.enabled=true"],
      "no_length_control": ["rlhf.length_control.enabled=false"]}
DIAGNOSE = {"lc_no_std_normalize": ["rlhf.length_control.enabled=true", "grpo.std_normalize=false"],
            "nolc_no_std_normalize": ["rlhf.length_control.enabled=false", "grpo.std_normalize=false"],
            "true_reward": ["environments.preference.reward=verifier"],
            "lc_kl": ["rlhf.length_control.enabled=true", "grpo.kl.coef=0.1"],  # the config's own since session 10
            "lc_no_kl": ["rlhf.length_control.enabled=true", "grpo.kl.coef=0.0"],
            "lc_kl0.3": ["rlhf.length_control.enabled=true", "grpo.kl.coef=0.3"],  # a stronger pull to the start
            "lc_judge_t0.05": ["rlhf.length_control.enabled=true", "rlhf.judge.temperature=0.05"],
            "lc_tied_equal": ["rlhf.length_control.enabled=true", "rlhf.tied_groups=equal"],
            "lc_oracle_judge": ["rlhf.length_control.enabled=true", "rlhf.oracle_judge=true"],
            "nolc_oracle_judge": ["rlhf.length_control.enabled=false", "rlhf.oracle_judge=true"],
            "lc_judge_samples4": ["rlhf.length_control.enabled=true", "rlhf.judge.samples=4"]}
# what the judge did on the policy's own groups, against the environment's truth (reward_models/genrm.py)
DIAGNOSTICS = ("rlhf/judge_agreement", "rlhf/tie_spread", "rlhf/verifier_tied_frac", "rlhf/noise_groups_frac",
               "train/verifier_reward_mean/preference")


def run_diagnostics(run: Path) -> dict:
    from rl.tracking import read_metrics

    rows = read_metrics(run / "metrics.jsonl")
    out = {}
    for key in DIAGNOSTICS:
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = {"first10": sum(values[:10]) / len(values[:10]), "last10": sum(values[-10:]) / len(values[-10:])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/rlhf-synthetic")
    ap.add_argument("--judge-model", help="the judge's warm-up, made elsewhere (default: the config's own SFT)")
    ap.add_argument("--judge-steps", type=int, default=20, help="GRPO steps of the judge (after its SFT)")
    ap.add_argument("--rlhf-steps", type=int, default=None,
                    help="GRPO steps of each RLHF run (default: the config's run.steps)")
    ap.add_argument("--judge-pairs", type=int, default=400)
    ap.add_argument("--samples", type=int, default=8, help="answers per question in the policy reports")
    ap.add_argument("--backend", default="vllm")
    ap.add_argument("--diagnose", action="store_true",
                    help="also the runs that separate the causes of an accuracy loss (std normalisation, KL)")
    ap.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    ap.add_argument("--policy-answers", help="JSON-lines file of the policy's own answers the judge also trains on "
                    "(written first if missing)")
    ap.add_argument("--answers-from", default="start",
                    help="comma-separated policies whose answers make --policy-answers: start, or run/model folders")
    ap.add_argument("--answer-samples", type=int, default=8, help="answers per training task and policy")
    ap.add_argument("--answers-only", action="store_true", help="write --policy-answers and stop (to make the "
                    "judge's warm-up elsewhere, with environments.genrm.policy_answers=FILE)")
    ap.add_argument("--judge-override", action="append", default=[], metavar="KEY=VALUE",
                    help="more overrides of the judge's config (its warm-up included)")
    ap.add_argument("--seed", type=int, default=0, help="run.seed of the RLHF runs (their folders get "
                    "a -seedN suffix when it is not 0)")
    ap.add_argument("--judge-errors", metavar="POLICY", help="only report where the judge (--out's) misorders "
                    "this policy's (start, or a run or model folder) right and wrong answers, and stop")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="more overrides of every RLHF run (e.g. ray.enabled=false rollout.backend=transformers)")
    args = ap.parse_args()
    out = Path(args.out)
    from rl.config import load_config
    from rl.sft import resolve_model

    cfg = load_config(ROOT / "configs" / "rlhf_genrm_tiny.yaml")
    options = cfg.environments["preference"].options
    steps = args.rlhf_steps or cfg.run.steps
    judge_overrides = list(args.judge_override)
    if args.policy_answers:
        answers = Path(args.policy_answers)
        if not answers.is_file():
            policies = [str(resolve_model(cfg)) if p == "start" else p for p in args.answers_from.split(",")]
            write_policy_answers(policies, options, args.answer_samples, args.backend, answers)
        judge_overrides.append(f"environments.genrm.policy_answers={answers.resolve()}")
    if args.answers_only:
        return
    judge_run = out / "judge"
    if args.judge_errors:
        from_start = args.judge_errors == "start"
        policy = str(resolve_model(cfg)) if from_start else args.judge_errors
        found = judge_errors(str(judge_run), policy, options, args.backend)
        name = "start" if from_start else Path(args.judge_errors).name
        (out / f"judge_errors-{name}.json").write_text(json.dumps({"policy": args.judge_errors, **found}, indent=2))
        print(json.dumps(found))
        return
    if not (judge_run / "checkpoints").is_dir():
        rl("train", "configs/genrm_judge_tiny.yaml", f"run.dir={judge_run}", f"run.steps={args.judge_steps}",
           f"run.checkpoint_every={args.judge_steps}", *judge_overrides,
           *([f"model.path={args.judge_model}"] if args.judge_model else []))
    variants = {**AB, **(DIAGNOSE if args.diagnose else {})}
    if args.only:
        variants = {k: variants[k] for k in args.only.split(",")}
    suffix = f"-seed{args.seed}" if args.seed else ""
    runs = {name: out / f"rlhf_{name}{suffix}" for name in variants}
    start = str(resolve_model(cfg))  # every seed starts from the same warm-up (the seed-0 one)
    for name, run in runs.items():
        if not (run / "checkpoints").is_dir():
            rl("train", "configs/rlhf_genrm_tiny.yaml", f"rlhf.judge.model_path={judge_run}", f"run.dir={run}",
               f"run.steps={steps}", f"run.checkpoint_every={steps}", f"model.path={start}",
               f"run.seed={args.seed}", *variants[name], *args.override)
    policies = {"start": start, **{name: str(run) for name, run in runs.items()}}
    report = {"judge": {split: judge_agreement(str(judge_run), split, args.judge_pairs, args.backend)
                        for split in ("train", "test")},
              "diagnostics": {name: run_diagnostics(run) for name, run in runs.items()}}
    for split in ("train", "test"):
        report[split] = {name: policy_report(path, options, split, args.samples, args.backend)
                         for name, path in policies.items()}
    (out / f"report{suffix}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    for split, title in (("train", "training questions"), ("test", "held-out questions")):
        print(f"\n{title} ({report[split]['start']['questions']} questions x {args.samples} answers)")
        print(f"{'policy':<20}{'accuracy':>10}{'true pref':>11}{'long ans':>10}{'answer ch':>11}{'think ch':>10}")
        for name, r in report[split].items():
            print(f"{name:<20}{r['accuracy']:>10.3f}{r['true_preference']:>11.3f}{r['long_answers']:>10.3f}"
                  f"{r['answer_chars']:>11.1f}{r['think_chars']:>10.1f}")
    print(f"\nduring training (first 10 -> last 10 steps): {', '.join(DIAGNOSTICS)}")
    for name, d in report["diagnostics"].items():
        print(f"{name:<22}" + "  ".join(f"{d[k]['first10']:.3f}->{d[k]['last10']:.3f}" if k in d else "-"
                                       for k in DIAGNOSTICS))
    for split, j in report["judge"].items():
        print(f"judge on {split} questions: {j['valid']:.2f} valid judgements, prefers the truly better answer in "
              f"{j['prefers_better']:.2f} of {j['pairs']} new pairs")


if __name__ == "__main__":
    main()
