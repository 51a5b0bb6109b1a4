"""The notebook's nbagent records are reached through one module, which never fails on a notebook
that lacks them or holds something else there (a notebook is input)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

import nbagent
from nbagent.notebook import schema

PACKAGE = Path(nbagent.__file__).resolve().parent


@pytest.mark.parametrize("value", [None, "runs", 3, [], {"runs": "x"}, {"runs": None}])
def test_odd_or_missing_records_read_as_empty(value: object) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1")
    if value is not None:
        nb.metadata["nbagent"] = value
        cell.metadata["nbagent"] = value
    assert schema.runs(nb) == [] and schema.environment(nb) == {}
    assert schema.role(cell) is None


def test_written_records_are_read_back() -> None:
    nb = nbformat.v4.new_notebook()
    schema.set_notebook_key(nb, "runs", [{"question": "q"}])
    cell = nbformat.v4.new_markdown_cell("note")
    schema.mark_cell(cell, "tidy-note", step=2)
    assert schema.runs(nb) == [{"question": "q"}]
    assert schema.role(cell) == "tidy-note" and schema.cell_meta(cell)["step"] == 2
    nbformat.validate(nb)


def test_only_the_notebook_package_names_the_metadata_key() -> None:
    """Outside nbagent/notebook/, nbagent's records are reached through schema's functions."""
    lookup = re.compile(r"""metadata(\[|\.get\(|\.setdefault\(|.*\.get\()\s*["']nbagent["']""")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.parent.name != "notebook"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if lookup.search(line) and "spec.metadata" not in line  # a kernel spec's metadata is not a notebook's
    ]
    assert not offenders, f"read nbagent's records through nbagent.notebook.schema: {offenders}"
