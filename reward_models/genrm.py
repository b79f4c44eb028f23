"""GenRM circular comparison and group-relative length control
(docs/recipe.md sections 4 and 5), as pure functions.

The judge sees a conversation and two final answers and answers JSON
``{"score_1": h1, "score_2": h2, "ranking": r}`` with helpfulness h in 1..5
and ranking r in 1..6 (1-3: the first is better, by decreasing margin;
4-6: the second is better, by increasing margin).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

from verifiers.text import answer_part

MAX_JUDGEMENT_CHARS = 2000


@dataclass(frozen=True)
class Judgement:
    score_1: int
    score_2: int
    ranking: int


def parse_judgement(completion: str, require_think: bool = False) -> Judgement | None:
    """Strict: the answer part must be exactly one JSON object with the three
    integer fields in range (extra keys, fences, floats, booleans: None)."""
    answer, _ = answer_part(completion, require_think)
    if answer is None or len(answer) > MAX_JUDGEMENT_CHARS:
        return None
    try:
        obj = json.loads(answer)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or set(obj) != {"score_1", "score_2", "ranking"}:
        return None
    h1, h2, r = obj["score_1"], obj["score_2"], obj["ranking"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h1, h2, r)):
        return None
    if not (1 <= h1 <= 5 and 1 <= h2 <= 5 and 1 <= r <= 6):
        return None
    return Judgement(h1, h2, r)


def ranking_of(h1: int, h2: int, rng: random.Random) -> int:
    """The ranking a judge that agrees with helpfulness h1, h2 gives: the margin's size sets
    1-3 (the first better) or 4-6 (the second better); equal answers get 3 or 4 at random."""
    d = h1 - h2
    if d == 0:
        return rng.choice([3, 4])
    if d > 0:
        return 1 if d >= 3 else (2 if d == 2 else 3)
    return 6 if d <= -3 else (5 if d == -2 else 4)


def oracle_judgement(reward_1: float, reward_2: float, rng: random.Random) -> Judgement:
    """What an error-free judge answers for two responses whose environment rewards (in [0, 1])
    are ``reward_1`` and ``reward_2``: helpfulness 1 + 4 * reward (rounded), the ranking
    ``ranking_of`` gives. On the synthetic preference task this is the judge's training label
    (1 wrong, 4 correct and long, 5 correct and short)."""
    h1, h2 = (min(5, max(1, 1 + round(4 * r))) for r in (reward_1, reward_2))
    return Judgement(h1, h2, ranking_of(h1, h2, rng))


def circular_pairs(n: int) -> list[tuple[int, int]]:
    """(i, i+1 mod n) for i = 0..n-1: n comparisons, each response twice, once in each position."""
    if n < 2:
        raise ValueError(f"circular comparison needs at least 2 responses, got {n}")
    return [(i, (i + 1) % n) for i in range(n)]


def circle(n: int, rounds: int = 1) -> list[tuple[int, int]]:
    """The pairs of ``rounds`` rounds of the circle, one after the other."""
    return circular_pairs(n) * rounds


def tie_adjusted(j: Judgement) -> tuple[float, float]:
    """Scores after the tie rule: if h1 == h2, h1 += 3.5 - r and h2 += r - 3.5."""
    h1, h2 = float(j.score_1), float(j.score_2)
    if j.score_1 == j.score_2:
        return h1 + 3.5 - j.ranking, h2 + j.ranking - 3.5
    return h1, h2


def base_rewards(n: int, judgements: list[Judgement | None]) -> tuple[list[float], int]:
    """Base reward of each response: the mean of its adjusted scores (two per round of the circle).

    ``judgements[i]`` is the comparison ``circular_pairs(n)[i % n]`` (one or more rounds
    of the circle: ``rlhf.judge.samples``) or None when it failed (dropped; the response
    keeps its other scores). A response with no score left gets the mean of the others
    (advantage 0: no signal either way), or 0 when nothing in the group was judged.
    Returns the rewards and the number of responses left without a score.
    """
    if not judgements or len(judgements) % n:
        raise ValueError(f"expected a multiple of {n} judgements (rounds of the circle), got {len(judgements)}")
    scores: list[list[float]] = [[] for _ in range(n)]
    for (a, b), j in zip(circle(n, len(judgements) // n), judgements):
        if j is not None:
            s1, s2 = tie_adjusted(j)
            scores[a].append(s1)
            scores[b].append(s2)
    known = [sum(s) / len(s) for s in scores if s]
    fallback = sum(known) / len(known) if known else 0.0
    return [sum(s) / len(s) if s else fallback for s in scores], sum(1 for s in scores if not s)


def tied_throughout(judgements: list[Judgement | None]) -> bool:
    """True when the judge gave equal helpfulness (h1 == h2) in every valid comparison of a
    group (and there is one): it found no difference, and only the tie rule's rankings
    (+-0.5 each) would tell the answers apart."""
    valid = [j for j in judgements if j is not None]
    return bool(valid) and all(j.score_1 == j.score_2 for j in valid)


def verifier_agreement(judgements: list[Judgement | None], base: list[float],
                       verifier: list[float]) -> dict[str, float]:
    """How the judge's circular comparisons of one group (and the ``base``
    rewards ``base_rewards`` made of them) sit against the environment's own
    rewards ``verifier`` (where it has a ground truth):

    - ``compared``: valid comparisons of answers the verifier ranks apart;
      ``agreed``: of those, the ones whose tie-adjusted scores order the pair
      the same way (a judge error is a comparison compared but not agreed);
    - ``tied``: valid comparisons of answers the verifier scores equal;
      ``tie_spread``: the sum over them of |s1 - s2| after the tie rule (what
      the judge invents between equal answers: 1.0 per comparison for a
      ranking of 3 or 4 with equal helpfulness);
    - ``noise_groups``: 1 when the verifier scores the whole group equal but
      the base rewards differ (GRPO then trains on the judge's noise alone).

    The keys are ``JudgeStats`` fields: the counts add up over groups.
    """
    out = {"compared": 0.0, "agreed": 0.0, "tied": 0.0, "tie_spread": 0.0}
    for (a, b), j in zip(circle(len(verifier), len(judgements) // len(verifier)), judgements):
        if j is None:
            continue
        s1, s2 = tie_adjusted(j)
        if verifier[a] == verifier[b]:
            out["tied"] += 1
            out["tie_spread"] += abs(s1 - s2)
        else:
            out["compared"] += 1
            out["agreed"] += float((s1 - s2) * (verifier[a] - verifier[b]) > 0)
    out["noise_groups"] = float(len(set(verifier)) == 1 and max(base) - min(base) > 1e-9)
    return out


# ------------------------------------------------------- length control


def _shortness(lengths: list[int]) -> list[float]:
    """w_i = 1 - (len_i - min) / (max - min); all 0 when the lengths are equal."""
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(lengths)
    return [1.0 - (x - lo) / (hi - lo) for x in lengths]


def _centred(w: list[float]) -> list[float]:
    mean = sum(w) / len(w)
    return [x - mean for x in w]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 1]."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _shortest_nonempty(lengths: list[int]) -> int | None:
    candidates = [i for i, x in enumerate(lengths) if x > 0]
    return min(candidates, key=lambda i: (lengths[i], i)) if candidates else None


@dataclass
class LengthControlled:
    rewards: list[float]
    think_adjustment: list[float]
    answer_adjustment: list[float]
    bonus: list[float]


def length_control(base: list[float], think_lengths: list[int], answer_lengths: list[int],
                   lam_think: float = 0.5, lam_answer: float = 0.5, bonus: float = 0.5,
                   bonus_percentile: float = 0.8) -> LengthControlled:
    """R_i = base_i + lam_think * w~think_i + lam_answer * w~answer_i (+ conciseness bonus).

    The length terms are centred per group (they sum to zero). The response
    with the shortest non-empty reasoning, and the one with the shortest
    non-empty answer, each get ``bonus`` only if their base reward is at
    least the group's ``bonus_percentile`` percentile.
    """
    n = len(base)
    if not (len(think_lengths) == len(answer_lengths) == n):
        raise ValueError("base, think_lengths and answer_lengths must have the same length")
    think = [lam_think * w for w in _centred(_shortness(think_lengths))]
    answer = [lam_answer * w for w in _centred(_shortness(answer_lengths))]
    given = [0.0] * n
    if bonus:
        gate = percentile(base, bonus_percentile)
        for lengths in (think_lengths, answer_lengths):
            i = _shortest_nonempty(lengths)
            if i is not None and base[i] >= gate:
                given[i] += bonus
    rewards = [b + t + a + g for b, t, a, g in zip(base, think, answer, given)]
    return LengthControlled(rewards, think, answer, given)


# ------------------------------------------------ training the judge


def judge_reward(completion: str, truth: Judgement, c1: float = 10.0, c2: float = 1.0,
                 require_think: bool = False) -> tuple[float, Judgement | None]:
    """R = -C1*[format invalid] - |P_h1 - G_h1| - |P_h2 - G_h2| - C2*|P_r - G_r| (an invalid answer: -C1)."""
    p = parse_judgement(completion, require_think)
    if p is None:
        return -c1, None
    return -(abs(p.score_1 - truth.score_1) + abs(p.score_2 - truth.score_2)
             + c2 * abs(p.ranking - truth.ranking)), p


def swapped(j: Judgement) -> Judgement:
    """The same pair with the responses exchanged: h1 <-> h2, r -> 7 - r."""
    return Judgement(j.score_2, j.score_1, 7 - j.ranking)
