"""Pass-rate profiling: k completions per task with a given policy; the pass
rate is the fraction with full reward. Rows go to a JSON-lines file as they
are computed, so an interrupted profile resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from environments.base import Task

# run_groups(tasks, k) -> for each task, the rewards of its k completions
RunGroups = Callable[[list[Task], int], list[list[float]]]


def read_profile(path: str | Path) -> tuple[dict[str, float], int | None]:
    """(task id -> pass rate, k) from a profile file; k is None for an empty file."""
    rates, k = {}, None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"curriculum.profile: {path} not found (make one with `rl curriculum profile`)")
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rates[row["task_id"]] = row["passes"] / row["k"]
            k = row["k"] if k is None else max(k, row["k"])
        except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
            raise ValueError(f"{path}:{lineno}: malformed profile row ({exc})") from None
    return rates, k


def profile_tasks(tasks: list[Task], run_groups: RunGroups, k: int, path: str | Path | None = None,
                  chunk: int = 64, progress: bool = True) -> dict[str, float]:
    """Pass rates of ``tasks`` (k samples each); with ``path``, appended there and resumed from it."""
    from tqdm import tqdm

    rates: dict[str, float] = {}
    if path is not None and Path(path).is_file():
        rates, _ = read_profile(path)
    todo = [t for t in tasks if t.id not in rates]
    out = open(path, "a", encoding="utf-8") if path is not None else None
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="profile", unit="task", disable=not progress)
    try:
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            for task, rewards in zip(part, run_groups(part, k)):
                passes = sum(r >= 1.0 for r in rewards)
                rates[task.id] = passes / k
                if out is not None:
                    out.write(json.dumps({"env": task.env, "task_id": task.id, "passes": passes, "k": k}) + "\n")
            if out is not None:
                out.flush()
            bar.update(len(part))
    finally:
        bar.close()
        if out is not None:
            out.close()
    return {t.id: rates[t.id] for t in tasks}
