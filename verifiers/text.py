"""The parts of a completion that verifiers look at (docs/recipe.md section 2).

Completions are ``<think>reasoning</think>answer``; verifiers and judges see
only the answer.
"""

from __future__ import annotations


def split_reasoning(completion: str) -> tuple[str | None, str]:
    """``<think>r</think>a`` -> (r, a); without a closed think block: (None, text)."""
    if "</think>" not in completion:
        return None, completion
    reasoning, answer = completion.split("</think>", 1)
    return reasoning.removeprefix("<think>"), answer


def answer_part(completion: str, require_think: bool = True) -> tuple[str | None, str | None]:
    """(answer, None), or (None, reason) when the format is wrong."""
    reasoning, answer = split_reasoning(completion)
    if require_think and reasoning is None:
        return None, "format: no </think> closing the reasoning"
    return answer.strip(), None
