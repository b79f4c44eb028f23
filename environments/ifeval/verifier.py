"""IFEval-style instruction checkers (Zhou et al. 2023, "Instruction-Following
Evaluation for Large Language Models"), as pure functions of the response.

Each constraint type has a name, a prompt description, a checker, and the
parameters it takes. A task's constraints are a list of
``{"type": NAME, **params}`` dicts (JSON, so task files can carry them).

- strict: the checker on the response as written;
- loose (as IFEval defines it): the constraint holds if it holds on any of
  8 variants of the response: as is, without its first line, without its
  last line, without both, each also with every ``*`` removed.

An answer without a letter (empty, whitespace, punctuation only) follows
no instruction, as in Google's IFEval, where "at most N words" or "no
commas" would otherwise hold vacuously. Sentences are counted by pysbd's
rule-based segmenter ("Dr. Smith lives in the U.S." is one sentence). A
title or a highlight must hold a non-blank word.

Checkers use only linear-time regular expressions and bounded work, so
hostile responses (megabytes, deep nesting) cannot make them hang; the
environment host adds a time limit on top.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

_WORD = re.compile(r"\w+")
_LETTERS = re.compile(r"[A-Za-z]+")
_PARAGRAPH_SPLIT = re.compile(r"\s?\*\*\*\s?")
_BULLET = re.compile(r"^\s*(\*[^*\n]|-)", re.MULTILINE)
_HIGHLIGHT = re.compile(r"\*[^\n*]*[^\s*][^\n*]*\*")
_PLACEHOLDER = re.compile(r"\[[^\[\]\n]*\]")
_TITLE = re.compile(r"<<[^\n<>]*[^\s<>][^\n<>]*>>")
_POSTSCRIPT = re.compile(r"^\s*p\.\s?s\.", re.MULTILINE)
_FENCE = re.compile(r"^\s*```(?:json|JSON|Json)?\s*|\s*```\s*$")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def count_sentences(text: str) -> int:
    """Sentences with a letter in them, as pysbd segments English text."""
    return sum(1 for p in _segmenter().segment(text) if _LETTERS.search(p))


_SEGMENTER = None


def _segmenter():
    global _SEGMENTER
    if _SEGMENTER is None:
        import pysbd

        _SEGMENTER = pysbd.Segmenter(language="en", clean=False)
    return _SEGMENTER


def _keyword_count(text: str, word: str) -> int:
    return len(re.findall(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE))


def _paragraphs(text: str) -> list[str] | None:
    """Paragraphs separated by ``***``; None when one of them is empty."""
    parts = [p.strip() for p in _PARAGRAPH_SPLIT.split(text.strip())]
    if any(not p for p in parts):
        return None
    return parts


def _first_word(text: str) -> str:
    m = _LETTERS.search(text)
    return m.group(0).lower() if m else ""


def _uppercase_words(text: str) -> int:
    return sum(1 for w in _LETTERS.findall(text) if w.isupper())


def _json_ok(text: str) -> bool:
    body = _FENCE.sub("", text.strip())
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


@dataclass(frozen=True)
class ConstraintType:
    name: str
    describe: Callable[..., str]
    check: Callable[..., bool]
    group: str
    """At most one constraint per group in a task."""
    excludes: frozenset[str] = frozenset()
    """Groups a task with this constraint must not have."""


def _c(name, group, describe, check, excludes=()):
    return ConstraintType(name, describe, check, group, frozenset(excludes))


_LAYOUT = "layout"
_WRAP = "wrap"
_CASE = "case"

_ALL = [
    _c("word_count_at_least", "words",
       lambda n: f"Answer with at least {n} words.",
       lambda t, n: count_words(t) >= n),
    _c("word_count_at_most", "words",
       lambda n: f"Answer with at most {n} words.",
       lambda t, n: count_words(t) <= n, excludes={"repeat"}),
    _c("sentence_count_at_least", "sentences",
       lambda n: f"Your response should contain at least {n} sentences.",
       lambda t, n: count_sentences(t) >= n, excludes={"postscript"}),
    _c("sentence_count_at_most", "sentences",
       lambda n: f"Your response should contain at most {n} sentences.",
       lambda t, n: count_sentences(t) <= n, excludes={"postscript", "repeat", "title", _LAYOUT}),
    _c("paragraphs", _LAYOUT,
       lambda n: f"There should be exactly {n} paragraphs, separated by the markdown divider ***.",
       lambda t, n: (p := _paragraphs(t)) is not None and len(p) == n, excludes={_WRAP}),
    _c("paragraph_first_word", _LAYOUT,
       lambda n, i, word: (f"There should be exactly {n} paragraphs, separated by the markdown divider ***. "
                           f"Paragraph {i} must start with the word '{word}'."),
       lambda t, n, i, word: (p := _paragraphs(t)) is not None and len(p) == n and _first_word(p[i - 1]) == word.lower(),
       excludes={_WRAP, "start"}),
    _c("bullet_points", _LAYOUT,
       lambda n: f"Your answer must contain exactly {n} bullet points, markdown bullets such as:\n* This is a point.",
       lambda t, n: len(_BULLET.findall(t)) == n, excludes={_WRAP}),
    _c("sections", _LAYOUT,
       lambda n: f"Your response must have {n} sections. Mark the beginning of each section with SECTION X.",
       lambda t, n: len(re.findall(r"\bSECTION\s?\d+", t)) >= n, excludes={_WRAP, "lowercase"}),
    _c("keywords", "keywords",
       lambda words: "Include the keywords " + ", ".join(f"'{w}'" for w in words) + " in the response.",
       lambda t, words: all(_keyword_count(t, w) > 0 for w in words)),
    _c("keyword_frequency", "frequency",
       lambda word, n: f"In your response, the word '{word}' should appear at least {n} times.",
       lambda t, word, n: _keyword_count(t, word) >= n),
    _c("forbidden_words", "forbidden",
       lambda words: "Do not include the words " + ", ".join(f"'{w}'" for w in words) + " in the response.",
       lambda t, words: all(_keyword_count(t, w) == 0 for w in words), excludes={"repeat"}),
    _c("letter_frequency", "letter",
       lambda letter, n: f"In your response, the letter '{letter}' should appear at least {n} times.",
       lambda t, letter, n: t.lower().count(letter) >= n),
    _c("lowercase", _CASE,
       lambda: "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed.",
       lambda t: t == t.lower(), excludes={"sections", "postscript"}),
    _c("uppercase", _CASE,
       lambda: "Your entire response should be in English, and in all capital letters.",
       lambda t: t == t.upper()),
    _c("capital_words_at_least", _CASE,
       lambda n: f"In your response, words with all capital letters should appear at least {n} times.",
       lambda t, n: _uppercase_words(t) >= n),
    _c("capital_words_at_most", _CASE,
       lambda n: f"In your response, words with all capital letters should appear less than {n} times.",
       lambda t, n: _uppercase_words(t) < n, excludes={"sections", "postscript"}),
    _c("start_with", "start",
       lambda phrase: f"Start your response with the exact phrase '{phrase}'.",
       lambda t, phrase: t.strip().lower().startswith(phrase.lower()), excludes={_WRAP, "repeat"}),
    _c("end_with", "end",
       lambda phrase: f"Finish your response with the exact phrase '{phrase}'. No other words should follow it.",
       lambda t, phrase: t.strip().strip('"').lower().endswith(phrase.lower()), excludes={_WRAP, "postscript"}),
    _c("no_commas", "commas",
       lambda: "In your entire response, refrain from the use of any commas.",
       lambda t: "," not in t),
    _c("title", "title",
       lambda: "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
       lambda t: _TITLE.search(t) is not None, excludes={_WRAP}),
    _c("placeholders", "placeholders",
       lambda n: f"The response must contain at least {n} placeholders in square brackets, such as [address].",
       lambda t, n: len(_PLACEHOLDER.findall(t)) >= n),
    _c("highlights", "highlights",
       lambda n: f"Highlight at least {n} sections in your answer with markdown, i.e. *highlighted section*.",
       lambda t, n: len(_HIGHLIGHT.findall(t)) >= n, excludes={_WRAP}),
    _c("postscript", "postscript",
       lambda marker: f"At the end of your response, please explicitly add a postscript starting with {marker}",
       lambda t, marker: re.search(rf"^\s*{re.escape(marker.lower())}", t.lower(), re.MULTILINE) is not None,
       excludes={_WRAP}),
    _c("json_format", _WRAP,
       lambda: "Entire output should be wrapped in JSON format. You can use markdown ticks such as ```.",
       _json_ok, excludes={"repeat", "placeholders"}),
    _c("quotation", _WRAP,
       lambda: "Wrap your entire response with double quotation marks.",
       lambda t: len(t.strip()) > 1 and t.strip()[0] == '"' and t.strip()[-1] == '"', excludes={"repeat"}),
    _c("two_responses", _WRAP,
       lambda: ("Give two different responses. Responses and only responses should be separated by 6 asterisk "
                "symbols: ******."),
       lambda t: (len(p := [x.strip() for x in t.split("******")]) == 2 and all(p) and p[0] != p[1]),
       excludes={_LAYOUT, "repeat", "start", "end", "title", "postscript"}),
    _c("repeat_prompt", "repeat",
       lambda request: ("First repeat the request word for word without change, then give your answer "
                        f"(do not say anything before repeating the request). Request: {request}"),
       lambda t, request: t.strip().lower().startswith(request.strip().lower()),
       excludes={"start"}),
]
CONSTRAINTS: dict[str, ConstraintType] = {c.name: c for c in _ALL}


def check(constraint: dict[str, Any], text: str) -> bool:
    """Strict: does ``text`` satisfy the constraint ``{"type": ..., **params}``?"""
    if not _LETTERS.search(text):
        return False
    params = {k: v for k, v in constraint.items() if k != "type"}
    return bool(CONSTRAINTS[constraint["type"]].check(text, **params))


def loose_variants(text: str) -> list[str]:
    lines = text.split("\n")
    cut = ["\n".join(lines), "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    return cut + [v.replace("*", "") for v in cut]


def check_loose(constraint: dict[str, Any], text: str) -> bool:
    return any(v.strip() and check(constraint, v) for v in loose_variants(text))


def describe(constraint: dict[str, Any]) -> str:
    params = {k: v for k, v in constraint.items() if k != "type"}
    return CONSTRAINTS[constraint["type"]].describe(**params)


def validate(constraint: Any) -> None:
    """Raise ValueError when a constraint dict (e.g. from a task file) is malformed."""
    if not isinstance(constraint, dict) or "type" not in constraint:
        raise ValueError(f"constraint must be an object with a 'type', got {constraint!r}")
    kind = CONSTRAINTS.get(constraint["type"])
    if kind is None:
        raise ValueError(f"unknown constraint type {constraint['type']!r}; known: {sorted(CONSTRAINTS)}")
    try:
        describe(constraint)
    except TypeError as exc:
        raise ValueError(f"constraint {constraint['type']!r}: {exc}") from None


def compatible(a: str, b: str) -> bool:
    """May constraint types ``a`` and ``b`` appear in one task?"""
    ca, cb = CONSTRAINTS[a], CONSTRAINTS[b]
    tags_a, tags_b = {ca.group, a}, {cb.group, b}
    return ca.group != cb.group and not (ca.excludes & tags_b) and not (cb.excludes & tags_a)
