"""What a failed ``%%agent`` step leaves in the user's namespace, and how much of it is undone.

A step runs in the user's own shell, so a step that raises has already done part of its work. By
binding (cheap, no copies):

- names the step added are removed;
- names it rebound or deleted get their old object back.

What cannot be undone is a change made *inside* an object that existed before the step
(``df["x"] = ...``, ``rows.append(...)``, ``df.drop(columns=..., inplace=True)``): the object is
the user's own, and undoing would need a deep copy of everything before every step. Such changes
are detected and reported instead, by comparing a fingerprint taken before the step with one
taken after it failed. A fingerprint is cheap by design and so not complete:

- pandas DataFrames and Series: shape, column names, dtypes, the index, and a hash of the values
  (every value up to :data:`FULL_HASH_CELLS` cells; beyond that, a fixed sample of rows);
- numpy arrays: shape, dtype, and a hash of the bytes (all up to :data:`FULL_HASH_BYTES`, else a
  strided sample of about 100,000 values);
- lists, dicts, sets: their length and the identities of their items (all up to
  :data:`MAX_CONTAINER_ITEMS` items; beyond, a list's first and last 1,000, a dict's or set's
  first :data:`MAX_CONTAINER_ITEMS`);
- other objects are not watched. At most :data:`MAX_WATCHED` names are watched, the rest
  are not; names starting with ``_`` are never touched.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

FULL_HASH_CELLS = 1_000_000
FULL_HASH_BYTES = 1_000_000
SAMPLE_ROWS = 1_000
MAX_CONTAINER_ITEMS = 10_000
MAX_WATCHED = 500

# IPython's own history names (_, __, _i3, _3, In, Out...) change with every cell: not the step's.
_SHELL_NAMES = re.compile(r"_+|_i{1,3}|_i?\d+|_oh|_dh|In|Out|exit|quit|get_ipython")


def _watched_name(name: str) -> bool:
    return not name.startswith("_") and not _SHELL_NAMES.fullmatch(name)


def fingerprint(obj: Any) -> Any:
    """A cheap summary of ``obj``'s content that changes when it is changed in place (``None``:
    not watched). See the module docstring for what it sees."""
    module = type(obj).__module__.split(".")[0]
    try:
        if module == "pandas" and type(obj).__name__ in ("DataFrame", "Series"):
            return _pandas_fingerprint(obj)
        if module == "numpy" and type(obj).__name__ == "ndarray":
            if obj.dtype.hasobject:
                return None
            data = obj if obj.nbytes <= FULL_HASH_BYTES else obj.reshape(-1)[:: max(1, obj.size // 100_000)]
            return (
                "ndarray",
                obj.shape,
                str(obj.dtype),
                hashlib.blake2b(data.tobytes(), digest_size=16).digest(),
            )
        if type(obj) is list:
            items = obj if len(obj) <= MAX_CONTAINER_ITEMS else obj[:1_000] + obj[-1_000:]
            return ("list", len(obj), hash(tuple(map(id, items))))
        if type(obj) is dict:  # a long one: its first items
            entries = itertools.islice(obj.items(), MAX_CONTAINER_ITEMS)
            return ("dict", len(obj), hash(tuple((id(k), id(v)) for k, v in entries)))
        if type(obj) is set:
            return ("set", len(obj), hash(tuple(map(id, itertools.islice(obj, MAX_CONTAINER_ITEMS)))))
    except Exception:  # a value the fingerprint cannot read is simply not watched
        return None
    return None


def _pandas_fingerprint(obj: Any) -> Any:
    import pandas as pd

    sample = obj
    if obj.size > FULL_HASH_CELLS and len(obj) > SAMPLE_ROWS:
        sample = obj.iloc[:: max(1, len(obj) // SAMPLE_ROWS)]
    values = int(pd.util.hash_pandas_object(sample, index=True).sum())
    columns = tuple(map(str, obj.columns)) if hasattr(obj, "columns") else (str(obj.name),)
    dtypes = tuple(map(str, obj.dtypes)) if hasattr(obj, "columns") else (str(obj.dtype),)
    return ("pandas", obj.shape, columns, dtypes, values)


@dataclass
class Undone:
    """What :meth:`NamespaceGuard.undo` did, and the in-place changes it could not undo."""

    removed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    changed_in_place: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One sentence for the user and the model ('' when nothing was left to undo)."""
        parts = []
        if self.removed:
            parts.append(f"its new names were removed ({', '.join(self.removed)})")
        if self.restored:
            parts.append(f"names it rebound or deleted were restored ({', '.join(self.restored)})")
        if self.changed_in_place:
            parts.append(
                f"it changed {', '.join(self.changed_in_place)} in place before failing; that "
                "cannot be undone"
            )
        return "the step failed: " + "; ".join(parts) if parts else ""


class NamespaceGuard:
    """Snapshot of a namespace before a step, to undo the step's bindings if it fails."""

    def __init__(self, namespace: MutableMapping[str, Any]) -> None:
        self.namespace = namespace
        self.before = {k: v for k, v in namespace.items() if _watched_name(k)}
        self.prints: dict[str, Any] = {}
        for name, value in list(self.before.items())[:MAX_WATCHED]:
            print_ = fingerprint(value)
            if print_ is not None:
                self.prints[name] = print_

    def undo(self) -> Undone:
        """Remove the names the step added, give rebound ones their old object back, and list
        the watched objects it changed in place."""
        undone = Undone()
        for name in [k for k in self.namespace if _watched_name(k) and k not in self.before]:
            del self.namespace[name]
            undone.removed.append(name)
        for name, value in self.before.items():
            if name not in self.namespace or self.namespace[name] is not value:
                self.namespace[name] = value
                undone.restored.append(name)
        for name, print_ in self.prints.items():
            if fingerprint(self.before[name]) != print_:
                undone.changed_in_place.append(name)
        return undone
