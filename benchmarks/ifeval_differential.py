"""Our IFEval checkers against Google's, on the same (constraint, response) pairs.

Google's checkers ship in the ``lm-eval`` package (``lm_eval/tasks/ifeval``);
they are loaded from its files alone (the rest of lm-eval is not needed):

    pip install --no-deps lm-eval && pip install nltk langdetect immutabledict
    python benchmarks/ifeval_differential.py --tasks 40

Pairs: for every constraint type both sides have, ``--tasks`` generated tasks
holding it, each with its reference answer, a violating answer, and hostile
or edge-case variants (empty, blank, digits only, a blank title or
highlight, the reference without its last line, upper- and lower-cased, with
a comma). Google's rule for empty responses is applied as its evaluation
applies it (``response.strip() and check_following(response)``). Prints the
agreement rate per type and overall, and every disagreement class with an
example. Sentence counts are left out: Google's checker needs NLTK's punkt
data, which cannot be downloaded here (ours uses pysbd); so is ``start_with``,
which Google's set does not have. Google's word tokenizer runs with
``preserve_line=True`` for the same reason (the words are the same).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import types
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from environments.ifeval.env import IFEvalEnvironment  # noqa: E402
from environments.ifeval import verifier as ifeval  # noqa: E402
from verifiers.text import answer_part  # noqa: E402


def google_registry():
    spec = importlib.util.find_spec("lm_eval")
    if spec is None:
        raise SystemExit("lm-eval is not installed: pip install --no-deps lm-eval && "
                         "pip install nltk langdetect immutabledict")
    root = os.path.dirname(spec.origin)
    for name, path in [("lm_eval", root), ("lm_eval.tasks", f"{root}/tasks"),
                       ("lm_eval.tasks.ifeval", f"{root}/tasks/ifeval")]:
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules.setdefault(name, module)
    from lm_eval.tasks.ifeval import instructions_registry, instructions_util

    # word_tokenize first splits sentences with punkt (not downloadable here);
    # preserve_line=True tokenizes the words of the whole text the same way without it.
    tokenize = instructions_util.nltk.word_tokenize
    instructions_util.nltk.word_tokenize = lambda text, *a, **k: tokenize(text, preserve_line=True)
    return instructions_registry.INSTRUCTION_DICT


# our type -> (Google's instruction id, its keyword arguments from our parameters)
MAPPING = {
    "word_count_at_least": ("length_constraints:number_words", lambda c: dict(num_words=c["n"], relation="at least")),
    "word_count_at_most": ("length_constraints:number_words", lambda c: dict(num_words=c["n"] + 1,
                                                                               relation="less than")),
    "paragraphs": ("length_constraints:number_paragraphs", lambda c: dict(num_paragraphs=c["n"])),
    "paragraph_first_word": ("length_constraints:nth_paragraph_first_word",
                             lambda c: dict(num_paragraphs=c["n"], nth_paragraph=c["i"], first_word=c["word"])),
    "bullet_points": ("detectable_format:number_bullet_lists", lambda c: dict(num_bullets=c["n"])),
    "sections": ("detectable_format:multiple_sections", lambda c: dict(section_spliter="SECTION",
                                                                        num_sections=c["n"])),
    "keywords": ("keywords:existence", lambda c: dict(keywords=c["words"])),
    "keyword_frequency": ("keywords:frequency", lambda c: dict(keyword=c["word"], frequency=c["n"],
                                                               relation="at least")),
    "forbidden_words": ("keywords:forbidden_words", lambda c: dict(forbidden_words=c["words"])),
    "letter_frequency": ("keywords:letter_frequency", lambda c: dict(letter=c["letter"], let_frequency=c["n"],
                                                                     let_relation="at least")),
    "lowercase": ("change_case:english_lowercase", lambda c: {}),
    "uppercase": ("change_case:english_capital", lambda c: {}),
    "capital_words_at_least": ("change_case:capital_word_frequency",
                               lambda c: dict(capital_frequency=c["n"], capital_relation="at least")),
    "capital_words_at_most": ("change_case:capital_word_frequency",
                              lambda c: dict(capital_frequency=c["n"], capital_relation="less than")),
    "end_with": ("startend:end_checker", lambda c: dict(end_phrase=c["phrase"])),
    "no_commas": ("punctuation:no_comma", lambda c: {}),
    "title": ("detectable_format:title", lambda c: {}),
    "placeholders": ("detectable_content:number_placeholders", lambda c: dict(num_placeholders=c["n"])),
    "highlights": ("detectable_format:number_highlighted_sections", lambda c: dict(num_highlights=c["n"])),
    "postscript": ("detectable_content:postscript", lambda c: dict(postscript_marker=c["marker"])),
    "json_format": ("detectable_format:json_format", lambda c: {}),
    "quotation": ("startend:quotation", lambda c: {}),
    "two_responses": ("combination:two_responses", lambda c: {}),
    "repeat_prompt": ("combination:repeat_prompt", lambda c: dict(prompt_to_repeat=c["request"])),
}

# Known, deliberate differences (docs/status.md): why a disagreement class is expected.
def deliberate(kind: str, case: str, response: str) -> str | None:
    """Why a disagreement is a deliberate difference of specification (None: it is not)."""
    if not any(ch.isalpha() for ch in response):
        return "no letter: an answer without a letter follows no instruction here; Google fails only empty ones"
    if kind == "paragraph_first_word":
        return ("paragraphs: ours are separated by *** (as the prompt says, and as Google's number_paragraphs "
                "does); Google's nth_paragraph_first_word splits on blank lines")
    if kind in ("lowercase", "uppercase"):
        return "language: Google's case checkers also require langdetect to call the text English; ours do not"
    return None


def variants(answer: str) -> dict[str, str]:
    lines = answer.split("\n")
    return {"reference": answer, "empty": "", "blank": " \n\t", "digits only": "12 345 678",
            "blank title": "<< >>\n" + answer, "blank highlight": answer + "\n* *",
            "without last line": "\n".join(lines[:-1]), "upper": answer.upper(), "lower": answer.lower(),
            "with a comma": answer + ", indeed"}


def google_check(registry, constraint: dict, response: str) -> bool:
    iid, kwargs = MAPPING[constraint["type"]]
    checker = registry[iid](iid)
    checker.build_description(**kwargs(constraint))
    return bool(response.strip()) and bool(checker.check_following(response))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=40, help="tasks per constraint type")
    args = ap.parse_args()
    registry = google_registry()
    env = IFEvalEnvironment(train_size=5000)
    tasks = env.tasks("train")
    rng = random.Random(0)
    agree, total = Counter(), Counter()
    classes: dict[tuple, list] = defaultdict(list)
    for kind in MAPPING:
        chosen = [t for t in tasks if kind in t.meta["types"]]
        for task in rng.sample(chosen, min(args.tasks, len(chosen))):
            constraint = next(c for c in task.answer if c["type"] == kind)
            reference = answer_part(task.reference, False)[0] or ""
            wrong = answer_part(env.wrong_completion(task, []), False)[0] or ""
            for case, response in {**variants(reference), "violation": wrong}.items():
                ours = ifeval.check(constraint, response)
                theirs = google_check(registry, constraint, response)
                total[kind] += 1
                agree[kind] += ours == theirs
                if ours != theirs:
                    classes[(kind, case, ours, theirs)].append(response[:120])
    print(f"{'type':<24} agreement")
    for kind in MAPPING:
        print(f"{kind:<24} {agree[kind]}/{total[kind]} = {agree[kind] / max(total[kind], 1):.3f}")
    print(f"overall: {sum(agree.values())}/{sum(total.values())} = "
          f"{sum(agree.values()) / max(sum(total.values()), 1):.4f}")
    print("\ndisagreement classes (type, case, ours, Google's): count, example, why")
    unexplained = 0
    for key, examples in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        why = deliberate(key[0], key[1], examples[0])
        unexplained += 0 if why else len(examples)
        print(f"  {key}: {len(examples)}, {examples[0]!r}\n      {why or 'NOT EXPLAINED'}")
    print(f"unexplained disagreements: {unexplained}")


if __name__ == "__main__":
    main()
