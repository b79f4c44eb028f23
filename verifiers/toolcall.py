"""XML tool calls (docs/recipe.md section 6), parsed from the answer part of a turn:

    <tool_call><function=NAME><parameter=ARG>value</parameter>...</function></tool_call>

and the checks of their arguments against a tool's JSON schema. Pure: no I/O.

Parameter values are text. A value is read as JSON when the schema asks for
a non-string type (``7`` -> 7, ``["a", "b"]`` -> list); for a string
parameter it is taken as is, so quotes and SQL-looking text are just data.
Nothing here raises on model output: a malformed call is a ``ToolCallError``
in the result list, to be sent back to the model as an error response.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_FUNCTION = re.compile(r"^\s*<function=([A-Za-z_][\w.-]*)>(.*)</function>\s*$", re.S)
_PARAM = re.compile(r"<parameter=([A-Za-z_]\w*)>(.*?)</parameter>", re.S)
MAX_CALLS_PER_TURN = 16


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, str]
    """Raw text of each parameter (one leading and trailing newline stripped)."""


@dataclass
class ToolCallError:
    message: str


def parse_tool_calls(answer: str) -> list[ToolCall | ToolCallError]:
    """Every ``<tool_call>`` block of ``answer`` in order, each parsed or an error."""
    out: list[ToolCall | ToolCallError] = []
    pos = 0
    while True:
        start = answer.find(CALL_OPEN, pos)
        if start < 0:
            break
        end = answer.find(CALL_CLOSE, start)
        if end < 0:
            out.append(ToolCallError("malformed tool call: <tool_call> without </tool_call>"))
            break
        if len(out) >= MAX_CALLS_PER_TURN:
            out.append(ToolCallError(f"too many tool calls in one turn (at most {MAX_CALLS_PER_TURN})"))
            break
        out.append(_parse_one(answer[start + len(CALL_OPEN): end]))
        pos = end + len(CALL_CLOSE)
    return out


def _parse_one(body: str) -> ToolCall | ToolCallError:
    m = _FUNCTION.match(body)
    if m is None:
        return ToolCallError("malformed tool call: expected <function=NAME>...</function> inside <tool_call>")
    name, inner = m.group(1), m.group(2)
    args: dict[str, str] = {}
    for pm in _PARAM.finditer(inner):
        key = pm.group(1)
        if key in args:
            return ToolCallError(f"malformed tool call to {name}: parameter '{key}' given twice")
        args[key] = _strip_one_newline(pm.group(2))
    leftover = _PARAM.sub("", inner).strip()
    if leftover:
        return ToolCallError(f"malformed tool call to {name}: unexpected text {leftover[:60]!r} "
                             "outside <parameter=...>...</parameter>")
    return ToolCall(name, args)


def _strip_one_newline(value: str) -> str:
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


def has_tool_call(answer: str) -> bool:
    return CALL_OPEN in answer


def coerce_arguments(raw: dict[str, str], schema: dict) -> tuple[dict | None, str | None]:
    """Typed arguments for a tool whose parameters are the JSON schema ``schema``
    (type object), or (None, reason). Checks required, unknown and typed values."""
    import jsonschema

    props = schema.get("properties", {})
    unknown = sorted(set(raw) - set(props))
    if unknown:
        return None, f"unknown parameter(s) {unknown}; expected {sorted(props)}"
    args = {}
    for key, text in raw.items():
        kind = props[key].get("type", "string")
        if kind == "string":
            args[key] = text
            continue
        try:
            args[key] = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return None, f"parameter '{key}': expected {kind}, got {text[:40]!r}"
    try:
        jsonschema.validate(args, schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "arguments"
        return None, f"{where}: {exc.message[:200]}"
    return args, None


def render_call(name: str, arguments: dict) -> str:
    """The XML of one call (reference solutions); non-string values as JSON."""
    params = "".join(
        f"<parameter={k}>{v if isinstance(v, str) else json.dumps(v)}</parameter>" for k, v in arguments.items()
    )
    return f"{CALL_OPEN}<function={name}>{params}</function>{CALL_CLOSE}"
