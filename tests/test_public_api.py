"""The public API: everything exported is listed, sorted, documented; importing stays light."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

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


def test_the_readme_imports_from_nbagent_only() -> None:
    """The README's Python examples use the one public API, never a submodule path."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    imports = [line.strip() for block in blocks for line in block.splitlines() if "import" in line]
    assert any(line.startswith("from nbagent import") for line in imports)
    for line in imports:
        match = re.match(r"from (nbagent\S*) import (.*)", line)
        if match is None:
            continue
        assert match.group(1) == "nbagent", line
        for name in re.split(r"[,\s()]+", match.group(2)):
            assert not name or hasattr(nbagent, name), f"{name} is not in nbagent's public API"
    prose = re.findall(r"`(nbagent\.[a-z_]+\.[a-z_]+\.[A-Za-z_]+)", readme)
    assert not prose, f"the README names internal paths: {prose}"
