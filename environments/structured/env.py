"""Structured output: return a JSON object that follows a given schema.

Generated tasks describe a record (a person, a book, an order ...) and give
a JSON schema of 2-5 fields drawn from typed field kinds (strings, bounded
integers, booleans, enums, arrays, nested objects). The reward is 1 when the
answer parses and validates against the schema made strict (docs/recipe.md
section 6); components ``parses`` and ``valid``. Task files (JSON lines):
``{"prompt": ..., "schema": {...}, "reference": ...}``.
"""

from __future__ import annotations

import json
import random

from environments.base import GeneratedEnvironment, Score, Task
from environments.structured.verifier import check_schema, make_strict, validate_answer
from verifiers.text import answer_part

_NAMES = ["Ann", "Bob", "Cy", "Dee", "Eve", "Gus", "Ida", "Max"]
_CITIES = ["Oslo", "Lima", "Rome", "Kyiv", "Pune", "Nice"]
_WORDS = ["red", "blue", "fast", "new", "big", "old", "tidy", "bold"]


def _field(kind: str, rng: random.Random) -> tuple[dict, object]:
    """(schema of the field, a valid value)."""
    if kind == "name":
        return {"type": "string", "minLength": 1}, rng.choice(_NAMES)
    if kind == "count":
        lo, hi = sorted(rng.sample(range(0, 100), 2))
        return {"type": "integer", "minimum": lo, "maximum": hi}, rng.randint(lo, hi)
    if kind == "flag":
        return {"type": "boolean"}, rng.random() < 0.5
    if kind == "status":
        options = rng.sample(["open", "closed", "pending", "done", "late"], 3)
        return {"type": "string", "enum": options}, rng.choice(options)
    if kind == "tags":
        n = rng.randint(1, 3)
        return ({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": n},
                rng.sample(_WORDS, rng.randint(1, n)))
    if kind == "price":
        return {"type": "number", "minimum": 0}, round(rng.uniform(1, 99), 2)
    if kind == "place":
        schema = {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}}}
        return schema, {"city": rng.choice(_CITIES), "zip": rng.randint(1000, 9999)}
    raise ValueError(kind)


_KINDS = ["name", "count", "flag", "status", "tags", "price", "place"]
_FIELD_NAMES = {"name": ["name", "owner", "title"], "count": ["age", "quantity", "pages", "score"],
                "flag": ["active", "verified", "urgent"], "status": ["status", "state"],
                "tags": ["tags", "labels"], "price": ["price", "total"], "place": ["address", "location"]}
_RECORDS = ["a customer", "a book", "an order", "a ticket", "a sensor", "a library member"]


def generate_task(rng: random.Random, env: str = "structured") -> Task:
    kinds = rng.sample(_KINDS, rng.randint(2, 5))
    props, value = {}, {}
    for kind in kinds:
        name = rng.choice(_FIELD_NAMES[kind])
        while name in props:
            name += "_2"
        props[name], value[name] = _field(kind, rng)
    schema = {"type": "object", "properties": props}
    facts = ", ".join(f"{k} {json.dumps(v)}" for k, v in value.items())
    prompt = (f"Describe {rng.choice(_RECORDS)} with {facts}. Answer with only a JSON object "
              f"(no markdown) that follows this schema: {json.dumps(schema, separators=(',', ':'))}")
    return make_task(env, prompt, schema, "<think></think>" + json.dumps(value), None, validate=False)


def make_task(env: str, prompt: str, schema: dict, reference: str | None, task_id: str | None,
              validate: bool = True) -> Task:
    """``validate``: check the schema itself (task files; generated schemas are valid by construction)."""
    if validate:
        check_schema(schema)
    return Task(id=f"{env}/{task_id or prompt}", env=env, messages=[{"role": "user", "content": prompt}],
                answer=make_strict(schema), reference=reference, difficulty=len(schema.get("properties", {})))


class StructuredOutputEnvironment(GeneratedEnvironment):
    name = "structured"

    def __init__(self, train_size: int = 5000, test_size: int = 300, seed: int = 1234,
                 test_fraction: float = 0.1, require_think: bool = True, data_files: dict[str, str] | None = None):
        super().__init__(train_size, test_size, seed, test_fraction, require_think, data_files)

    def generate(self, rng: random.Random) -> Task:
        return generate_task(rng, self.name)

    def task_from_row(self, row: dict, default_id: str) -> Task:
        if not isinstance(row["prompt"], str):
            raise ValueError("'prompt' must be a string")
        return make_task(self.name, row["prompt"], row["schema"], row.get("reference"), str(row.get("id", default_id)))

    def wrong_completion(self, task: Task, others: list[Task]) -> str:
        return "<think></think>```json\n{}\n```"

    def score(self, task: Task, completion: str) -> Score:
        answer, reason = answer_part(completion, self.require_think)
        if answer is None:
            return Score(0.0, {"parses": 0.0, "valid": 0.0}, reason)
        parses, valid, reason = validate_answer(answer, task.answer)
        return Score(float(valid), {"parses": float(parses), "valid": float(valid)}, reason)
