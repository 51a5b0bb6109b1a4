"""`nbagent run` with saved tools and planning."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from test_tools import great_circle_km

from nbagent.cli import main


def test_run_with_a_saved_tool_needs_trust_and_then_uses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = great_circle_km.save(tmp_path / "gc-tool")
    replies = tmp_path / "replies.json"
    replies.write_text(
        json.dumps(
            [
                "## Facts known\nTwo cities.\n\n## Facts to find\nThe distance.\n\n"
                "## Plan\n1. Call the tool.",
                "Thought: use the tool.\n```python\n"
                "final_answer(great_circle_km(48.8566, 2.3522, 45.764, 4.8357))\n```",
            ]
        )
    )
    notebook = tmp_path / "out.ipynb"
    argv = ["run", "Paris to Lyon?", "-m", f"scripted:{replies}", "-o", str(notebook), "--tool", str(folder)]

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: --tool" in err and "add --trust-tools" in err
    assert not notebook.exists()

    assert main([*argv, "--trust-tools", "--planning-interval", "3", "--no-default-tools"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "391.5"
    assert "── plan" in err and "1. Call the tool." in err
    nb = nbformat.read(notebook, as_version=4)
    roles = [c.metadata.get("nbagent", {}).get("role") for c in nb.cells]
    assert roles == ["task", "setup", "tools", "plan", "thought", "step", "answer"]  # setup, then tools
    assert "def great_circle_km(" in nb.cells[2].source and "def inspect_data(" not in nb.cells[2].source
