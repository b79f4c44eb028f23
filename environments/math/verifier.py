"""Math answer checking: the last ``\\boxed{}`` of the answer against the gold
answer, by exact number comparison first and symbolic equivalence
(math-verify / sympy) otherwise. The symbolic path can hang on hostile
input, so callers run it through ``verifiers.isolation``, after
``refusal`` has turned away what is known to explode (power towers, huge
exponents and factorials).

Normalisation, on both sides:

- numbers: thousands separators only in groups of three (``1,000,000``,
  ``1\\,000``, ``1{,}000``); any other comma makes a list (``1,2,3`` is not
  123); scientific notation ``1e3`` / ``1.5E-2`` is a number, not Euler's e;
  a trailing ``%`` / ``\\%`` and unit words (dollars, cents, degrees ...) are
  dropped, as graders of the MATH set do;
- Python syntax ``**`` is read as a power (math-verify's LaTeX parser
  misreads it);
- a bare comma list is a set of solutions (order-free); a parenthesised or
  bracketed one is a tuple (ordered).
"""

from __future__ import annotations

import re
from fractions import Fraction

from verifiers.text import split_reasoning  # noqa: F401 - re-exported

MAX_ANSWER_CHARS = 200
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(/\d+)?$")
_SCIENTIFIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)[eE][+-]?\d{1,4}$")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_UNITS = re.compile(r"(\\?%|\\\$|\$|\s*(dollars?|cents?|degrees?|units?|meters?|cm|km|kg|grams?|"
                    r"seconds?|minutes?|hours?|days?|years?|feet|inches?|miles?)|\^\{?\\circ\}?)$")
_POWER_TOWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\(?[\d.]+\)?\s*\^")
_BIG_EXPONENT = re.compile(r"\^\s*\{?\s*\(?\s*\d{5,}")
_BIG_FACTORIAL = re.compile(r"\d{4,}\s*!")


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
    s = s.strip().strip("$")
    s = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[,;:!]|\\ |~|\{,\}", lambda m: "," if m.group(0) == "{,}" else "", s)  # TeX spacing
    s = s.replace("**", "^").replace(" ", "").rstrip(".")
    for _ in range(2):  # "12.5\%", "5 dollars", "90^\circ"
        s = _UNITS.sub("", s)
    return s


def as_number(s: str) -> Fraction | None:
    s = _normalise(s)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    try:
        if _NUMBER.match(s):
            return Fraction(s)
        if _SCIENTIFIC.match(s):
            mantissa, exponent = re.split("[eE]", s)
            return Fraction(mantissa) * Fraction(10) ** int(exponent)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def numbers_equal(pred: str, gold: str) -> bool | None:
    """True/False when the gold answer is a plain number, None when symbolic checking is needed."""
    p, g = as_number(pred), as_number(gold)
    if g is None:
        return None
    if p is None:
        # A number is never equal to a list; other forms (2^3, \frac{1}{2}) need sympy.
        return False if "," in _normalise(pred) else None
    return p == g


def refusal(answer: str) -> str | None:
    """Why ``answer`` is refused before symbolic checking (None: it is not): forms
    whose evaluation explodes (``9^{9^{9^9}}``, ``2^{100000}``, ``10000!``)."""
    s = _normalise(answer)
    if _POWER_TOWER.search(s):
        return "refused: nested exponents"
    if _BIG_EXPONENT.search(s):
        return "refused: exponent of 5 or more digits"
    if _BIG_FACTORIAL.search(s):
        return "refused: factorial of a 4-digit number"
    return None


def symbolic_equal(pred: str, gold: str) -> bool:
    """Symbolic equivalence with math-verify (run this in an isolated process)."""
    import logging

    from math_verify import parse, verify

    # It warns on every call that its own (signal-based) timeout is off:
    # the isolated runner enforces the limit instead.
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    gold_parsed = parse(f"${_for_parser(gold)}$", parsing_timeout=None)
    pred_parsed = parse(f"${_for_parser(pred)}$", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _for_parser(s: str) -> str:
    """What math-verify reads: powers as ``^``, numbers normalised (separators,
    scientific notation), units and percent signs dropped."""
    number = as_number(s)
    if number is not None:
        return str(number.numerator) if number.denominator == 1 else f"\\frac{{{number.numerator}}}{{{number.denominator}}}"
    return _normalise(s)
