"""Multiple-choice answer extraction: the chosen letter, from the answer part
only (never from the reasoning), in order of explicitness:

1. the last ``\\boxed{X}``;
2. an answer that is just the letter: ``B``, ``(B)``, ``B.``, ``B)``;
3. the last "answer is X" / "answer: X";
4. the only option letter standing alone in the answer.

Anything else (no letter, or several different ones) is no choice.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\boxed\{\s*\(?([A-Z])\)?\s*\}")
_ALONE = re.compile(r"^\(?([A-Z])\)?[.:)]?$")
_STATED = re.compile(r"answer\s*(?:is)?\s*[:\-]?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE)
_STANDALONE = re.compile(r"(?<![A-Za-z])\(?([A-Z])\)?(?![A-Za-z])")
MAX_SCAN = 20_000


def extract_choice(answer: str, letters: str) -> str | None:
    text = answer.strip()[-MAX_SCAN:]
    boxed = [m for m in _BOXED.findall(text) if m in letters]
    if boxed:
        return boxed[-1]
    alone = _ALONE.match(text)
    if alone and alone.group(1) in letters:
        return alone.group(1)
    stated = [m for m in _STATED.findall(text) if m in letters]
    if stated:
        return stated[-1]
    standing = {m for m in _STANDALONE.findall(text) if m in letters}
    return standing.pop() if len(standing) == 1 else None
