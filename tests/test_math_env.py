import time

import pytest

from environments.math import MathEnvironment
from environments.math.verifier import last_boxed, numbers_equal, split_reasoning


@pytest.fixture(scope="module")
def env():
    e = MathEnvironment(train_size=2000, test_size=200, verify_timeout=3.0)
    yield e
    e.close()


def test_splits_are_disjoint_and_deterministic(env):
    train, test = env.tasks("train"), env.tasks("test")
    assert len(test) == 200 and len(train) == 2000
    assert not {t.id for t in train} & {t.id for t in test}
    assert [t.id for t in env.tasks("test")] == [t.id for t in test]
    assert {t.difficulty for t in train} == {1, 2, 3, 4, 5}


def test_reference_solutions_score_one_and_wrong_answers_zero(env):
    for task in env.tasks("test")[:50]:
        assert env.score(task, task.reference).reward == 1.0
        wrong = task.reference.replace(f"\\boxed{{{task.answer}}}", f"\\boxed{{{int(task.answer) + 1}}}")
        s = env.score(task, wrong)
        assert s.reward == 0.0 and s.reason == "wrong answer"


def test_format_failures_have_reasons(env):
    task = env.tasks("test")[0]
    assert env.score(task, f"\\boxed{{{task.answer}}}").reason.startswith("format")
    assert env.score(task, "<think>x</think>no box").reason.startswith("format")


def test_symbolic_equivalence(env):
    task = next(t for t in env.tasks("test") if t.answer == "12") if any(
        t.answer == "12" for t in env.tasks("test")) else None
    if task is None:
        pytest.skip("no task with answer 12")
    assert env.score(task, "<think></think>\\boxed{\\frac{24}{2}}").reward == 1.0
    assert env.score(task, "<think></think>\\boxed{2\\cdot 6}").reward == 1.0


def test_verifier_helpers():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{unclosed") is None
    assert split_reasoning("<think>r</think>a") == ("r", "a")
    assert numbers_equal("1,000", "1000") is True
    assert numbers_equal("0.5", "1/2") is True
    assert numbers_equal("x", "1") is None


@pytest.mark.parametrize("answer", ["9^9^9^9", "(" * 5000 + "1" + ")" * 5000, "x" * 10**6])
def test_hostile_answers_return_zero_within_the_limit(env, answer):
    task = env.tasks("test")[0]
    start = time.monotonic()
    s = env.score(task, f"<think></think>\\boxed{{{answer}}}")
    assert s.reward == 0.0 and s.reason
    assert time.monotonic() - start < env.verify_timeout + 5


# --- classes of verifier errors (issue 17), each against an independent sympy reference ---

def _ours(pred: str, gold: str) -> bool:
    from environments.math.verifier import refusal, symbolic_equal

    same = numbers_equal(pred, gold)
    if same is None:
        same = False if refusal(pred) else symbolic_equal(pred, gold)
    return same


def _reference(pred_py: str, gold_py: str) -> bool:
    """Independent of math-verify: sympy's Python-syntax parser and simplify."""
    import sympy
    from sympy.parsing.sympy_parser import parse_expr

    a, b = parse_expr(pred_py, evaluate=True), parse_expr(gold_py, evaluate=True)
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(
            sympy.simplify(x - y) == 0 for x, y in zip(a, b))
    return sympy.simplify(a - b) == 0


def _cases(seed: int = 0):
    """(answer as written, its Python form, gold as written, its Python form), by class."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(25):
        n = rng.randint(1000, 10**7)
        grouped = f"{n:,}"
        other = n + rng.choice([0, 0, 1, -10])
        out.append((grouped, str(n), str(other), str(other)))                               # 1,234,567
        out.append((grouped.replace(",", "\\,"), str(n), str(other), str(other)))            # 1\,234
        digits = [rng.randint(1, 9) for _ in range(3)]
        out.append((",".join(map(str, digits)), f"({','.join(map(str, digits))})",         # a list is no number
                    "".join(map(str, digits)), "".join(map(str, digits))))
        m, e = rng.randint(1, 99), rng.randint(-3, 6)
        gold = sympy_number(m, e, rng)
        out.append((f"{m}e{e}", f"{m}*10**({e})", gold, gold))                                 # not Euler's e
        a, b, c = (rng.randint(-9, 9) or 1 for _ in range(3))
        poly = f"{a}*x**2 + {b}*x + {c}"
        shuffled = f"{c} + {b}*x + {a}*x**2"
        wrong = f"{a + 1}*x**2 + {b}*x + {c}"
        latex = f"{a}x^2 + {b}x + {c}".replace("+ -", "- ")
        out.append((shuffled, shuffled, latex, poly))                                        # reordered terms
        out.append((wrong, wrong, latex, poly))                                              # wrong coefficient
        out.append((f"x**2 - {abs(c)}", f"x**2 - {abs(c)}", str(abs(c)), str(abs(c))))        # not a number
    return out


def sympy_number(m: int, e: int, rng) -> str:
    from fractions import Fraction

    value = Fraction(m) * Fraction(10) ** e
    if rng.random() < 0.3:
        value += 1
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"



def test_math_verifier_agrees_with_an_independent_sympy_reference():
    cases = _cases()
    disagreements = [(p, g) for p, p_py, g, g_py in cases if _ours(p, g) != _reference(p_py, g_py)]
    assert len(cases) >= 150
    assert not disagreements, disagreements[:10]


@pytest.mark.parametrize("answer", ["9^{9^{9^9}}", "2^{2^{100}}", "3^{123456}", "(10^5)^{10^5}", "12345!",
                                    "2**3**4**5"])
def test_exploding_forms_are_refused_before_sympy(answer):
    from environments.math.verifier import refusal

    env = MathEnvironment()
    try:
        task = env.tasks("test")[0]
        score = env.score(task, f"<think>x</think>\\boxed{{{answer}}}")
    finally:
        env.close()
    assert score.reward == 0.0 and score.reason.startswith("refused"), score
    assert refusal(answer)


@pytest.mark.parametrize("pred,gold,same", [
    ("1e3", "1000", True), ("2.5E-1", "1/4", True), ("12.5\\%", "12.5", True), ("5 dollars", "5", True),
    ("1{,}000", "1000", True), ("1,0000", "10000", False), ("1,2,3", "123", False), ("(1,2)", "(2,1)", False),
])
def test_number_formats(pred, gold, same):
    assert _ours(pred, gold) is same


def test_math_reads_task_files_with_their_line_on_errors(tmp_path):
    from environments.math.env import MathEnvironment

    good = tmp_path / "train.jsonl"
    good.write_text('{"question": "2+2?", "answer": 4}\n{"id": "q2", "question": "3*3?", "answer": "9", "level": 2}\n')
    env = MathEnvironment(data_files={"train": str(good)})
    a, b = env.tasks("train")
    assert (a.id, a.answer, a.messages[-1]["content"]) == ("math/train-1", "4", "2+2?")
    assert (b.id, b.difficulty) == ("q2", 2)
    assert env.score(a, "<think>2+2</think>\\boxed{4}").reward == 1.0
    assert len(env.tasks("test")) == 500  # no file for test: generated
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "2+2?", "answer": 4}\n{"question": "", "answer": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        MathEnvironment(data_files={"train": str(bad)}).tasks("train")
    env.close()


def _slow_start(seconds: float) -> None:
    time.sleep(seconds)


def test_a_checking_process_slow_to_start_does_not_use_up_the_checks_time():
    """A fresh child re-imports the parent's main module first (seconds where it imports CUDA
    torch): its start-up has its own limit, and the check's own limit starts once it is ready."""
    from verifiers.isolation import IsolatedRunner

    runner = IsolatedRunner(initializer=(_slow_start, (1.5,)))
    try:
        outcome = runner.call(numbers_equal, "12", "12.0", timeout=1.0)
        assert outcome.ok and outcome.value is True
        assert runner.restarts == 0
    finally:
        runner.close()
    runner = IsolatedRunner(initializer=(_slow_start, (30,)), start_timeout=1.0)
    try:
        outcome = runner.call(numbers_equal, "12", "12", timeout=60)
        assert not outcome.ok and outcome.error == "start timeout after 1s"
    finally:
        runner.close()
