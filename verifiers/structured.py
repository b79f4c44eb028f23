"""Structured-output checking (RECIPE.md section 6): the answer must parse as
JSON and validate against the task's schema made strict (every property
required, no extra properties, at every level). A markdown fence fails: the
answer is the JSON document and nothing else."""

from __future__ import annotations

import copy
import json
from typing import Any

MAX_CHARS = 100_000


def make_strict(schema: dict) -> dict:
    """A copy of ``schema`` where every object requires all its properties and allows no others."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                props = node.get("properties", {})
                node["required"] = list(props)
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def check_schema(schema: Any) -> None:
    """Raise ValueError when ``schema`` is not a valid JSON Schema object schema."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        raise ValueError(f"schema must be a JSON object, got {type(schema).__name__}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"invalid JSON schema: {exc.message}") from None


def validate_answer(answer: str, strict_schema: dict) -> tuple[bool, bool, str | None]:
    """(parses, valid, reason) for an answer against an already-strict schema."""
    from jsonschema import Draft202012Validator

    text = answer.strip()
    if len(text) > MAX_CHARS:
        return False, False, f"answer longer than {MAX_CHARS} characters"
    if text.startswith("```"):
        return False, False, "format: markdown fence around the JSON"
    try:
        value = json.loads(text)
    except RecursionError:
        return False, False, "format: JSON nested too deeply"
    except ValueError as exc:
        return False, False, f"format: not JSON ({str(exc)[:80]})"
    error = next(iter(Draft202012Validator(strict_schema).iter_errors(value)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return True, False, f"schema: {where}: {error.message[:120]}"
    return True, True, None
