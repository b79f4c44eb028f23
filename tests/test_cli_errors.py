"""Bad input fails in seconds, before any actor starts, with a clear message."""

import time

from conftest import run_rl


def test_unknown_key_fails_fast_with_suggestion():
    start = time.monotonic()
    r = run_rl("train", "grpo.learning_rate=1e-6", timeout=60)
    assert r.returncode == 2
    assert "grpo.learning_rate" in r.stderr and "grpo.lr" in r.stderr
    assert time.monotonic() - start < 30


def test_missing_model_path_fails_fast(tmp_path):
    r = run_rl("train", f"model.path={tmp_path}/nope", f"run.dir={tmp_path}/run", timeout=60)
    assert r.returncode == 2
    assert "model.path" in r.stderr and "nope" in r.stderr
    assert not (tmp_path / "run").exists()


def test_missing_config_file():
    r = run_rl("train", "configs/does_not_exist.yaml", timeout=60)
    assert r.returncode == 2 and "not found" in r.stderr


def test_unknown_environment():
    r = run_rl("train", "environments={mathh: {ratio: 1}}", timeout=60)
    assert r.returncode == 2 and "mathh" in r.stderr and "math" in r.stderr
