"""``rl report RUN_DIR [RUN_DIR ...]``: PNG plots of runs' metrics and a short summary.

Reads each run's ``metrics.jsonl`` and draws, with every run overlaid on the
same axes (A/B comparisons): reward and pass rate (train, and validation
where the run validated, overall and per environment), response length and
truncated fraction, each environment's share of the loss weight and
its groups without signal, entropy, the rollout/trainer mismatch and the masked
fractions, the curriculum's target against the batch pass rate, the RLHF
judge's counters, and a stacked bar of each step's seconds per phase (one
panel per run). Panels whose metrics no run logged are left out. Writes
``summary.md`` beside them: steps, first and last ten-step means, best
validation step, total time.
"""

from __future__ import annotations

from pathlib import Path

from rl.tracking import read_metrics

# panel file -> (title, y label, metric keys; a key ending in "/" takes every key under it)
PANELS = {
    "reward.png": ("Reward", "mean reward", ["train/reward_mean", "val/reward_mean", "train/reward_mean/",
                                            "val/reward_mean/"]),
    "pass_rate.png": ("Pass rate", "pass rate", ["train/pass_rate", "val/pass@1", "train/pass_rate/", "val/pass@1/"]),
    "length.png": ("Responses", "tokens / fraction", ["train/response_len_mean", "train/truncated_frac",
                                                      "train/response_len_mean/"]),
    "environments.png": ("What each environment weighs", "fraction", ["train/signal_share/",
                                                                       "train/frac_zero_std/"]),
    "entropy.png": ("Entropy", "nats per token", ["train/entropy"]),
    "mismatch.png": ("Rollout/trainer mismatch", "value", ["train/mismatch_abs_mean", "train/mismatch_k3",
                                                          "train/masked_seq_frac", "train/masked_token_frac"]),
    "curriculum.png": ("Curriculum", "pass rate", ["curriculum/target_mean", "curriculum/batch_pass_rate_mean"]),
    "judge.png": ("RLHF judge", "count / fraction", ["judge/calls", "judge/retries", "judge/failures",
                                                     "rlhf/unscored_frac", "rlhf/bonus_frac"]),
}
PHASES = ["timing/generation_s", "timing/env_s", "timing/judge_s", "timing/train_s", "timing/refit_s",
          "timing/validation_s", "timing/reprofile_s"]


def _series(rows: list[dict], patterns: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    keys: list[str] = []
    for pattern in patterns:
        found = sorted({k for row in rows for k in row if (k.startswith(pattern) if pattern.endswith("/")
                                                            else k == pattern)})
        keys += [k for k in found if k not in keys]
    return {k: ([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r]) for k in keys}


def report(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Write the plots and summary.md; returns {file name: [series labels]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [Path(d) for d in run_dirs]
    for run in runs:
        if not (run / "metrics.jsonl").is_file():
            raise FileNotFoundError(f"rl report: {run} has no metrics.jsonl; is it a run folder?")
    data = {run.name: read_metrics(run / "metrics.jsonl") for run in runs}
    out = Path(out_dir) if out_dir else runs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {}
    for name, (title, ylabel, patterns) in PANELS.items():
        fig, ax = plt.subplots(figsize=(9, 5))
        labels = []
        for run, rows in data.items():
            for key, (steps, values) in _series(rows, patterns).items():
                label = f"{run}: {key}" if len(data) > 1 else key
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
                labels.append(label)
        if labels:
            ax.set(title=title, xlabel="step", ylabel=ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            written[name] = labels
        plt.close(fig)
    fig, axes = plt.subplots(len(data), 1, figsize=(9, 3.5 * len(data)), squeeze=False)
    phase_labels = []
    for ax, (run, rows) in zip(axes[:, 0], data.items()):
        steps, bottom = [r["step"] for r in rows], [0.0] * len(rows)
        for phase in PHASES:
            values = [r.get(phase, 0.0) for r in rows]
            if any(values):
                ax.bar(steps, values, bottom=bottom, label=phase.removeprefix("timing/"), width=1.0)
                bottom = [b + v for b, v in zip(bottom, values)]
                phase_labels.append(f"{run}: {phase}")
        ax.set(title=f"Seconds per step by phase: {run}", xlabel="step", ylabel="seconds")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "timing.png", dpi=110)
    plt.close(fig)
    written["timing.png"] = phase_labels
    (out / "summary.md").write_text(summary(data))
    return written


def summary(data: dict[str, list[dict]]) -> str:
    lines = ["| run | steps | train reward, first 10 | last 10 | best validation | hours |",
             "| --- | --- | --- | --- | --- | --- |"]
    for run, rows in data.items():
        reward = [r["train/reward_mean"] for r in rows if "train/reward_mean" in r]
        val = [(r["val/pass@1"], r["step"]) for r in rows if "val/pass@1" in r]
        best = f"pass@1 {max(val)[0]:.3f} at step {max(val)[1]}" if val else "-"
        hours = sum(r.get("timing/step_s", 0.0) + r.get("timing/validation_s", 0.0) for r in rows) / 3600
        first = sum(reward[:10]) / max(len(reward[:10]), 1)
        last = sum(reward[-10:]) / max(len(reward[-10:]), 1)
        lines.append(f"| {run} | {len(reward)} | {first:.3f} | {last:.3f} | {best} | {hours:.2f} |")
    return "\n".join(lines) + "\n"
