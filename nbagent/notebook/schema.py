"""Where nbagent keeps its records in a notebook, and the one way to reach them.

Notebook level, ``metadata.nbagent``: ``version``, ``runs`` (one per question: ``question``,
``model``, ``started``, ``files``, ``parameters``, ``settings``, ``status``, ``answer``, ``usage``,
``resumed``...), ``environment`` (the kernel and packages of the run), and keys added after a run:
``verification`` (``nbagent verify``), ``tidy`` (``export --tidy``), ``manager`` (a managed
agent's link to its manager's notebook). Cell level, ``metadata.nbagent``: ``role`` (task,
setup, tools, parameters, plan, thought, step, answer, marker...), ``step``, ``status``,
``reply``, ``usage`` and what the role records.

The recorder (:mod:`nbagent.notebook.recorder`) writes a run; everything else reads through
these functions, which never fail on a notebook that lacks nbagent's records (a notebook is
input; :func:`nbagent.notebook.reader.check_metadata` says what is wrong with a malformed one).
"""

from __future__ import annotations

from typing import Any

KEY = "nbagent"
"""The metadata key nbagent owns, in the notebook's metadata and in each cell's."""


def notebook_meta(nb: Any) -> dict[str, Any]:
    """The notebook's ``metadata.nbagent`` (empty if it has none)."""
    value = nb.get("metadata", {}).get(KEY)
    return value if isinstance(value, dict) else {}


def runs(nb: Any) -> list[dict[str, Any]]:
    """The notebook's recorded runs, oldest first (empty if none)."""
    value = notebook_meta(nb).get("runs")
    return value if isinstance(value, list) else []


def environment(nb: Any) -> dict[str, Any]:
    """The recorded environment of the run (empty if none)."""
    value = notebook_meta(nb).get("environment")
    return value if isinstance(value, dict) else {}


def set_notebook_key(nb: Any, key: str, value: Any) -> None:
    """Record ``value`` under ``metadata.nbagent[key]`` (what is added after a run)."""
    nb.metadata.setdefault(KEY, {})[key] = value


def cell_meta(cell: Any) -> dict[str, Any]:
    """A cell's ``metadata.nbagent`` (empty if it has none)."""
    value = cell.get("metadata", {}).get(KEY)
    return value if isinstance(value, dict) else {}


def role(cell: Any) -> str | None:
    """What a cell is in the run (``"step"``, ``"answer"``...); ``None`` for a cell nbagent did not write."""
    value = cell_meta(cell).get("role")
    return value if isinstance(value, str) else None


def mark_cell(cell: Any, role: str, **meta: Any) -> None:
    """Make ``cell``'s ``metadata.nbagent`` say it is a ``role`` cell, with ``meta``."""
    cell.metadata[KEY] = {"role": role, **meta}
