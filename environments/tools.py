"""``rl env new`` (scaffold a plugin package) and ``rl env check`` (verify one)."""

from __future__ import annotations

import json
import random
import re
import statistics
import textwrap
import time
from pathlib import Path

from environments.base import MultiTurnEnvironment
from environments.registry import make_environment

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def scaffold(name: str, parent: str | Path = ".") -> Path:
    """Write an installable plugin package ``rl-env-<name>`` under ``parent``; return its folder.

    The generated environment reads JSON-lines tasks shipped in the package
    (a word-reversal task as sample data) and scores the answer by exact
    match; it installs with ``pip install -e`` and trains as generated.
    """
    if not _NAME.match(name):
        raise ValueError(f"environment name {name!r}: use lowercase letters, digits and '_' (e.g. 'my_env')")
    root = Path(parent) / f"rl-env-{name.replace('_', '-')}"
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    pkg = f"rl_env_{name}"
    cls = "".join(part.capitalize() for part in name.split("_")) + "Environment"
    files = {
        "pyproject.toml": f'''
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "rl-env-{name.replace('_', '-')}"
            version = "0.1.0"
            description = "The '{name}' environment for rl-posttrain"
            requires-python = ">=3.11"
            dependencies = ["rl-posttrain"]

            [project.entry-points."rl.environments"]
            {name} = "{pkg}:{cls}"

            [tool.setuptools.packages.find]
            include = ["{pkg}*"]

            [tool.setuptools.package-data]
            {pkg} = ["data/*.jsonl"]
            ''',
        f"{pkg}/__init__.py": f'''
            """The '{name}' environment: tasks from JSON-lines files, exact-match answers.

            Each line of data/train.jsonl and data/test.jsonl is
            {{"id": ..., "question": ..., "answer": ...}}. Edit ``score`` for your verifier.
            """

            from __future__ import annotations

            from pathlib import Path

            from environments import Environment, Score, Task, read_jsonl
            from verifiers.text import answer_part

            DATA = Path(__file__).parent / "data"


            class {cls}(Environment):
                name = "{name}"

                def __init__(self, data_dir: str | None = None, require_think: bool = True):
                    self.data_dir = Path(data_dir) if data_dir else DATA
                    self.require_think = require_think

                def tasks(self, split: str) -> list[Task]:
                    return read_jsonl(self.data_dir / f"{{split}}.jsonl", self._task)

                def _task(self, row: dict, lineno: int) -> Task:
                    question, answer = str(row["question"]), str(row["answer"])
                    return Task(id=f"{name}/{{row.get('id', lineno)}}", env=self.name,
                                messages=[{{"role": "user", "content": question}}],
                                answer=answer, reference=f"<think></think>{{answer}}")

                def score(self, task: Task, completion: str) -> Score:
                    answer, reason = answer_part(completion, self.require_think)
                    if answer is None:
                        return Score(0.0, {{"format": 0.0}}, reason)
                    if answer != task.answer:
                        return Score(0.0, {{"format": 1.0}}, "wrong answer")
                    return Score(1.0, {{"format": 1.0}})
            ''',
        f"configs/{name}_tiny.yaml": f'''
            # rl train configs/{name}_tiny.yaml   (after: pip install -e .)
            run: {{name: {name}, steps: 20, checkpoint_every: 10}}
            rollout: {{max_new_tokens: 24}}
            grpo: {{prompts_per_step: 16, group_size: 8, lr: 1.0e-4, warmup_steps: 2}}
            environments:
              {name}: {{ratio: 1.0}}
            ''',
        f"tests/test_{name}.py": f'''
            from environments.registry import make_environment


            def test_reference_scores_one_and_wrong_scores_zero():
                env = make_environment("{name}", {{}})
                tasks = env.tasks("train")
                assert tasks
                for task in tasks:
                    assert env.score(task, task.reference).reward == 1.0
                    assert env.score(task, "<think></think>definitely wrong").reward == 0.0
            ''',
        "README.md": f'''
            # rl-env-{name.replace('_', '-')}

            The `{name}` environment for rl-posttrain.

                pip install -e .                 # registers '{name}' (see: rl env list)
                rl env check {name}              # every reference scores 1, a wrong answer 0
                pytest tests
                rl train configs/{name}_tiny.yaml
            ''',
    }
    rng = random.Random(name)
    words = sorted({"".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 5))) for _ in range(400)})
    rng.shuffle(words)
    for split, chunk in (("train", words[:-40]), ("test", words[-40:])):
        rows = [json.dumps({"id": f"{split}-{i}", "question": f"Reverse the letters of: {w}", "answer": w[::-1]})
                for i, w in enumerate(chunk)]
        files[f"{pkg}/data/{split}.jsonl"] = "\n".join(rows) + "\n"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip() if not rel.endswith(".jsonl") else text)
    return root


# Answers no task may reward: nothing, blank, an empty answer after the reasoning, and a
# megabyte of filler (each of these has been rewarded by some verifier somewhere).
HOSTILE_ANSWERS = {
    "empty": "",
    "whitespace": " \n\t \n",
    "empty answer": "<think>Let me think.</think>",
    "blank answer": "<think>Let me think.</think> \n ",
    "huge answer": "<think>ok</think>" + "yes, the answer " * 65_536,
}
HOSTILE_TASKS = 20
"""Tasks per split that get the hostile answers (the huge one takes time to score)."""


def check(name: str, options: dict | None = None, splits: tuple[str, ...] = ("train", "test"),
          limit: int | None = None, seed: int = 0) -> dict:
    """Load every split, score every reference (must be 1), a wrong answer and the
    hostile answers (must be the minimum reward), with timings."""
    env = make_environment(name, options or {})
    report: dict = {"env": name, "ok": True, "splits": {}}
    try:
        for split in splits:
            t0 = time.perf_counter()
            tasks = env.tasks(split)
            load_s = time.perf_counter() - t0
            if limit is not None and len(tasks) > limit:
                tasks = random.Random(seed).sample(tasks, limit)
            failures, times, no_ref = [], [], 0
            rng = random.Random(seed)
            for task in tasks:
                if task.reference is None:
                    no_ref += 1
                    continue
                t = time.perf_counter()
                if isinstance(env, MultiTurnEnvironment):
                    good = env.play(task, env.reference_turns(task))[0]
                else:
                    good = env.score(task, task.reference)
                times.append(time.perf_counter() - t)
                if good.reward != env.reference_reward(task):
                    failures.append({"task": task.id, "case": "reference", "reward": good.reward,
                                     "reason": good.reason})
                wrong = env.wrong_completion(task, rng.sample(tasks, min(len(tasks), 8)))
                t = time.perf_counter()
                bad = env.score(task, wrong)
                times.append(time.perf_counter() - t)
                if bad.reward != env.min_reward:
                    failures.append({"task": task.id, "case": "wrong answer", "reward": bad.reward,
                                     "completion": wrong[:200]})
            for task in tasks[:HOSTILE_TASKS]:
                for case, answer in HOSTILE_ANSWERS.items():
                    if isinstance(env, MultiTurnEnvironment):
                        got = env.play(task, [answer])[0]
                    else:
                        got = env.score(task, answer)
                    if got.reward != env.min_reward:
                        failures.append({"task": task.id, "case": case, "reward": got.reward})
            ids = [t.id for t in tasks]
            if len(set(ids)) != len(ids):
                failures.append({"case": "duplicate task ids", "count": len(ids) - len(set(ids))})
            report["splits"][split] = {
                "tasks": len(tasks), "load_s": round(load_s, 3), "without_reference": no_ref,
                "score_ms_mean": round(1000 * statistics.mean(times), 3) if times else None,
                "score_ms_max": round(1000 * max(times), 3) if times else None,
                "failures": len(failures), "examples": failures[:5],
            }
            if failures or not tasks:
                report["ok"] = False
        report["multi_turn"] = isinstance(env, MultiTurnEnvironment)
    finally:
        env.close()
    return report
