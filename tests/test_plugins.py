"""`rl env new` scaffolds a plugin that installs, shows in `rl env list`,
passes `rl env check`, and trains in one mixed run with the four built-in
environments (Ray + vLLM)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, run_rl
from rl.tracking import read_metrics


@pytest.fixture
def installed_plugin(tmp_path):
    r = run_rl("env", "new", "reverse_words", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    root = tmp_path / "rl-env-reverse-words"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(root)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    yield root
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "rl-env-reverse-words"],
                   capture_output=True, timeout=300)


def test_scaffold_refuses_bad_names_and_existing_folders(tmp_path):
    assert run_rl("env", "new", "Bad-Name", "--dir", str(tmp_path)).returncode == 2
    assert run_rl("env", "new", "ok", "--dir", str(tmp_path)).returncode == 0
    r = run_rl("env", "new", "ok", "--dir", str(tmp_path))
    assert r.returncode == 2 and "already exists" in r.stderr


@pytest.mark.slow
def test_scaffolded_plugin_installs_checks_and_trains_with_all_environments(installed_plugin, tiny_model, tmp_path):
    listed = run_rl("env", "list")
    assert "reverse_words" in listed.stdout and "rl_env_reverse_words:ReverseWordsEnvironment" in listed.stdout
    check = run_rl("env", "check", "reverse_words")
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(installed_plugin / "tests")],
                           capture_output=True, text=True, timeout=300, cwd=installed_plugin)
    assert tests.returncode == 0, tests.stdout[-2000:]

    run = tmp_path / "run"
    r = run_rl("train", str(ROOT / "configs" / "grpo_mixed_tiny.yaml"), f"model.path={tiny_model}", f"run.dir={run}",
               "run.steps=1", "grpo.prompts_per_step=10", "grpo.group_size=2", "rollout.max_new_tokens=64",
               "environments.reverse_words.ratio=0.2", "wandb.enabled=false", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = read_metrics(run / "metrics.jsonl")
    for env in ["math", "ifeval", "structured", "mcq", "reverse_words"]:
        assert f"train/reward_mean/{env}" in row, sorted(row)
