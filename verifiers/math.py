"""Math answer checking: the last ``\\boxed{}`` of the answer against the gold
answer, by exact number comparison first and symbolic equivalence
(math-verify / sympy) otherwise. The symbolic path can hang on hostile
input, so callers run it through ``verifiers.isolation``.
"""

from __future__ import annotations

import re
from fractions import Fraction

from verifiers.text import split_reasoning  # noqa: F401 - re-exported

MAX_ANSWER_CHARS = 200
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(/\d+)?$")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def _normalise(s: str) -> str:
    s = s.strip().strip("$").replace(" ", "").replace(",", "")
    s = re.sub(r"\\(?:text|mathrm)\{([^{}]*)\}", r"\1", s)
    return s.rstrip(".")


def as_number(s: str) -> Fraction | None:
    s = _normalise(s)
    if not _NUMBER.match(s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(pred: str, gold: str) -> bool | None:
    """True/False when both are plain numbers, None when symbolic checking is needed."""
    p, g = as_number(pred), as_number(gold)
    if p is None or g is None:
        return None
    return p == g


def symbolic_equal(pred: str, gold: str) -> bool:
    """Symbolic equivalence with math-verify (run this in an isolated process)."""
    import logging

    from math_verify import parse, verify

    # It warns on every call that its own (signal-based) timeout is off:
    # the isolated runner enforces the limit instead.
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
