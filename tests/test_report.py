"""``rl report``: plots of several runs overlaid, and the summary."""

from __future__ import annotations

import json

import pytest

from rl.report import report
from rl.tracking import read_metrics

PNG = b"\x89PNG\r\n\x1a\n"


def _run(path, steps: int, offset: float, validate: bool):
    path.mkdir()
    # run.eval_before_train: the start's validation is a row of its own, step 0, with no train/*
    rows = [{"step": 0, "val/reward_mean": 0.0, "val/pass@1": 0.0, "val/pass@1/math": 0.0,
             "timing/validation_s": 0.5}] if validate else []
    for s in range(1, steps + 1):
        row = {"step": s, "train/reward_mean": offset + s / 100, "train/reward_mean/math": offset + s / 90,
               "train/pass_rate": s / 50, "train/entropy": 1 - s / 100, "train/response_len_mean": 30.0,
               "train/truncated_frac": 0.1, "train/mismatch_abs_mean": 1e-3, "train/masked_seq_frac": 0.0,
               "timing/generation_s": 1.0, "timing/train_s": 2.0, "timing/refit_s": 0.1, "timing/step_s": 3.2,
               "curriculum/target_mean": 0.8 - s / 100, "curriculum/batch_pass_rate_mean": 0.7}
        if validate and s % 2 == 0:
            row.update({"val/reward_mean": s / 40, "val/pass@1": s / 40, "val/pass@1/math": s / 40,
                        "timing/validation_s": 0.5})
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_report_overlays_runs_and_writes_valid_pngs_and_a_summary(tmp_path):
    a = _run(tmp_path / "a", 12, 0.2, validate=True)
    b = _run(tmp_path / "b", 8, 0.3, validate=False)
    written = report([a, b], tmp_path / "out")
    for name in ("reward.png", "pass_rate.png", "length.png", "entropy.png", "mismatch.png", "curriculum.png",
                 "timing.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG, name
    assert "judge.png" not in written and not (tmp_path / "out" / "judge.png").exists()  # no run logged it
    assert {"a: train/reward_mean", "b: train/reward_mean", "a: val/reward_mean", "a: train/reward_mean/math"} \
        <= set(written["reward.png"])
    assert "b: val/reward_mean" not in written["reward.png"]
    assert {"a: timing/validation_s", "b: timing/train_s"} <= set(written["timing.png"])
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| a | 12 |" in summary and "pass@1 0.300 at step 12" in summary and "| b | 8 |" in summary


def test_report_names_a_folder_that_is_not_a_run(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="has no metrics.jsonl"):
        report([tmp_path])


def test_wandb_plots_against_the_step_and_keeps_the_best_validation(tmp_path):
    """A real offline W&B run: metrics on the ``trainer/step`` axis, one panel
    section per prefix, ``val/*`` summarised to its maximum."""
    pytest.importorskip("wandb")
    from rl.config import load_config
    from rl.tracking import MetricsLog

    cfg = load_config(None, ["wandb.mode=offline"])
    log = MetricsLog(tmp_path, cfg)
    run = log._wandb
    try:
        for step, v in [(1, 0.2), (2, 0.5), (3, 0.3)]:
            log.log(step, {"train/reward_mean": v, "val/pass@1": v})
        best = dict(run.summary["val/pass@1"])
        last = run.summary["trainer/step"]  # W&B commits a step when the next one starts
    finally:
        log.close()
    assert best == {"max": 0.5}
    assert last in (2, 3)
    assert (tmp_path / "wandb").is_dir() and len(read_metrics(tmp_path / "metrics.jsonl")) == 3
