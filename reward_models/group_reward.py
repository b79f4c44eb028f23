"""The RLHF reward as a stage of the rollout: groups in, judged rewards out.

``GenRMReward`` replaces the scores of each group of an environment with
``reward: genrm`` (docs/recipe.md sections 4-5): the judge compares the
group's answers in a circle (N calls for N answers), ``base_rewards`` turns
the judgements into one base reward per answer, and group-relative length
control (when on) moves reward from long to short answers, zero-sum within
the group. The verifier's own reward stays in the components as
``verifier`` (its components as ``verifier/<name>``), so the environment's
ground truth is logged next to what the judge gave.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from environments.base import Score
from reward_models.genrm import (base_rewards, circle, length_control, oracle_judgement, tied_throughout,
                                 verifier_agreement)
from reward_models.judge import judge_messages
from verifiers.text import split_reasoning


@dataclass
class JudgeStats:
    """Counters of the judged groups; they add up over a step's rounds."""

    calls: float = 0.0
    """Judge generations, retries included."""
    retries: float = 0.0
    failures: float = 0.0
    """Comparisons whose judgement never parsed."""
    responses: float = 0.0
    """Answers judged."""
    unscored: float = 0.0
    """Answers left without a base reward (every comparison of theirs failed)."""
    bonuses: float = 0.0
    """Answers given length control's bonus."""
    seconds: float = 0.0
    groups: float = 0.0
    compared: float = 0.0
    """Against the environment's own reward (``genrm.verifier_agreement``):
    comparisons of answers it ranks apart, ..."""
    agreed: float = 0.0
    """... those the judge ordered the same way, ..."""
    tied: float = 0.0
    """... comparisons of answers it scores equal, ..."""
    tie_spread: float = 0.0
    """... the judge's |s1 - s2| summed over those, ..."""
    noise_groups: float = 0.0
    """... and groups it scores all equal that the judge did not."""

    def __add__(self, other: JudgeStats) -> JudgeStats:
        return JudgeStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def metrics(self) -> dict[str, float]:
        responses = max(self.responses, 1.0)
        m = {"judge/calls": self.calls, "judge/retries": self.retries, "judge/failures": self.failures,
             "rlhf/unscored_frac": self.unscored / responses, "rlhf/bonus_frac": self.bonuses / responses,
             "rlhf/verifier_tied_frac": self.tied / max(self.tied + self.compared, 1.0),
             "rlhf/noise_groups_frac": self.noise_groups / max(self.groups, 1.0)}
        if self.compared:
            m["rlhf/judge_agreement"] = self.agreed / self.compared
        if self.tied:
            m["rlhf/tie_spread"] = self.tie_spread / self.tied
        return m


def reasoning_and_answer(completion: str) -> tuple[str, str]:
    """The reasoning ('' when absent) and the stripped answer the judge reads."""
    reasoning, answer = split_reasoning(completion)
    return reasoning or "", answer.strip()


class GenRMReward:
    """``stage(groups)`` rescores the groups in place and returns its ``JudgeStats``.

    ``judge``: anything with ``judge(prompts) -> (judgements, counters)`` (the
    ``Judge`` worker or its actor), or None for the oracle (``rlhf.oracle_judge``:
    ``genrm.oracle_judgement`` of the environment's own rewards); ``decode``: token ids to text;
    ``length``: the ``rlhf.length_control`` config section; ``tied_groups``:
    ``rlhf.tied_groups`` ("equal": a group the judge ties throughout gets equal
    base rewards; "tie_rule": the recipe's tie rule ranks it)."""

    def __init__(self, judge, decode, length, tied_groups: str = "tie_rule", seed: int = 0, samples: int = 1):
        """``samples``: rounds of the circle per group (``rlhf.judge.samples``): each comparison
        judged that many times, each response's base reward the mean of 2 x ``samples`` scores."""
        self.judge, self.decode, self.length, self.tied_groups = judge, decode, length, tied_groups
        self.samples = samples
        self.rng = random.Random(seed)  # the oracle's rankings of equal answers

    def __call__(self, groups: list) -> JudgeStats:
        if not groups:
            return JudgeStats()
        lc = self.length
        parts = [[reasoning_and_answer(self.decode(c.token_ids)) for c in gr.completions] for gr in groups]
        if self.judge is None:
            judgements = [oracle_judgement(gr.scores[a].reward, gr.scores[b].reward, self.rng)
                          for gr in groups for a, b in circle(len(gr.completions), self.samples)]
            counters = {"judge/calls": 0.0, "judge/retries": 0.0, "judge/failures": 0.0}
        else:
            prompts = [judge_messages(gr.task.messages, p[a][1], p[b][1])
                       for gr, p in zip(groups, parts) for a, b in circle(len(p), self.samples)]
            judgements, counters = self.judge.judge(prompts)
        unscored, bonuses, start = 0, 0, 0
        against = JudgeStats()
        for gr, p in zip(groups, parts):
            n = len(p)
            judged = judgements[start:start + n * self.samples]
            base, missing = base_rewards(n, judged)
            if self.tied_groups == "equal" and tied_throughout(judged):
                base = [sum(base) / n] * n
            against += JudgeStats(**verifier_agreement(judged, base, [s.reward for s in gr.scores]))
            start += n * self.samples
            unscored += missing
            think = [len(r) for r, _ in p]
            answer = [len(a) for _, a in p]
            if lc.enabled:
                out = length_control(base, think, answer, lc.lam_think, lc.lam_answer, lc.bonus, lc.bonus_percentile)
                rewards, adj = out.rewards, list(zip(out.think_adjustment, out.answer_adjustment, out.bonus))
                bonuses += sum(b > 0 for b in out.bonus)
            else:
                rewards, adj = base, [(0.0, 0.0, 0.0)] * n
            gr.scores = [Score(r, {"base": b, "think_adjustment": ta, "answer_adjustment": aa, "bonus": bo,
                                   "verifier": s.reward, "think_chars": float(th), "answer_chars": float(an),
                                   **{f"verifier/{k}": v for k, v in s.components.items()}})
                         for r, b, (ta, aa, bo), s, th, an in zip(rewards, base, adj, gr.scores, think, answer)]
        return against + JudgeStats(calls=counters["judge/calls"], retries=counters["judge/retries"],
                                    failures=counters["judge/failures"], responses=float(sum(len(p) for p in parts)),
                                    unscored=float(unscored), bonuses=float(bonuses), groups=float(len(groups)))
