"""Checkpoints: ``RUN/checkpoints/step_000020/`` holds the policy (HF model
folder, optimizer, scheduler, RNG) and ``state.json`` (step, data position,
RNG of the driver). A checkpoint is written under a temporary name and
renamed into place, so a kill at any moment leaves either the old set of
checkpoints or the new one, never a half-written one that looks complete.
A save that fails (a full disk) removes its temporary folder and says why;
a damaged checkpoint is named and skipped for the one before it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

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
                    keep: int, name: str | None = None) -> Path:
    """``write_policy(folder)`` writes the policy files; ``state`` goes to state.json.
    ``name`` (e.g. ``best``): a checkpoint of its own, replaced in place and never
    rotated away; otherwise ``step_N``, of which the latest ``keep`` stay."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / (name or f"step_{step:06d}")
    tmp = root / f".tmp-{name or f'step_{step:06d}'}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write_policy(str(tmp / "policy"))
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written checkpoint filling the disk
        if disk_full(exc, root):
            free = shutil.disk_usage(root).free // 2**20
            raise OSError(errno.ENOSPC, f"checkpoint of step {step}: the disk is full ({root}: {free} MiB free "
                                        "after removing the partial checkpoint); free space, then "
                                        f"`rl train --resume {run_dir}`") from exc
        raise
    if final.exists():  # re-running a step after a resume: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    if name is None:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def disk_full(exc: BaseException, path: Path, margin_bytes: int = 64 * 2**20) -> bool:
    """Whether ``exc`` (anywhere in its chain) is a full disk: ENOSPC, or an error
    from a writer that hides it (torch's "unexpected pos") while ``path``'s
    file system has almost no space left."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(path).free < margin_bytes
    except OSError:
        return False


def load_state(ckpt: Path) -> dict:
    """state.json of a checkpoint; ValueError naming the file when it is damaged."""
    path = ckpt / "state.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is damaged ({exc})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"{path} is damaged (no step)")
    for needed in ("policy/model/config.json", "policy/trainer_state.pt"):
        if not (ckpt / needed).is_file():
            raise ValueError(f"{ckpt / needed} is missing")
    from rl.models import check_model_files

    check_model_files(ckpt / "policy" / "model", "checkpoint")  # CorruptModel is a ValueError
    return state


def usable_checkpoint(run_dir: Path) -> tuple[int, Path, dict] | None:
    """The latest checkpoint that loads, with its state; damaged ones are named
    in a warning and skipped for the one before."""
    for step, ckpt in reversed(list_checkpoints(run_dir)):
        try:
            return step, ckpt, load_state(ckpt)
        except ValueError as exc:
            log.warning("checkpoint %s skipped: %s", ckpt.name, exc)
    return None
