"""Find environments by name through the ``rl.environments`` entry points."""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points

from environments.base import Environment, Task

GROUP = "rl.environments"


def available() -> dict[str, str]:
    """name -> 'module:Class' of every installed environment."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def environment_class(name: str) -> type[Environment]:
    """The class registered as ``name``, or at the import path ``name = 'module:Class'``
    (an environment used without packaging it)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise KeyError(f"environments.{name}: cannot import {name} ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Environment)):
            raise TypeError(f"environment '{name}' is not an Environment subclass")
        return cls
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in eps:
        close = difflib.get_close_matches(name, list(eps), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(
            f"environments.{name}: no such environment{hint}; installed: {sorted(eps)} "
            "(a plugin registers under the 'rl.environments' entry-point group)"
        )
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise TypeError(f"environment '{name}' ({eps[name].value}) is not an Environment subclass")
    return cls


def make_environment(name: str, options: dict) -> Environment:
    cls = environment_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"environments.{name}: {exc}") from None


def load_tasks(name: str, options: dict, split: str) -> list[Task]:
    """The task pool of one environment's split (the environment is closed after).

    Every task is labelled with ``name``, the key the run's config uses, so
    rows are routed to that environment and logged under it.
    """
    env = make_environment(name, options)
    try:
        tasks = env.tasks(split)
    finally:
        env.close()
    for task in tasks:
        task.env = name
    return tasks
