"""Multiple choice: pick the letter of the right option.

Generated tasks (arithmetic with near-miss distractors, the largest of
several numbers, the word that comes first alphabetically), or task files
(JSON lines): ``{"question": ..., "choices": [...], "answer": "B" or 1}``.
The letter is read from the answer part only (``environments.mcq.verifier``).
"""

from __future__ import annotations

import random
from functools import partial

from environments.base import GeneratedEnvironment, Score, Task
from environments.mcq.verifier import extract_choice
from verifiers.text import answer_part

LETTERS = "ABCDEFGHIJ"
_WORDS = ["apple", "bridge", "candle", "delta", "ember", "forest", "garden", "harbor", "island", "jungle",
          "kettle", "lemon", "meadow", "nickel", "orbit", "pepper", "quartz", "river", "saddle", "tunnel"]


# Each generator returns the question, the options, the right one's index, and the step that
# finds it (a worked reference's reasoning).
def _arithmetic(rng: random.Random, operands: tuple[int, int]) -> tuple[str, list[str], int, str]:
    a, b = rng.randint(*operands), rng.randint(*operands)
    op = rng.choice("+-*")
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    wrong = rng.sample([d for d in range(-5, 6) if d], 3)
    options = [value] + [value + d for d in wrong]
    rng.shuffle(options)
    return f"What is {a}{op}{b}?", [str(o) for o in options], options.index(value), f"{a}{op}{b} = {value}"


def _largest(rng: random.Random) -> tuple[str, list[str], int, str]:
    nums = rng.sample(range(1, 200), 4)
    return "Which number is the largest?", [str(n) for n in nums], nums.index(max(nums)), f"{max(nums)} is the largest"


def _first_word(rng: random.Random) -> tuple[str, list[str], int, str]:
    words = rng.sample(_WORDS, 4)
    return ("Which word comes first in alphabetical order?", words, words.index(min(words)),
            f"{min(words)} comes first")


def make_task(env: str, question: str, choices: list[str], answer_index: int, task_id: str | None,
              explanation: str = "", difficulty: int = 0) -> Task:
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"need 2 to {len(LETTERS)} choices, got {len(choices)}")
    if not 0 <= answer_index < len(choices):
        raise ValueError(f"answer index {answer_index} out of range for {len(choices)} choices")
    lines = [question] + [f"{LETTERS[i]}) {c}" for i, c in enumerate(choices)]
    prompt = "\n".join(lines) + "\nAnswer with the letter of the correct option."
    letter = LETTERS[answer_index]
    return Task(id=f"{env}/{task_id or prompt}", env=env, messages=[{"role": "user", "content": prompt}],
                answer=letter, reference=f"<think>{explanation}</think>{letter}", difficulty=difficulty,
                meta={"letters": LETTERS[:len(choices)]})


def _answer_index(value, n: int) -> int:
    if isinstance(value, bool):
        raise ValueError("'answer' must be a letter or a 0-based index")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS[:n]:
        return LETTERS.index(value.strip().upper())
    raise ValueError(f"'answer' must be one of {list(LETTERS[:n])} or a 0-based index, got {value!r}")


def _operand_range(value) -> tuple[int, int]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and 0 <= value[0] <= value[1])
    if not ok:
        raise ValueError(f"environments.mcq.arithmetic_operands: expected [low, high] with 0 <= low <= high, got {value!r}")
    return value[0], value[1]


class MultipleChoiceEnvironment(GeneratedEnvironment):
    name = "mcq"

    def __init__(self, train_size: int = 5000, test_size: int = 300, seed: int = 1234,
                 test_fraction: float = 0.1, require_think: bool = True, data_files: dict[str, str] | None = None,
                 worked: bool = False, arithmetic_operands: tuple[int, int] = (2, 40)):
        """``worked``: generated tasks' references (the warm-up's data) write the step that picks
        the option in the think block, ``<think>23*10 = 230</think>D``, instead of leaving it
        empty, where the model must pick the letter in one forward pass. Measured with it
        (configs/grpo_mcq_tiny.yaml): RL raises the number and word questions by 0.10-0.12, and
        the 1.2M-parameter model stays at chance on the arithmetic, as it does without it
        (docs/experiments.md section 2.4).

        ``arithmetic_operands``: the smallest and largest operand of the arithmetic questions,
        their difficulty (``[2, 9]``: single digits, ``23*10`` needs ``[2, 40]``). The other
        kinds and the mix of kinds do not change with it. Tasks are told apart by their whole
        prompt, so with few operands the test split asks sums the train split also asks, with
        other options: held-out pass@1 then measures picking the option, not computing new sums.
        Measured with ``[2, 9]`` and ``worked`` (session 15, docs/experiments.md section 2.4): the warm-up writes
        the right value in 48% of the sums (21% with ``[2, 40]``), but its letter names the
        option holding the value it wrote in only 22%, and RL on the letter alone erodes the
        written value (8% after 150 steps): +0.027 in all, against +0.085 with ``[2, 40]``."""
        operands = _operand_range(arithmetic_operands)
        super().__init__(train_size, test_size, seed, test_fraction, require_think, data_files)
        self.worked = worked
        self.kinds = [(partial(_arithmetic, operands=operands), 2), (_largest, 1), (_first_word, 1)]
        """The generators, in the order that decides the task sets, with their tasks' ``difficulty``:
        1 where the answer can be read off the options, 2 where it must be computed."""

    def generate(self, rng: random.Random) -> Task:
        make, difficulty = rng.choice(self.kinds)
        question, choices, index, working = make(rng)
        return make_task(self.name, question, choices, index, None, working if self.worked else "", difficulty)

    def task_from_row(self, row: dict, default_id: str) -> Task:
        choices = row["choices"]
        if not isinstance(row["question"], str) or not isinstance(choices, list):
            raise ValueError("'question' must be a string and 'choices' a list")
        return make_task(self.name, row["question"], [str(c) for c in choices],
                         _answer_index(row["answer"], len(choices)), str(row.get("id", default_id)),
                         str(row.get("explanation", "")))

    def score(self, task: Task, completion: str) -> Score:
        answer, reason = answer_part(completion, self.require_think)
        if answer is None:
            return Score(0.0, {"format": 0.0}, reason)
        letter = extract_choice(answer, task.meta.get("letters", LETTERS))
        if letter is None:
            return Score(0.0, {"format": 0.0}, "format: no single choice letter in the answer")
        return Score(float(letter == task.answer), {"format": 1.0}, None if letter == task.answer else "wrong choice")
