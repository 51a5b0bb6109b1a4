"""Stock re-run tools (papermill, nbconvert) pass on a notebook with a failed step, and a re-run
with new parameters shows its own answer, not the recorded one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import code, scripted

from nbagent import Agent, Kernel


@pytest.fixture(scope="module")
def failed_step_run(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An answered run with parameters, whose second step raised."""
    folder = tmp_path_factory.mktemp("rerun")
    agent = Agent(
        scripted(
            code("print('counting', n)\ntotal = n * 2"),
            code("{'a': 1}['missing']", "This will fail."),
            code("final_answer(f'The total is {total}.')"),
        ),
        executor=kernel,
    )
    result = agent.run("Double n.", notebook=folder / "run.ipynb", parameters={"n": 3})
    assert result.answer == "The total is 6."
    return folder / "run.ipynb"


def run_tool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def answer_shown(nb: nbformat.NotebookNode) -> str:
    answer = next(c for c in nb.cells if c.metadata.get("nbagent", {}).get("role") == "answer")
    return str(answer.outputs[0]["data"]["text/markdown"])


def test_the_failed_step_keeps_its_error_and_tags_in_the_written_notebook(failed_step_run: Path) -> None:
    nb = nbformat.read(failed_step_run, as_version=4)
    failed = [c for c in nb.cells if "raises-exception" in c.metadata.get("tags", [])]
    assert len(failed) == 1
    assert failed[0].source.startswith("# nbagent: failed during the run (KeyError)")
    assert failed[0].source.endswith("{'a': 1}['missing']")
    assert [o["ename"] for o in failed[0].outputs if o["output_type"] == "error"] == ["KeyError"]
    assert answer_shown(nb) == "**Answer:** The total is 6."


def test_papermill_passes_and_new_parameters_give_a_new_answer(failed_step_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.ipynb"
    done = run_tool("papermill", str(failed_step_run), str(out), "-p", "n", "5", cwd=failed_step_run.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    nb = nbformat.read(out, as_version=4)
    assert not any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in nb.cells)  # no banner
    assert answer_shown(nb) == "**Answer:** The total is 10."  # not the recorded 6
    failed = next(c for c in nb.cells if "raises-exception" in c.metadata.get("tags", []))
    printed = "".join(o.get("text", "") for o in failed.outputs if o.get("name") == "stderr")
    assert "KeyError: 'missing'" in printed  # the failure is still shown, as text


def test_nbconvert_execute_passes(failed_step_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "again.ipynb"
    args = ["nbconvert", "--to", "notebook", "--execute", str(failed_step_run), "--output", str(out)]
    done = run_tool(*args, cwd=failed_step_run.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    nb = nbformat.read(out, as_version=4)
    assert answer_shown(nb) == "**Answer:** The total is 6."
    assert not any(o["output_type"] == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
