"""Metrics: one JSON line per step in ``metrics.jsonl`` and the same to W&B.

W&B runs offline unless a key is configured (``wandb sync RUN/wandb/...``
uploads later). Every metric is plotted against the training step
(``define_metric``) and W&B groups the panels by prefix (train, val,
timing, episode, rlhf, judge, curriculum); validation metrics summarise to
their best value. On resume the file is cut back to the checkpoint's step, so
no step is duplicated and none is lost.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from rl.config import Config


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep whole lines with ``step <= last_step`` (a line cut by a kill is dropped)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    tmp.replace(path)


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


PANELS = ("train", "val", "timing", "episode", "rlhf", "judge", "curriculum")
"""Metric prefixes; W&B makes one panel section of each."""


def define_panels(run) -> None:
    """Plot every metric against ``trainer/step``; validation metrics summarise to their maximum."""
    run.define_metric("trainer/step", hidden=True)
    for prefix in PANELS:
        run.define_metric(f"{prefix}/*", step_metric="trainer/step",
                          **({"summary": "max"} if prefix == "val" else {}))


class MetricsLog:
    def __init__(self, run_dir: Path, cfg: Config, resume_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        self._file = open(self.path, "a")
        self._wandb = None
        if cfg.wandb.enabled and cfg.wandb.mode != "disabled":
            self._wandb = self._start_wandb(run_dir, cfg)

    @staticmethod
    def _start_wandb(run_dir: Path, cfg: Config):
        import wandb

        mode = cfg.wandb.mode
        if mode == "auto":
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        run = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, name=cfg.run.name, id=run_id,
                         resume="allow", dir=str(run_dir), mode=mode,
                         config=cfg.model_dump(mode="json"), settings=wandb.Settings(silent=True))
        define_panels(run)
        return run

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._wandb is not None:
            self._wandb.log({"trainer/step": step, **metrics}, step=step)

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
