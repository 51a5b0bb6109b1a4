"""The agent loop, end to end: scripted model → real kernel → observation → notebook on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import PENGUINS, code, scripted

from nbagent import Agent, NotebookRecorder, RunListener, Step, UsageError


class SaveChecker(RunListener):
    """After every step, reads the notebook from disk and validates it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cells_seen: list[int] = []

    def step_finished(self, step: Step) -> None:
        nb = nbformat.read(self.path, as_version=4)
        nbformat.validate(nb)
        self.cells_seen.append(len(nb.cells))


def cells_by_role(nb: nbformat.NotebookNode, role: str) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.metadata.get("nbagent", {}).get("role") == role]


def test_error_then_fix_reaches_the_answer_and_the_notebook_records_everything(tmp_path: Path) -> None:
    nb_path = tmp_path / "run.ipynb"
    checker = SaveChecker(nb_path)
    model = scripted(
        code("import pandas as pd\npenguins = pd.read_csv('penguins.csv')\nprint(penguins.shape)", "Load."),
        code("penguins.groupby('species')['body_mass'].mean()", "Mean mass."),
        code(
            "mean_mass = penguins.groupby('species')['body_mass_g'].mean()\nprint(mean_mass.round(1))", "Fix."
        ),
        code("final_answer(mean_mass.idxmax())", "Gentoo is heaviest."),
    )
    with Agent(model, listeners=[checker]) as agent:
        result = agent.run("Which species is heaviest?", files=[PENGUINS], notebook=nb_path)

    assert result.status == "answered"
    assert result.answer == "Gentoo"
    assert [s.execution.status for s in result.steps if s.execution] == ["ok", "error", "ok", "ok"]
    # The error went back to the model as an observation, and the model saw it before the fix.
    assert "KeyError" in result.steps[1].observation.text
    assert "KeyError" in json.dumps(model.calls[2])
    assert "(344, 8)" in result.steps[0].observation.text
    assert result.usage.total_tokens == sum(s.usage.total_tokens for s in result.steps) > 0
    assert (tmp_path / "penguins.csv").read_bytes() == PENGUINS.read_bytes()

    # Saved after every step, valid every time, growing as it goes.
    assert len(checker.cells_seen) == 4
    assert checker.cells_seen == sorted(checker.cells_seen)
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    header = nb.cells[0]
    assert "Which species is heaviest?" in header.source and "penguins.csv" in header.source
    assert cells_by_role(nb, "setup")[0].source.startswith("# nbagent setup")
    steps = cells_by_role(nb, "step")
    assert [c.metadata.nbagent.step for c in steps] == [1, 2, 3, 4]
    assert steps[1].metadata.tags == ["raises-exception"]
    assert steps[1].outputs[-1].ename == "KeyError"
    assert steps[0].metadata.nbagent.observation == result.steps[0].observation.text
    assert all(c.execution_count for c in steps)
    assert "Gentoo" in cells_by_role(nb, "answer")[0].outputs[0]["data"]["text/markdown"]
    run = nb.metadata.nbagent.runs[0]
    assert run["status"] == "answered" and run["answer"] == "Gentoo"
    assert run["files"][0]["name"] == "penguins.csv" and len(run["files"][0]["sha256"]) == 64


def test_the_notebook_re_executes_with_nbconvert(tmp_path: Path) -> None:
    nb_path = tmp_path / "rerun.ipynb"
    model = scripted(
        code("import matplotlib.pyplot as plt\nvalues = [3, 1, 2]\nplt.bar(range(3), values)\nplt.show()"),
        code("undefined_name + 1", "Oops."),
        code("final_answer(max(values))"),
    )
    with Agent(model) as agent:
        result = agent.run("Largest value?", notebook=nb_path)
    assert result.answer == 3
    out = tmp_path / "executed.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--ExecutePreprocessor.timeout=120",
            str(nb_path),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr
    executed = nbformat.read(out, as_version=4)
    answer_cells = [
        c
        for c in executed.cells
        if c.cell_type == "code" and "final_answer(" in c.source and "def final_answer" not in c.source
    ]
    assert answer_cells[0].outputs[0].data["text/plain"] == "3"


def test_a_reply_without_code_gets_a_corrective_observation(tmp_path: Path) -> None:
    model = scripted("The answer is probably 4.", code("final_answer(2 + 2)"))
    with Agent(model) as agent:
        result = agent.run("What is 2 + 2?", notebook=tmp_path / "nocode.ipynb")
    assert result.status == "answered" and result.answer == 4
    assert result.steps[0].execution is None
    assert "no ```python code block" in result.steps[0].observation.text
    assert "no ```python code block" in json.dumps(model.calls[1])
    nb = nbformat.read(tmp_path / "nocode.ipynb", as_version=4)
    thought = [c for c in nb.cells if c.metadata.get("nbagent", {}).get("status") == "no-code"]
    assert "probably 4" in thought[0].source


def test_max_steps_asks_once_for_a_final_answer(tmp_path: Path) -> None:
    model = scripted(code("a = 1"), code("b = 2"), code("final_answer(a + b)"))
    with Agent(model, max_steps=2) as agent:
        result = agent.run("Sum?", notebook=tmp_path / "limit.ipynb")
    assert result.status == "answered" and result.answer == 3
    assert [s.kind for s in result.steps] == ["action", "action", "final"]
    assert "You have used all 2 steps" in json.dumps(model.calls[2][-1])


def test_max_steps_without_an_answer_ends_with_status_max_steps(tmp_path: Path) -> None:
    model = scripted(code("a = 1"), code("b = 2"))
    with Agent(model, max_steps=1) as agent:
        result = agent.run("Never answers", notebook=tmp_path / "noanswer.ipynb")
    assert result.status == "max_steps"
    assert result.answer is None
    nb = nbformat.read(tmp_path / "noanswer.ipynb", as_version=4)
    assert "no final answer within 1 steps" in nb.cells[-1].source
    assert nb.metadata.nbagent.runs[0]["status"] == "max_steps"


def test_follow_up_keeps_kernel_memory_and_notebook(tmp_path: Path) -> None:
    nb_path = tmp_path / "follow.ipynb"
    model = scripted(
        code("numbers = [5, 7, 9]\nfinal_answer(max(numbers))"),
        code("final_answer(min(numbers))", "numbers still exists."),
    )
    with Agent(model) as agent:
        first = agent.run("Largest?", notebook=nb_path)
        second = agent.run("And the smallest?", reset=False)
    assert (first.answer, second.answer) == (9, 5)
    assert second.notebook_path == first.notebook_path
    assert second.steps[0].number == 2
    # The follow-up's messages hold the first task and its steps.
    sent = json.dumps(model.calls[1])
    assert "Largest?" in sent and "And the smallest?" in sent
    nb = nbformat.read(nb_path, as_version=4)
    assert len(cells_by_role(nb, "setup")) == 1
    assert any(c.source.startswith("## Follow-up: And the smallest?") for c in nb.cells)
    assert [r["answer"] for r in nb.metadata.nbagent.runs] == ["9", "5"]


def test_answers_come_back_as_python_values(tmp_path: Path) -> None:
    model = scripted(
        code(
            "import pandas as pd\n"
            "frame = pd.DataFrame({'species': ['a', 'b'], 'mass': [1.5, 2.5]})\n"
            "final_answer(frame)"
        ),
        code("final_answer({'n': 3, 'names': ['x', 'y'], 'ok': True})"),
        code("final_answer(frame.set_index('species')['mass'])"),
        code("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\nfinal_answer(fig)"),
    )
    with Agent(model) as agent:
        frame = agent.run("frame", notebook=tmp_path / "a.ipynb").answer
        mapping = agent.run("dict", reset=False).answer
        series = agent.run("series", reset=False).answer
        figure = agent.run("figure", reset=False).answer
    pd.testing.assert_frame_equal(frame, pd.DataFrame({"species": ["a", "b"], "mass": [1.5, 2.5]}))
    assert mapping == {"n": 3, "names": ["x", "y"], "ok": True}
    assert list(series.index) == ["a", "b"] and list(series) == [1.5, 2.5]
    assert figure.format == "PNG" and figure.size[0] > 100


def test_model_failure_ends_the_run_with_status_error_and_a_marker(tmp_path: Path) -> None:
    model = scripted(code("x = 1"))  # then the script runs out
    with Agent(model) as agent:
        result = agent.run("Runs out", notebook=tmp_path / "err.ipynb")
    assert result.status == "error"
    assert "no reply left" in (result.error or "")
    nb = nbformat.read(tmp_path / "err.ipynb", as_version=4)
    assert "the run stopped" in nb.cells[-1].source
    assert nb.metadata.nbagent.runs[0]["status"] == "error"


def test_existing_notebook_is_refused_and_left_untouched(tmp_path: Path) -> None:
    target = tmp_path / "keep.ipynb"
    target.write_text("precious")
    with Agent(scripted(code("final_answer(1)"))) as agent, pytest.raises(UsageError, match="already exists"):
        agent.run("q", notebook=target)
    assert target.read_text() == "precious"


def test_recorder_save_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "atomic.ipynb"
    rec = NotebookRecorder(path)
    rec.save()
    assert nbformat.read(path, as_version=4).metadata.nbagent.runs == []
    assert [p.name for p in tmp_path.iterdir()] == ["atomic.ipynb"]


def test_a_later_display_update_reaches_the_earlier_cell_on_disk(tmp_path: Path) -> None:
    nb_path = tmp_path / "display.ipynb"
    model = scripted(
        code("from IPython.display import display\nstatus = display('working', display_id=True)"),
        code("status.update('finished')\nfinal_answer('done')"),
    )
    with Agent(model) as agent:
        agent.run("update a display", notebook=nb_path)
    nb = nbformat.read(nb_path, as_version=4)
    first = cells_by_role(nb, "step")[0]
    assert first.outputs[0].data["text/plain"] == "'finished'"


def test_incremental_save_writes_exactly_what_nbformat_writes(tmp_path: Path) -> None:
    nb_path = tmp_path / "same.ipynb"
    model = scripted(code("print('é ✓')\n{'a': 1}"), code("1/0"), code("final_answer('ok')"))
    with Agent(model) as agent:
        result = agent.run("formatting", notebook=nb_path)
    assert result.notebook is not None
    assert nb_path.read_text(encoding="utf-8") == nbformat.writes(result.notebook) + "\n"


def test_an_invalid_cell_is_caught_before_it_reaches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "invalid.ipynb"
    rec = NotebookRecorder(path)
    rec.add_marker("fine")
    rec.save()
    good = path.read_text()
    rec.nb.cells.append(
        nbformat.NotebookNode(cell_type="markdown", id="bad-tags", metadata={"tags": "x"}, source="")
    )
    with pytest.raises(nbformat.ValidationError):
        rec.save()
    assert path.read_text() == good  # the file on disk is still the last valid notebook
