"""Instruction following: IFEval-style prompts with verifiable constraints.

Tasks are generated: a short writing request plus 1-3 compatible
constraints (27 types, see ``environments.ifeval.verifier``), each with a reference
response built to satisfy them (and checked to, before the task is kept).
Task files (JSON lines) work too: ``{"prompt": ..., "constraints":
[{"type": ..., ...}], "reference": ...}``.

Reward (``mode``): ``strict`` 1 when every constraint holds as written,
``loose`` 1 when every constraint holds on one of IFEval's loose variants.
Components: ``strict``, ``loose``, ``strict_fraction``, ``loose_fraction``.
"""

from __future__ import annotations

import json
import random

from environments.base import GeneratedEnvironment, Score, Task
from environments.ifeval import verifier as ifeval
from verifiers.text import answer_part

TOPICS = ["the sea", "a quiet town", "winter mornings", "a small garden", "old maps", "a train ride",
          "the moon", "rainy days", "a mountain lake", "city parks", "a bakery", "the desert",
          "a library", "summer storms", "a lighthouse", "forest paths", "a market", "river boats"]
_ADJ = ["calm", "bright", "cold", "green", "old", "quiet", "soft", "warm", "wide", "tall", "dark", "slow"]
_NOUN = ["wind", "light", "stone", "water", "road", "tree", "sky", "bird", "field", "sound", "cloud", "door"]
_VERB = ["moves", "rests", "waits", "turns", "shines", "grows", "stays", "falls", "drifts", "sings"]
_PLACE = ["near the hill", "by the shore", "over the roofs", "in the valley", "at dawn", "after noon",
          "under the bridge", "along the wall"]
KEYWORDS = ["harbor", "lantern", "journey", "silver", "memory", "orchard", "whisper", "meadow", "echo", "ember"]
PHRASES = ["Here is my answer", "Let me describe it", "Picture this", "In short"]
END_PHRASES = ["Is there anything else I can help with?", "That is all.", "Thank you for reading."]
CAPS = ["NOTE", "KEY", "MUST", "ALWAYS", "VERY", "TRUE"]
PLACEHOLDERS = ["[name]", "[date]", "[address]", "[city]", "[time]"]
LETTERS = list("aeinorst")


def _sentence(rng: random.Random, banned: set[str]) -> list[str]:
    pick = lambda xs: rng.choice([x for x in xs if x not in banned])  # noqa: E731
    return ["the", pick(_ADJ), pick(_NOUN), pick(_VERB), *pick(_PLACE).split()]


def _cap(words: list[str]) -> str:
    """A sentence from words: first letter upper-cased, the rest as written, a full stop."""
    text = " ".join(words)
    return text[:1].upper() + text[1:] + "."


def _sample_params(kind: str, rng: random.Random, request: str) -> dict:
    """Random parameters for one constraint type (feasible for the renderer)."""
    r = rng.randint
    return {
        "word_count_at_least": lambda: {"n": r(10, 60)},
        "word_count_at_most": lambda: {"n": r(45, 120)},
        "sentence_count_at_least": lambda: {"n": r(2, 6)},
        "sentence_count_at_most": lambda: {"n": r(3, 6)},
        "paragraphs": lambda: {"n": r(2, 4)},
        "paragraph_first_word": lambda: (lambda n: {"n": n, "i": r(1, n), "word": rng.choice(_NOUN)})(r(2, 4)),
        "bullet_points": lambda: {"n": r(2, 5)},
        "sections": lambda: {"n": r(2, 3)},
        "keywords": lambda: {"words": rng.sample(KEYWORDS, r(1, 2))},
        "keyword_frequency": lambda: {"word": rng.choice(KEYWORDS), "n": r(2, 4)},
        "forbidden_words": lambda: {"words": rng.sample(_NOUN, r(1, 2))},
        "letter_frequency": lambda: {"letter": rng.choice(LETTERS), "n": r(5, 15)},
        "lowercase": dict,
        "uppercase": dict,
        "capital_words_at_least": lambda: {"n": r(1, 3)},
        "capital_words_at_most": lambda: {"n": r(2, 5)},
        "start_with": lambda: {"phrase": rng.choice(PHRASES)},
        "end_with": lambda: {"phrase": rng.choice(END_PHRASES)},
        "no_commas": dict,
        "title": dict,
        "placeholders": lambda: {"n": r(1, 3)},
        "highlights": lambda: {"n": r(1, 3)},
        "postscript": lambda: {"marker": rng.choice(["P.S.", "P.P.S"])},
        "json_format": dict,
        "quotation": dict,
        "two_responses": dict,
        "repeat_prompt": lambda: {"request": request},
    }[kind]()


def render_reference(request: str, constraints: list[dict], rng: random.Random) -> str:
    """A response meant to satisfy ``constraints`` (the caller checks that it does)."""
    by = {c["type"]: c for c in constraints}
    banned = {w for c in constraints if c["type"] == "forbidden_words" for w in c["words"]}
    n_sent = rng.randint(2, 3)
    if "sentence_count_at_least" in by:
        n_sent = max(n_sent, by["sentence_count_at_least"]["n"])
    layout = next((c for c in constraints if ifeval.CONSTRAINTS[c["type"]].group == "layout"), None)
    if layout is not None:
        n_sent = max(n_sent, layout["n"])
    if "sentence_count_at_most" in by:
        n_sent = min(n_sent, by["sentence_count_at_most"]["n"] - 1)
    sentences = [_sentence(rng, banned) for _ in range(max(n_sent, 1))]

    def insert(words: list[str]) -> None:
        for w in words:
            s = rng.choice(sentences)
            s.insert(rng.randint(1, len(s)), w)

    extras: list[str] = []
    if "keywords" in by:
        extras += by["keywords"]["words"]
    if "keyword_frequency" in by:
        extras += [by["keyword_frequency"]["word"]] * by["keyword_frequency"]["n"]
    if "capital_words_at_least" in by:
        extras += rng.sample(CAPS, by["capital_words_at_least"]["n"])
    if "placeholders" in by:
        extras += rng.sample(PLACEHOLDERS, by["placeholders"]["n"])
    if "highlights" in by:
        extras += [f"*{rng.choice(_ADJ)}*" for _ in range(by["highlights"]["n"])]
    insert(extras)
    if "letter_frequency" in by:
        letter, n = by["letter_frequency"]["letter"], by["letter_frequency"]["n"]
        pool = [w for w in _ADJ + _NOUN if letter in w and w not in banned] or ["a" + letter]
        while sum(" ".join(s).count(letter) for s in sentences) < n:
            insert([rng.choice(pool)])
    if "word_count_at_least" in by:
        while sum(len(s) for s in sentences) < by["word_count_at_least"]["n"] + 12:
            rng.choice(sentences).extend(["and", rng.choice([w for w in _NOUN if w not in banned])])

    lines = [_cap(s) for s in sentences]
    if layout is None:
        body = " ".join(lines)
    elif layout["type"] in ("paragraphs", "paragraph_first_word"):
        n = layout["n"]
        paras = [" ".join(lines[i::n]) for i in range(n)]
        if layout["type"] == "paragraph_first_word":
            i = layout["i"] - 1
            paras[i] = layout["word"].capitalize() + " " + paras[i]
        body = "\n\n***\n\n".join(paras)
    elif layout["type"] == "bullet_points":
        n = layout["n"]
        body = "\n".join("* " + " ".join(lines[i::n]) for i in range(n))
    else:  # sections
        n = layout["n"]
        body = "\n\n".join(f"SECTION {i + 1}\n" + " ".join(lines[i::n]) for i in range(n))

    text = body
    if "title" in by:
        text = f"<<{rng.choice(TOPICS)}>>\n\n" + text
    if "start_with" in by:
        text = by["start_with"]["phrase"] + ". " + text
    if "repeat_prompt" in by:
        text = by["repeat_prompt"]["request"] + "\n\n" + text
    if "postscript" in by:
        text += f"\n\n{by['postscript']['marker']} " + _cap(_sentence(rng, banned))
    if "end_with" in by:
        text += " " + by["end_with"]["phrase"]
    if "lowercase" in by:
        text = text.lower()
    if "uppercase" in by:
        text = text.upper()
    if "json_format" in by:
        text = json.dumps({"response": text})
    elif "quotation" in by:
        text = f'"{text}"'
    elif "two_responses" in by:
        other = " ".join(_cap(_sentence(rng, banned)) for _ in range(len(sentences)))
        other = other.upper() if "uppercase" in by else other.lower() if "lowercase" in by else other
        text = text + "\n******\n" + other
    return text


def _pick_constraints(rng: random.Random, types: list[str], k: int) -> list[str]:
    chosen: list[str] = []
    for kind in rng.sample(types, len(types)):
        if len(chosen) == k:
            break
        if all(ifeval.compatible(kind, other) for other in chosen):
            chosen.append(kind)
    return chosen


def generate_task(rng: random.Random, types: list[str], min_constraints: int, max_constraints: int,
                  env: str = "ifeval") -> Task:
    """One generated task whose reference satisfies every constraint strictly."""
    for _ in range(100):
        request = f"Write a short piece about {rng.choice(TOPICS)}."
        kinds = _pick_constraints(rng, types, rng.randint(min_constraints, max_constraints))
        constraints = [{"type": k, **_sample_params(k, rng, request)} for k in kinds]
        reference = render_reference(request, constraints, rng)
        if all(ifeval.check(c, reference) for c in constraints):
            return make_task(env, request, constraints, "<think></think>" + reference)
    raise RuntimeError(f"ifeval: could not build a consistent task from types {types}")


def make_task(env: str, request: str, constraints: list[dict], reference: str | None,
              task_id: str | None = None) -> Task:
    for c in constraints:
        ifeval.validate(c)
    prompt = " ".join([request] + [ifeval.describe(c) for c in constraints if c["type"] != "repeat_prompt"]
                      + [ifeval.describe(c) for c in constraints if c["type"] == "repeat_prompt"])
    key = task_id or json.dumps([request, constraints], sort_keys=True)
    return Task(id=f"{env}/{key}", env=env, messages=[{"role": "user", "content": prompt}],
                answer=constraints, reference=reference, difficulty=len(constraints),
                meta={"types": [c["type"] for c in constraints]})


def violation(c: dict) -> str:
    """A response that breaks constraint ``c`` (strictly and loosely)."""
    n = c.get("n", 1)
    return {
        "word_count_at_most": "word " * (n + 1), "sentence_count_at_most": "One. " * (n + 1),
        "keyword_frequency": f"{c.get('word')}.", "forbidden_words": " ".join(c.get("words", [])),
        "lowercase": "Upper Case.", "uppercase": "lower case.", "capital_words_at_most": "WORD " * n,
        "no_commas": "a, b", "json_format": "{not json", "quotation": "not quoted",
    }.get(c["type"], "Hm.")


class IFEvalEnvironment(GeneratedEnvironment):
    name = "ifeval"

    def __init__(self, train_size: int = 5000, test_size: int = 300, min_constraints: int = 1,
                 max_constraints: int = 3, types: list[str] | None = None, mode: str = "strict",
                 seed: int = 1234, test_fraction: float = 0.1, require_think: bool = True,
                 data_files: dict[str, str] | None = None, max_answer_chars: int = 16_000):
        if max_answer_chars < 1:
            raise ValueError("environments.ifeval.max_answer_chars: must be at least 1")
        self.max_answer_chars = max_answer_chars
        self.types = list(types) if types is not None else sorted(ifeval.CONSTRAINTS)
        unknown = [t for t in self.types if t not in ifeval.CONSTRAINTS]
        if unknown or not self.types:
            raise ValueError(f"environments.ifeval.types: unknown {unknown}; known: {sorted(ifeval.CONSTRAINTS)}")
        if mode not in ("strict", "loose"):
            raise ValueError(f"environments.ifeval.mode: 'strict' or 'loose', got {mode!r}")
        if not 1 <= min_constraints <= max_constraints:
            raise ValueError("environments.ifeval: need 1 <= min_constraints <= max_constraints")
        super().__init__(train_size, test_size, seed, test_fraction, require_think, data_files)
        self.min_constraints, self.max_constraints, self.mode = min_constraints, max_constraints, mode

    def generate(self, rng: random.Random) -> Task:
        return generate_task(rng, self.types, self.min_constraints, self.max_constraints, self.name)

    def task_from_row(self, row: dict, default_id: str) -> Task:
        if not isinstance(row["prompt"], str) or not isinstance(row["constraints"], list) or not row["constraints"]:
            raise ValueError("'prompt' must be a string and 'constraints' a non-empty list")
        return make_task(self.name, row["prompt"], row["constraints"], row.get("reference"),
                         str(row.get("id", default_id)))

    def wrong_completion(self, task: Task, others: list[Task]) -> str:
        return "<think></think>" + violation(task.answer[0])

    def score(self, task: Task, completion: str) -> Score:
        answer, reason = answer_part(completion, self.require_think)
        if answer is None:
            return Score(0.0, {"strict": 0.0, "loose": 0.0, "strict_fraction": 0.0, "loose_fraction": 0.0}, reason)
        if len(answer) > self.max_answer_chars:  # "at least N words" must not reward a megabyte of filler
            return Score(0.0, {"strict": 0.0, "loose": 0.0, "strict_fraction": 0.0, "loose_fraction": 0.0},
                         f"answer longer than {self.max_answer_chars} characters")
        strict = [ifeval.check(c, answer) for c in task.answer]
        loose = [s or ifeval.check_loose(c, answer) for c, s in zip(task.answer, strict)]
        n = len(task.answer)
        comps = {"strict": float(all(strict)), "loose": float(all(loose)),
                 "strict_fraction": sum(strict) / n, "loose_fraction": sum(loose) / n}
        held = strict if self.mode == "strict" else loose
        failed = [c["type"] for c, ok in zip(task.answer, held) if not ok]
        return Score(float(not failed), comps, f"constraints not met: {', '.join(failed)}" if failed else None)
