"""Function-style code verdicts that the candidate program cannot forge.

Threat model. The candidate program is hostile: inside its sandboxed
process it can read its own source and memory, patch builtins, override
``__eq__``, trace frames, print anything, exit with any code at any point.
The sandbox (``verifiers.sandbox``) keeps it from the host; this module
keeps it from the verdict:

1. The expected outputs never enter the sandbox. Each task's checks are
   replayed once against the reference solution on the host (trusted code)
   to record the *inputs* they call the function with (``derive_calls``).
2. In the sandbox, a harness calls the candidate's function on those inputs
   and prints the return values (a Python literal, read back with
   ``ast.literal_eval``), encoded as plain data (``encode``: builtin
   types only, matched by exact type, so no subclass, custom class or
   ``__eq__`` override survives; an exception becomes its type's name).
3. On the host, the task's own check code (trusted) runs against a stand-in
   function that replays those decoded values (``replay_check``), so the
   original asserts, tolerances and property tests decide.

So the candidate can only influence plain values it returns for inputs it
was given: forging the pass token, the exit code or the output line gives it
nothing but wrong values. A missing or undecodable result line fails every
check. Guessing by timing is moot: nothing the host computes from the
expected values is visible to the sandbox.
"""

from __future__ import annotations

import ast
import copy
import secrets
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 64
MAX_NODES = 200_000

# Tags of the plain-data encoding: ["n"] None, ["b", bool], ["i", "123"] int (as text:
# no float rounding), ["f", repr] float, ["s", str], ["l", [...]] list, ["t", [...]] tuple,
# ["d", [[k, v], ...]] dict, ["S", [...]] set, ["F", [...]] frozenset, ["e", "TypeName"]
# an exception raised by the call.

ENCODER_SOURCE = r'''
def _rl_encode(value, _depth=0, _budget=None, _type=type, _repr=float.__repr__, _int_str=int.__repr__,
               _str=str.__str__):
    if _budget is None:
        _budget = [0]
    _budget[0] += 1
    if _depth > 64 or _budget[0] > 200000:
        raise ValueError("result too large or too deep")
    t = _type(value)
    if value is None:
        return ["n"]
    if t is bool:
        return ["b", value is True]
    if t is int:
        return ["i", _int_str(value)]
    if t is float:
        return ["f", _repr(value)]
    if t is str:
        return ["s", _str(value)]
    if t is list or t is tuple or t is set or t is frozenset:
        tag = {list: "l", tuple: "t", set: "S", frozenset: "F"}[t]
        items = t.__iter__(value)
        return [tag, [_rl_encode(v, _depth + 1, _budget) for v in items]]
    if t is dict:
        return ["d", [[_rl_encode(k, _depth + 1, _budget), _rl_encode(v, _depth + 1, _budget)]
                      for k, v in dict.items(value)]]
    raise TypeError("unsupported result type")
'''

exec(ENCODER_SOURCE)  # the same encoder on the host (derive_calls, tests)
encode = _rl_encode  # type: ignore[name-defined]  # noqa: F821


def decode(data: Any, _depth: int = 0, _budget: list | None = None) -> Any:
    """Plain data back into Python values; raises ValueError on anything malformed."""
    budget = _budget if _budget is not None else [0]
    budget[0] += 1
    if _depth > MAX_DEPTH or budget[0] > MAX_NODES:
        raise ValueError("result too large or too deep")
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ValueError("malformed result")
    tag = data[0]
    if tag == "n" and len(data) == 1:
        return None
    if len(data) != 2:
        raise ValueError("malformed result")
    value = data[1]
    if tag == "b" and isinstance(value, bool):
        return value
    if tag == "i" and isinstance(value, str) and len(value) <= 5000:
        return int(value)
    if tag == "f" and isinstance(value, str):
        return float(value)
    if tag == "s" and isinstance(value, str):
        return value
    if tag in ("l", "t", "S", "F") and isinstance(value, list):
        items = [decode(v, _depth + 1, budget) for v in value]
        return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "d" and isinstance(value, list):
        out = {}
        for pair in value:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError("malformed result")
            out[decode(pair[0], _depth + 1, budget)] = decode(pair[1], _depth + 1, budget)
        return out
    if tag == "e" and isinstance(value, str):
        return CandidateError(value[:100])
    raise ValueError("malformed result")


class CandidateError(Exception):
    """The candidate's call raised (its exception type's name); replayed as a raise."""


@dataclass
class CallsResult:
    status: str
    """ran (results decoded), or the sandbox's failure: timeout, memory, crashed, output_limit."""
    outputs: list | None
    seconds: float


def script(program: str, entry_point: str, calls: list, token: str) -> str:
    """The sandboxed script: the encoder first (its references to builtins are
    bound before the candidate runs), the program, then the calls and one
    result line. Only the inputs are in it. ``calls``: encoded argument tuples."""
    return "\n".join([
        ENCODER_SOURCE,
        "import sys as _rl_sys",  # nothing beyond the interpreter's core: minimal images have no json
        f"_rl_calls = {calls!r}",
        "_rl_dumps, _rl_out = repr, _rl_sys.__stdout__",
        "",
        program,
        "",
        "",
        _RUNNER.format(entry=entry_point, token=token),
    ])


# Arguments are decoded inside the sandbox by a minimal decoder (inputs are ours).
_RUNNER = r'''
def _rl_arg(d):
    t = d[0]
    if t == "n": return None
    v = d[1]
    if t in ("b", "s"): return v
    if t == "i": return int(v)
    if t == "f": return float(v)
    if t == "l": return [_rl_arg(x) for x in v]
    if t == "t": return tuple(_rl_arg(x) for x in v)
    if t == "S": return set(_rl_arg(x) for x in v)
    if t == "F": return frozenset(_rl_arg(x) for x in v)
    if t == "d": return {{_rl_arg(k): _rl_arg(x) for k, x in v}}

_rl_results = []
for _rl_args in _rl_calls:
    try:
        _rl_value = globals()[{entry!r}](*_rl_arg(_rl_args))
        _rl_results.append(_rl_encode(_rl_value))
    except BaseException as _rl_exc:
        _rl_results.append(["e", type(_rl_exc).__name__])
_rl_out.write({token!r} + _rl_dumps(_rl_results) + "\n")
_rl_out.flush()
'''


def run_calls(sandbox, program: str, entry_point: str, calls: list, limits) -> CallsResult:
    """The candidate's return values for ``calls`` (encoded argument tuples)."""
    token = "RESULT-" + secrets.token_hex(16) + ":"
    raw = sandbox.run_script(script(program, entry_point, calls, token), limits)
    return parse(raw, token, len(calls))


def parse(raw, token: str, expected: int) -> CallsResult:
    from verifiers.sandbox import classify

    if raw.overflow:
        return CallsResult("output_limit", None, raw.seconds)
    if raw.timed_out:
        return CallsResult("timeout", None, raw.seconds)
    lines = [ln for ln in raw.stdout.decode("utf-8", "replace").split("\n") if ln.startswith(token)]
    if lines:
        try:
            outputs = [decode(o) for o in ast.literal_eval(lines[-1][len(token):])]
            if len(outputs) == expected:
                return CallsResult("ran", outputs, raw.seconds)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, OverflowError):
            pass
    status = classify(raw, "\0")  # no pass token: timeout, memory, output_limit, failed or crashed
    return CallsResult("crashed" if status == "passed" else status, None, raw.seconds)


def derive_calls(reference: str, entry_point: str, check: str) -> list:
    """The encoded argument tuples ``check(candidate)`` calls the function with,
    recorded against the reference (trusted code: run it in an isolated
    process, not a sandbox). Raises when the check fails on the reference."""
    calls: list = []
    namespace: dict = {"__name__": "__reference__"}
    exec(reference, namespace)  # noqa: S102 - the task's own reference solution
    fn = namespace[entry_point]

    def recorder(*args):
        calls.append(encode(tuple(copy.deepcopy(args))))
        return fn(*args)

    exec(check, namespace)  # noqa: S102 - the task's own test code
    namespace["check"](recorder)
    return calls


def replay_check(reference: str, entry_point: str, check: str, calls: list, outputs: list) -> bool:
    """Run the task's check on the host against the candidate's decoded outputs:
    the i-th call must have the i-th recorded arguments (a check whose inputs
    depend on earlier outputs cannot be replayed: it fails). The reference's
    module is the check's namespace (for helpers the check uses)."""
    namespace: dict = {"__name__": "__reference__"}
    exec(reference, namespace)  # noqa: S102
    exec(check, namespace)  # noqa: S102
    entry = namespace[entry_point]
    position = [0]

    def candidate(*args):
        i = position[0]
        if i >= len(calls) or encode(tuple(copy.deepcopy(args))) != calls[i]:
            raise AssertionError("the check called the function with inputs it did not record")
        position[0] += 1
        value = outputs[i]
        if isinstance(value, CandidateError):
            raise value
        if not same_types(value, entry(*copy.deepcopy(args))):
            # == alone would take True for 1 and a list for a tuple's elements
            raise AssertionError("the result's type differs from the reference's")
        return copy.deepcopy(value)

    try:
        namespace["check"](candidate)
    except Exception:  # noqa: BLE001 - any failure of the check is a failed test
        return False
    return position[0] == len(calls)



def same_types(value: Any, expected: Any) -> bool:
    """Type-aware comparison of shapes: bool is not int, list is not tuple; int and
    float are interchangeable (checks compare numbers with tolerances)."""
    numbers = (int, float)
    if type(value) in numbers and type(expected) in numbers:
        return True
    if type(value) is not type(expected):
        return False
    if isinstance(value, (list, tuple)):
        return all(same_types(v, e) for v, e in zip(value, expected))
    if isinstance(value, dict):
        return all(same_types(v, expected[k]) for k, v in value.items() if k in expected)
    return True

