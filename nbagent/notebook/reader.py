"""Reading a notebook someone handed us: valid nbformat 4, and nbagent metadata of the shape it writes.

A notebook given to ``verify``, ``export`` or ``resume`` is untrusted input: valid JSON with
``runs`` as a string, ``environment`` as a number, a cell's ``metadata.nbagent`` as a list, or
nesting deep enough to exhaust the parser's recursion. :func:`read_notebook_file` turns each of
those into one :class:`~nbagent.UsageError` naming the file and the field, before any code relies
on the shape.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from ..exceptions import UsageError
from .schema import KEY, runs

_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", int: "a whole number", bool: "true/false"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in reversed(_TYPE_NAMES.items()):  # bool before int: True is an int too
        if isinstance(value, kind):
            return name
    return type(value).__name__


def read_notebook_file(path: str | os.PathLike[str]) -> NotebookNode:
    """Read a notebook file, validate it against nbformat 4 and check nbagent's metadata in it.

    Raises :class:`UsageError` (one line: which file, what is wrong) for a missing file, a folder,
    text that is not JSON (or nested too deep), another nbformat version, a schema error, or nbagent
    metadata of the wrong shape (see :func:`check_metadata`).
    """
    p = Path(path)
    shown = str(path)
    if not p.exists():
        raise UsageError(f"notebook {shown!r} does not exist")
    if not p.is_file():
        raise UsageError(f"notebook {shown!r} is not a file")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text)
    except RecursionError:
        raise UsageError(
            f"{shown!r} is not a notebook nbagent can read (its JSON is nested too deeply)"
        ) from None
    except (ValueError, OSError) as exc:
        raise UsageError(
            f"{shown!r} is not a valid notebook (it is not a readable .ipynb file: {_first_line(exc)})"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{shown!r} is not a valid notebook (its JSON is {_kind(data)}, not an object)")
    major = data.get("nbformat")
    if major != 4:
        raise UsageError(
            f"{shown!r} is not an nbformat 4 notebook (nbformat is {major!r}); "
            "nbagent reads version 4, as Jupyter writes today"
        )
    try:
        nb = nbformat.reads(text, as_version=4)  # joins the sources' lines, as every reader expects
        nbformat.validate(nb)
    except (nbformat.ValidationError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise UsageError(f"{shown!r} is not a valid notebook ({_first_line(exc)})") from None
    check_metadata(nb, shown)
    return nb


def read_run_notebook(path: str | os.PathLike[str], purpose: str = "resumed") -> NotebookNode:
    """Read a notebook nbagent wrote (it has ``metadata.nbagent.runs``); :class:`UsageError` if it
    is missing, unreadable, invalid, or not nbagent's (``purpose``: what is done with it)."""
    nb = read_notebook_file(path)
    if not runs(nb):
        raise UsageError(
            f"notebook {str(path)!r} was not written by nbagent (it has no metadata.nbagent.runs); "
            f"only notebooks from 'nbagent run' can be {purpose}"
        )
    return nb


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _need(value: Any, kind: type, where: str, name: str, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(
            f"notebook {name!r}: {where} should be {_TYPE_NAMES[kind]}, not {_kind(value)}; "
            "was it edited by hand? Use the notebook as nbagent wrote it"
        )


def check_metadata(nb: NotebookNode, name: str = "notebook") -> None:
    """Check that nbagent's metadata in ``nb`` has the shape nbagent writes (:class:`UsageError` if not).

    Only the fields nbagent reads back are checked; a notebook without nbagent metadata passes.
    """
    meta = nb.metadata.get(KEY)
    _need(meta, dict, "metadata.nbagent", name)
    meta = meta or {}
    runs = meta.get("runs")
    _need(runs, list, "metadata.nbagent.runs", name)
    for i, run in enumerate(runs or []):
        where = f"metadata.nbagent.runs[{i}]"
        _need(run, dict, where, name, optional=False)
        for key in ("question", "model"):
            _need(run.get(key), str, f"{where}.{key}", name)
        _need(run.get("parameters"), dict, f"{where}.parameters", name)
        files = run.get("files")
        _need(files, list, f"{where}.files", name)
        for j, entry in enumerate(files or []):
            _need(entry, dict, f"{where}.files[{j}]", name, optional=False)
            _need(entry.get("name"), str, f"{where}.files[{j}].name", name, optional=False)
            _need(entry.get("sha256"), str, f"{where}.files[{j}].sha256", name)
    environment = meta.get("environment")
    _need(environment, dict, "metadata.nbagent.environment", name)
    for key in ("kernel", "python"):
        _need((environment or {}).get(key), str, f"metadata.nbagent.environment.{key}", name)
    for key in ("packages", "random_seed"):
        _need((environment or {}).get(key), dict, f"metadata.nbagent.environment.{key}", name)
    seeded = ((environment or {}).get("random_seed") or {}).get("seeded")
    _need(seeded, list, "metadata.nbagent.environment.random_seed.seeded", name)
    for key in ("verification", "tidy"):
        _need(meta.get(key), dict, f"metadata.nbagent.{key}", name)
    _need((meta.get("verification") or {}).get("counts"), dict, "metadata.nbagent.verification.counts", name)
    for index, cell in enumerate(nb.cells):
        cell_meta = cell.get("metadata", {})
        if not isinstance(cell_meta, Mapping):
            continue  # nbformat's schema already refuses this
        _need(cell_meta.get(KEY), dict, f"cell {index + 1}'s metadata.nbagent", name)
