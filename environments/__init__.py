"""Environments: where prompts come from and how completions are scored.

Built-in environments and installed plugins register under the
``rl.environments`` entry-point group; ``environments.registry`` finds them.
"""

from environments.base import Environment, Score, Task

__all__ = ["Environment", "Score", "Task"]
