"""Task parameters: checked on the host, written as papermill's ``parameters`` cell.

A run's parameters become one code cell (``name = value`` per line) tagged ``parameters``, the
tag papermill looks for, run in the kernel right after the setup cell so the variables exist
when the model's first step runs, and so the notebook re-runs alone (or with new values through
``papermill -p name value``).
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Mapping
from typing import Any

from ..exceptions import UsageError

RESERVED = ("final_answer",)
"""Names the setup cell defines; a parameter may not hide them."""


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as a plain dict; :class:`UsageError` naming the first bad name or value.

    Names must be Python identifiers (not keywords, not ``final_answer``, not starting with
    ``_``); values must be JSON-like: strings, numbers, booleans, ``None``, lists and mappings
    with string keys.
    """
    if not isinstance(parameters, Mapping):
        raise UsageError(
            f"parameters must be a mapping of names to values, not a {type(parameters).__name__}"
        )
    checked: dict[str, Any] = {}
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"parameter name {name!r} is not a Python variable name")
        if name.startswith("_") or name in RESERVED:
            raise UsageError(f"parameter name {name!r} is reserved; choose another name")
        problem = _value_problem(value)
        if problem:
            raise UsageError(f"parameter {name!r}: {problem}")
        checked[name] = value
    return checked


def parameters_code(parameters: Mapping[str, Any]) -> str:
    """The source of the ``parameters`` cell: a comment, then ``name = value`` per parameter."""
    lines = ["# Parameters"]
    lines += [f"{name} = {python_literal(value)}" for name, value in check_parameters(parameters).items()]
    return "\n".join(lines) + "\n"


def describe_parameters(parameters: Mapping[str, Any], limit: int = 200) -> str:
    """``name = value, ...`` for the model's prompt, each value cut to ``limit`` characters."""
    parts = []
    for name, value in parameters.items():
        text = python_literal(value)
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        parts.append(f"{name} = {text}")
    return ", ".join(parts)


def python_literal(value: Any) -> str:
    """Python source that evaluates to ``value`` (a JSON-like value)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {python_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _value_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool | int | float | str):
        return None
    if isinstance(value, list | tuple):
        for item in value:
            problem = _value_problem(item)
            if problem:
                return problem
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"mapping key {key!r} is not a string"
            problem = _value_problem(item)
            if problem:
                return problem
        return None
    return (
        f"a {type(value).__name__} value is not allowed; use strings, numbers, booleans, null, "
        "lists or mappings (quote it to pass it as text)"
    )
