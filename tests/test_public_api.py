"""The public API: everything exported is listed, sorted, documented; importing stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import nbagent


def test_all_is_sorted_complete_and_documented() -> None:
    assert nbagent.__all__ == sorted(nbagent.__all__)
    public = {n for n, v in vars(nbagent).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert public <= set(nbagent.__all__) | {"annotations"}
    for name in nbagent.__all__:
        obj = getattr(nbagent, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_importing_nbagent_does_not_import_litellm() -> None:
    code = "import sys, nbagent, nbagent.cli; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
