"""Environments: where prompts come from and how completions are scored.

Built-in environments and installed plugins register under the
``rl.environments`` entry-point group; ``environments.registry`` finds them.
"""

from environments.base import (DataError, Environment, Episode, GeneratedEnvironment, MultiTurnEnvironment, Score,
                               Task, read_jsonl)

__all__ = ["DataError", "Environment", "Episode", "GeneratedEnvironment", "MultiTurnEnvironment", "Score", "Task", "read_jsonl"]
