"""What the user has in memory, described for the model in a few bounded lines.

``%%agent`` tells the model which variables the user's session holds (names, types, DataFrame
shapes and columns) so it works on them instead of re-loading data. The description only reads
cheap, side-effect-free facts: ``shape``/``columns``/``dtype`` of pandas and numpy objects,
``len`` of built-in containers, the ``repr`` of small scalars. It never calls user code otherwise.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Container, Mapping
from typing import Any

SKIPPED_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "final_answer"})
"""Names every IPython session has (or nbagent adds), never worth describing."""

_DATA_KINDS = ("DataFrame", "Series", "ndarray")


def describe_namespace(
    namespace: Mapping[str, Any],
    hidden: Container[str] = (),
    *,
    limit: int = 40,
    max_columns: int = 25,
    width: int = 200,
) -> str:
    """Describe the user's variables, one line each, at most ``limit`` lines (``""`` if none).

    Names starting with ``_``, names in ``hidden`` (IPython's ``user_ns_hidden``) and modules
    (listed together on one line) are left out. When there are more than ``limit`` variables,
    data (DataFrames, Series, arrays) is kept first, then the most recently defined.
    """
    entries: list[tuple[str, Any]] = []
    modules: list[str] = []
    for name, value in list(namespace.items()):
        if name.startswith("_") or name in SKIPPED_NAMES or name in hidden:
            continue
        if isinstance(value, types.ModuleType):
            real = getattr(value, "__name__", name)
            modules.append(name if real == name else f"{name} ({real})")
            continue
        entries.append((name, value))

    shown = entries
    if len(entries) > limit:
        ranked = sorted(
            range(len(entries)),
            key=lambda i: (_kind(entries[i][1]) not in _DATA_KINDS, -i),
        )
        keep = set(ranked[:limit])
        shown = [e for i, e in enumerate(entries) if i in keep]

    lines = [_clip(f"- {name}: {describe_value(value, max_columns)}", width) for name, value in shown]
    if len(entries) > len(shown):
        others = [name for name, _ in entries if all(name != n for n, _ in shown)]
        lines.append(_clip(f"- … and {len(others)} more: {', '.join(others)}", width))
    if modules:
        lines.append(_clip("Imported modules: " + ", ".join(modules), width * 2))
    return "\n".join(lines)


def describe_value(value: Any, max_columns: int = 25) -> str:
    """One phrase saying what ``value`` is: its type and, where cheap, its size and content."""
    try:
        return _describe(value, max_columns)
    except Exception:  # an odd object must not stop the agent from starting
        return type(value).__name__


def _describe(value: Any, max_columns: int) -> str:
    kind = _kind(value)
    if kind == "DataFrame":
        rows, cols = value.shape
        names, dtypes = value.columns[:max_columns], value.dtypes[:max_columns]
        columns = [f"{c} ({t})" for c, t in zip(names, dtypes, strict=True)]
        more = f", … {cols - max_columns} more" if cols > max_columns else ""
        return f"pandas DataFrame, {rows} rows × {cols} columns: {', '.join(columns)}{more}"
    if kind == "Series":
        name = "" if value.name is None else f" {value.name!r}"
        return f"pandas Series{name}, {len(value)} values, dtype {value.dtype}"
    if kind == "ndarray":
        return f"numpy array, shape {tuple(value.shape)}, dtype {value.dtype}"
    if value is None or isinstance(value, (bool, int, float, complex)):
        return f"{type(value).__name__} = {_clip(repr(value), 60)}"
    if isinstance(value, str):
        return f"str, {len(value)} characters: {_clip(repr(value), 60)}"
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__}, {len(value)} bytes"
    if isinstance(value, dict):
        keys = ", ".join(_clip(repr(k), 30) for k in list(value)[:8])
        more = ", …" if len(value) > 8 else ""
        return f"dict, {_items(len(value))}; keys: {keys}{more}" if value else "dict, empty"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"{type(value).__name__}, {_items(len(value))}"
    if isinstance(value, type):
        return "class"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"function{_signature(value)}"
    shape = getattr(type(value), "shape", None)
    if shape is not None and not callable(shape):
        # A shape attribute at class level is a descriptor (polars, torch, xarray...): read it.
        return f"{_type_name(value)}, shape {tuple(value.shape)}"
    return _type_name(value)


def _kind(value: Any) -> str:
    """``"DataFrame"``, ``"Series"`` or ``"ndarray"`` for pandas and numpy objects, else ``""``."""
    cls = type(value)
    module = cls.__module__.split(".")[0]
    if module == "pandas" and cls.__name__ in ("DataFrame", "Series"):
        return cls.__name__
    if module == "numpy" and cls.__name__ == "ndarray":
        return "ndarray"
    return ""


def _type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def _signature(fn: Callable[..., Any]) -> str:
    try:
        return _clip(str(inspect.signature(fn)), 80)
    except (TypeError, ValueError):
        return "(...)"


def _items(n: int) -> str:
    return "1 item" if n == 1 else f"{n} items"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else text[: width - 1] + "…"
