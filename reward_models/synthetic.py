"""A synthetic preference task whose truth is known in code, for testing the
RLHF stage end to end: on math questions, a correct answer is preferred to a
wrong one, and among correct answers the shorter one.

``preference`` labels a pair the way a careful annotator following that rule
would; ``true_score`` is the same rule as a number per response (what an
RLHF run should raise); ``labelled_pairs`` makes judge-training rows from
made-up answers, ``policy_pairs`` from answers a policy sampled (so the judge
learns the mistakes of the policy it will judge, not only made-up ones).
"""

from __future__ import annotations

import itertools
import random

from reward_models.genrm import Judgement, ranking_of

SHORT_ANSWER_CHARS = 16
"""An answer (after the reasoning) of at most this many characters is short."""
MAX_QUOTED_CHARS = 24
"""A note quotes at most this many characters of an answer without a boxed value."""
FILLERS = ["", "", " Done.", " That is the result.", " I checked it twice, so this is the final answer."]


def helpfulness(correct: bool, length: int, short: int = SHORT_ANSWER_CHARS) -> int:
    """5: correct and short; 4: correct and long; 1: wrong."""
    if not correct:
        return 1
    return 5 if length <= short else 4


def true_score(correct: bool, length: int, short: int = SHORT_ANSWER_CHARS) -> float:
    """The truth as a number in [0, 1]: 1 correct and short, 0.75 correct and long, 0 wrong."""
    return (helpfulness(correct, length, short) - 1) / 4


def preference(correct_1: bool, len_1: int, correct_2: bool, len_2: int, rng: random.Random) -> Judgement:
    h1, h2 = helpfulness(correct_1, len_1), helpfulness(correct_2, len_2)
    return Judgement(h1, h2, ranking_of(h1, h2, rng))


def answer_text(value: str, filler: str) -> str:
    return f"\\boxed{{{value}}}{filler}"


def wrong_value(gold: str, rng: random.Random) -> str:
    try:
        n = int(gold)
    except ValueError:
        return gold + "1"
    return str(n + rng.choice([-3, -2, -1, 1, 2, 3, 10]))


def note(value: str, gold: str, correct: bool, length: int, short: int = SHORT_ANSWER_CHARS) -> str:
    """What the judge's reasoning says about one answer: its value next to the
    worked result (so the comparison is between neighbouring characters, not
    across the prompt), then the verdict."""
    if not correct:
        return f"{value} vs {gold}: wrong"
    return f"{value} vs {gold}: right, {'short' if length <= short else 'long'}"


def quoted_value(answer: str) -> str:
    """What a note quotes of an answer: its last boxed value, else the answer itself."""
    from environments.math.verifier import last_boxed

    value = last_boxed(answer)
    return (value if value is not None else answer).strip()[:MAX_QUOTED_CHARS]


def labelled_row(row_id: str, task, answers: list[tuple[bool, str, str]], rng: random.Random) -> dict:
    """A judge-training row for two answers to a math task, each (correct, quoted value, answer text),
    with the reasoning a careful judge writes first (the task's worked steps, then a note per answer)."""
    from verifiers.text import split_reasoning

    (c1, v1, a1), (c2, v2, a2) = answers
    j = preference(c1, len(a1), c2, len(a2), rng)
    return {"id": row_id, "conversation": task.messages, "response_1": a1, "response_2": a2,
            "score_1": j.score_1, "score_2": j.score_2, "ranking": j.ranking,
            "analysis": split_reasoning(task.reference or "")[0] or "",
            "notes": [note(v1, task.answer, c1, len(a1)), note(v2, task.answer, c2, len(a2))]}


def policy_pairs(task, answers: list[tuple[bool, str]], rng: random.Random, per_task: int) -> list[dict]:
    """Up to ``per_task`` labelled pairs of a policy's own answers to one math task, each answer
    (correct, answer text) as the judge reads it (after the reasoning). Pairs whose answers differ
    in helpfulness come first (right against wrong, short against long: what the judge must
    order), then equally good pairs; each answer's note quotes its boxed value."""
    quoted = [(correct, quoted_value(text), text) for correct, text in answers]
    pairs = [(a, b) for a in range(len(quoted)) for b in range(a + 1, len(quoted))
             if quoted[a][2] != quoted[b][2]]
    rng.shuffle(pairs)
    differ = [helpfulness(quoted[a][0], len(quoted[a][2])) != helpfulness(quoted[b][0], len(quoted[b][2]))
              for a, b in pairs]
    pairs = [p for p, d in zip(pairs, differ) if d] + [p for p, d in zip(pairs, differ) if not d]
    return [labelled_row(f"policy-{task.id}-{k}", task, [quoted[a], quoted[b]][::rng.choice([1, -1])], rng)
            for k, (a, b) in enumerate(pairs[:per_task])]


def labelled_pairs(tasks: list, rng: random.Random, per_task: int = 1) -> list[dict]:
    """``per_task`` labelled pairs per math task: two answers, each right or
    wrong, short or padded, with the reasoning a careful judge writes first
    (the task's worked steps, then a note per answer)."""
    rows = []
    for t, k in itertools.product(tasks, range(per_task)):
        answers = []
        for _ in range(2):
            correct = rng.random() < 0.5
            value = t.answer if correct else wrong_value(t.answer, rng)
            answers.append((correct, value, answer_text(value, rng.choice(FILLERS))))
        rows.append(labelled_row(f"pair-{t.id}" + (f"-{k}" if k else ""), t, answers, rng))
    return rows
