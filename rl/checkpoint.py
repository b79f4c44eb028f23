"""Checkpoints: ``RUN/checkpoints/step_000020/`` holds the policy (HF model
folder, optimizer, scheduler, RNG) and ``state.json`` (step, data position,
RNG of the driver). A checkpoint is written under a temporary name and
renamed into place, so a kill at any moment leaves either the old set of
checkpoints or the new one, never a half-written one that looks complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and (d / "state.json").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, step: int, write_policy: Callable[[str], None], state: dict,
                    keep: int) -> Path:
    """``write_policy(folder)`` writes the policy files; ``state`` goes to state.json."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_policy(str(tmp / "policy"))
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
    if final.exists():  # re-running a step after a resume: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "state.json").read_text())
