"""Shared fixtures: one tiny warmed-up model per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small Qwen3 model after a short SFT warm-up (about 30 s on 2 cores)."""
    from rl.config import load_config
    from rl.models import init_model
    from rl.sft import run_sft

    root = tmp_path_factory.mktemp("tiny_model")
    cfg = load_config(ROOT / "configs" / "grpo_math_tiny.yaml",
                      ["model.sft.steps=60", "model.sft.num_examples=4000", "model.sft.batch_size=32",
                       "environments.math.levels=[1]"])
    init_model(cfg.model.init, root / "init", seed=0)
    return run_sft(root / "init", root / "sft", cfg)


def run_rl(*args: str, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rl.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)
