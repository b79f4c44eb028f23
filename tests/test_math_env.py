import time

import pytest

from environments.math import MathEnvironment
from verifiers.math import last_boxed, numbers_equal, split_reasoning


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
