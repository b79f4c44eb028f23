"""A test environment whose verifier misbehaves on command: the completion's
answer names what to do (raise, hang, crash the process, eat memory, return
garbage). Used as ``environments: {"tests.plugins.hostile_env:Hostile": {}}``."""

from __future__ import annotations

import os
import time

from environments import Environment, Score, Task
from environments.base import Episode, MultiTurnEnvironment


class Hostile(Environment):
    name = "hostile"

    def tasks(self, split):
        return [Task(id=f"hostile/{i}", env=self.name, messages=[{"role": "user", "content": "ok?"}],
                     answer="ok", reference="<think></think>ok") for i in range(8)]

    def score(self, task, completion):
        action = completion.split("</think>")[-1].strip()
        if action == "raise":
            raise RuntimeError("verifier bug")
        if action == "hang":
            while True:
                time.sleep(0.1)
        if action == "crash":
            os._exit(3)
        if action.startswith("spawn-and-hang"):  # a child that outlives the verifier, then a hang
            import subprocess

            subprocess.Popen(["sleep", "300", action.split(":")[1]] if ":" in action else ["sleep", "300"])
            while True:
                time.sleep(0.1)
        if action == "memory":
            blob = bytearray(8 * 2**30)  # over the host's address-space limit
            return Score(float(len(blob) > 0))
        if action == "garbage":
            return "not a score"
        if action == "nan":
            return Score(float("nan"))
        return Score(float(action == task.answer), reason=None if action == task.answer else "wrong")


class _Episode(Episode):
    def __init__(self):
        self.turns = 0

    def step(self, completion):
        self.turns += 1
        if completion == "crash":
            os._exit(3)
        return [{"role": "tool", "content": "ok"}] if self.turns < 2 else None

    def score(self):
        return Score(1.0)

    def metrics(self):
        return {"turns": self.turns, "bogus": "not a number"}


class CrashingEpisodes(MultiTurnEnvironment):
    """Multi-turn: a turn that says ``crash`` kills the environment's host."""

    name = "crashing-episodes"

    def tasks(self, split):
        return [Task(id=f"crash/{i}", env=self.name, messages=[{"role": "user", "content": "go"}],
                     answer=None, reference="fine") for i in range(4)]

    def start(self, task):
        return _Episode()


class HangsOnConstruction(Environment):
    """A plugin whose constructor never returns."""

    name = "hangs"

    def __init__(self, **options):
        while True:
            time.sleep(0.1)

    def tasks(self, split):
        return []

    def score(self, task, completion):
        return Score(0.0, {})
