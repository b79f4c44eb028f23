"""Training the judge itself (docs/recipe.md section 4): a task is a conversation
with two answers and their ground-truth judgement; the judge's completion
earns ``R = -C1*[format invalid] - |P_h1 - G_h1| - |P_h2 - G_h2| - C2*|P_r - G_r|``
(0 is perfect). Every labelled pair is also used with the answers swapped.

Pairs come from JSON-lines files (``data_files``: rows with
``conversation`` (messages) or ``prompt`` (text), ``response_1``,
``response_2``, ``score_1``, ``score_2``, ``ranking``), or from the built-in
synthetic preference task (``reward_models.synthetic``: math questions,
correct answers preferred, shorter preferred among correct;
``pairs_per_question`` pairs per question, since single-digit arithmetic has
fewer than 200 distinct questions).

A judge trained on made-up answers alone misjudges the answers of the policy it
then judges (docs/recipe.md section 4): ``policy_answers`` is a JSON-lines file of
a policy's own sampled answers, rows ``{"question", "answer", "reference",
"completions": [texts]}`` (``benchmarks/rlhf_synthetic.py`` writes one); each
question adds up to ``policy_pairs_per_question`` labelled pairs of its
completions to the training split, labelled by the same rule (the math
verifier on the whole completion, the length of the answer the judge reads).

Optional reasoning for the judge's warm-up (its SFT reference becomes
``<think>{analysis} 1: {notes[0]} 2: {notes[1]}</think>{json}``): ``analysis``
(text about the conversation) and ``notes`` (one text per response, in the
row's order; a swapped pair swaps them too). The synthetic pairs carry both:
the worked arithmetic, then each answer's value and verdict.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from environments.base import Environment, Score, Task, read_jsonl
from environments.math.env import MathEnvironment
from reward_models.genrm import Judgement, judge_reward, swapped
from reward_models.judge import judge_messages
from reward_models.group_reward import reasoning_and_answer
from reward_models.synthetic import labelled_pairs, policy_pairs


class GenRMJudgeEnvironment(Environment):
    name = "genrm"
    max_reward = 0.0

    def __init__(self, data_files: dict[str, str] | None = None, math_levels: list[int] = (1,),
                 train_size: int = 4000, test_size: int = 200, seed: int = 0, c1: float = 10.0, c2: float = 1.0,
                 swap: bool = True, require_think: bool = False, pairs_per_question: int = 1,
                 policy_answers: str | None = None, policy_pairs_per_question: int = 16):
        self.data_files = data_files or {}
        self.math = MathEnvironment(levels=list(math_levels), train_size=train_size, test_size=test_size, seed=seed)
        self.seed, self.c1, self.c2, self.swap, self.require_think = seed, c1, c2, swap, require_think
        if pairs_per_question < 1:
            raise ValueError(f"environments.genrm.pairs_per_question: expected >= 1, got {pairs_per_question}")
        if policy_pairs_per_question < 1:
            raise ValueError(f"environments.genrm.policy_pairs_per_question: expected >= 1, got {policy_pairs_per_question}")
        self.pairs_per_question = pairs_per_question
        self.policy_answers, self.policy_pairs_per_question = policy_answers, policy_pairs_per_question
        self.min_reward = -c1  # an invalid judgement

    def tasks(self, split: str) -> list[Task]:
        if split in self.data_files:
            path = self.data_files[split]
            tasks = read_jsonl(path, lambda row, lineno: self.task_from_row(row, f"{Path(path).stem}-{lineno}"))
        else:
            rows = labelled_pairs(self.math.tasks(split), random.Random(f"{self.seed}-{split}"), self.pairs_per_question)
            tasks = [self.task_from_row(row, row["id"]) for row in rows]
        if split == "train" and self.policy_answers:
            tasks += self.policy_tasks(self.policy_answers)
        if self.swap:
            tasks += [self.swapped(t) for t in tasks]
        return tasks

    def policy_tasks(self, path: str) -> list[Task]:
        """Labelled pairs of a policy's own answers (``policy_answers``), in the file's order."""
        return [t for question in read_jsonl(path, self._policy_pairs) for t in question]

    def _policy_pairs(self, row: dict, lineno: int) -> list[Task]:
        completions = row.get("completions")
        if not (isinstance(completions, list) and all(isinstance(c, str) for c in completions)):
            raise ValueError(f"'completions' must be a list of strings, got {completions!r}")
        question = self.math.task_from_row(row, f"policy-{lineno}")
        if not question.reference:
            raise ValueError("'reference' (the worked solution the judge's reasoning starts from) is required")
        answers = [(self.math.score(question, c).reward >= 1, reasoning_and_answer(c)[1]) for c in completions]
        rng = random.Random(f"{self.seed}-policy-{lineno}")
        return [self.task_from_row(r, r["id"]) for r in policy_pairs(question, answers, rng, self.policy_pairs_per_question)]

    def task_from_row(self, row: dict, default_id: str) -> Task:
        if "conversation" in row:
            conversation = row["conversation"]
            if not (isinstance(conversation, list) and all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in conversation)):
                raise ValueError("'conversation' must be a list of {role, content} messages")
        else:
            conversation = [{"role": "user", "content": str(row["prompt"])}]
        truth = Judgement(row["score_1"], row["score_2"], row["ranking"])
        for key, value, hi in (("score_1", truth.score_1, 5), ("score_2", truth.score_2, 5), ("ranking", truth.ranking, 6)):
            if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= hi):
                raise ValueError(f"'{key}' must be an integer in 1..{hi}, got {value!r}")
        analysis, notes = row.get("analysis"), row.get("notes")
        if analysis is not None and not isinstance(analysis, str):
            raise ValueError(f"'analysis' must be a string, got {analysis!r}")
        if notes is not None and not (isinstance(notes, list) and len(notes) == 2
                                      and all(isinstance(n, str) for n in notes)):
            raise ValueError(f"'notes' must be a list of two strings (one per response), got {notes!r}")
        return self._task(str(row.get("id", default_id)), conversation,
                          [str(row["response_1"]), str(row["response_2"])], truth, analysis, notes)

    def _task(self, task_id: str, conversation: list[dict], responses: list[str], truth: Judgement,
              analysis: str | None, notes: list[str] | None) -> Task:
        reference = _as_json(truth)
        if analysis is not None or notes is not None:
            said = " ".join(f"{i}: {n}" for i, n in enumerate(notes or [], start=1))
            reference = f"<think>{' '.join(x for x in (analysis, said) if x)}</think>{reference}"
        return Task(id=task_id, env=self.name, messages=judge_messages(conversation, *responses),
                    answer={"score_1": truth.score_1, "score_2": truth.score_2, "ranking": truth.ranking},
                    reference=reference,
                    meta={"conversation": conversation, "responses": responses, "analysis": analysis, "notes": notes})

    def swapped(self, task: Task) -> Task:
        notes = task.meta["notes"]
        return self._task(f"{task.id}-swapped", task.meta["conversation"], task.meta["responses"][::-1],
                          swapped(Judgement(**task.answer)), task.meta["analysis"], notes[::-1] if notes else None)

    def score(self, task: Task, completion: str) -> Score:
        truth = Judgement(**task.answer)
        reward, predicted = judge_reward(completion, truth, self.c1, self.c2, self.require_think)
        if predicted is None:
            return Score(reward, {"format_valid": 0.0}, reason="format: not a valid judgement JSON")
        return Score(reward, {"format_valid": 1.0, "h1_error": abs(predicted.score_1 - truth.score_1),
                              "h2_error": abs(predicted.score_2 - truth.score_2),
                              "ranking_error": abs(predicted.ranking - truth.ranking),
                              "preference_right": float((predicted.ranking <= 3) == (truth.ranking <= 3))},
                     reason=None if reward == 0 else "judgement differs from the label")

    def wrong_completion(self, task: Task, others: list[Task]) -> str:
        return '{"score_1": 3}'

    def close(self) -> None:
        self.math.close()


def _as_json(j: Judgement) -> str:
    return json.dumps({"score_1": j.score_1, "score_2": j.score_2, "ranking": j.ranking})
