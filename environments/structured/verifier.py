"""Structured-output checking (docs/recipe.md section 6): the answer must parse as
JSON and validate against the task's schema made strict (every property
required, no extra properties, at every level). A markdown fence fails: the
answer is the JSON document and nothing else."""

from __future__ import annotations

import copy
import json
from typing import Any

MAX_CHARS = 100_000


# Keywords whose value is one subschema, a list of subschemas, or a map of name -> subschema.
_ONE = ("items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "not", "if", "then", "else",
        "contains", "propertyNames", "additionalItems")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def make_strict(schema: dict) -> dict:
    """A copy of ``schema`` where every object requires all its properties and allows no others.

    Walks subschemas by keyword only: the keys of ``properties`` are property
    names, not keywords, so a property called ``properties``, ``required`` or
    ``type`` is left alone."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" or isinstance(node.get("properties"), dict):
            props = node.get("properties", {})
            node["required"] = list(props)
            node["additionalProperties"] = False
        for key in _ONE:
            walk(node.get(key))
        for key in _LIST:
            for sub in node.get(key) or []:
                walk(sub)
        for key in _MAP:
            if isinstance(node.get(key), dict):
                for sub in node[key].values():
                    walk(sub)

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
    try:
        error = next(iter(Draft202012Validator(strict_schema).iter_errors(value)), None)
    except RecursionError:
        return True, False, "schema: answer nested too deeply"
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return True, False, f"schema: {where}: {error.message[:120]}"
    return True, True, None
