"""Managed agents: a manager's code calls another Agent like a function; two notebooks, linked."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import PENGUINS, code, scripted

from nbagent import Agent, ToolDefinitionError
from nbagent.agent.answers import decode_answer


def test_manager_delegates_to_a_sub_agent_with_its_own_kernel_and_linked_notebook(tmp_path: Path) -> None:
    analyst_model = scripted(
        code(
            "import os\n"
            "import pandas as pd\n"
            "means = pd.read_csv('penguins.csv').groupby('species').body_mass_g.mean().round(1)\n"
            "print(f\"{os.getpid()}@{os.readlink('/proc/self/ns/pid')}\")",
            "Compute the means.",
        ),
        code("final_answer(means)"),
    )
    analyst = Agent(
        analyst_model,
        name="analyst",
        description="Answers questions about data files with pandas.",
    )
    manager_model = scripted(
        code(
            "import os\n"
            "means = analyst(task='Mean body mass per species in penguins.csv, as a Series')\n"
            "me = f\"{os.getpid()}@{os.readlink('/proc/self/ns/pid')}\"\n"
            "print(type(means).__name__, means.idxmax(), me)",
            "Delegate the computation.",
        ),
        code("final_answer(f'{means.idxmax()} ({means.max()} g)')"),
    )
    notebook = tmp_path / "report.ipynb"
    with Agent(manager_model, managed_agents=[analyst]) as manager:
        result = manager.run("Which species is heaviest?", files=[PENGUINS], notebook=notebook)

    assert result.status == "answered", result.error
    assert result.answer == "Gentoo (5076.0 g)"
    assert "def analyst(task: str) -> Any:" in manager_model.calls[0][0]["content"]
    assert "Answers questions about data files with pandas." in manager_model.calls[0][0]["content"]
    # The analyst ran its own steps in its own kernel (another process: in the jail, another pid
    # namespace) on the shared working dir.
    analyst_process = analyst_model.calls[1][-1]["content"].split()[-1]
    manager_process = result.steps[0].observation.text.split()[-1]
    assert "@pid:[" in analyst_process and analyst_process != manager_process
    assert result.steps[0].observation.text.startswith("Series Gentoo")

    sub_path = tmp_path / "report.analyst-1.ipynb"
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == ["report.analyst-1.ipynb", "report.ipynb"]
    manager_nb = nbformat.read(notebook, as_version=4)
    note = next(c for c in manager_nb.cells if c.metadata.get("nbagent", {}).get("role") == "host-calls")
    assert "managed agent `analyst` → [report.analyst-1.ipynb](report.analyst-1.ipynb)" in note.source
    step = next(c for c in manager_nb.cells if c.metadata.get("nbagent", {}).get("role") == "step")
    call = step.metadata["nbagent"]["host_calls"][0]
    assert call["managed_agent"] == "analyst" and call["notebook"] == "report.analyst-1.ipynb"
    assert call["status"] == "answered" and call["steps"] == 2

    sub_nb = nbformat.read(sub_path, as_version=4)
    assert sub_nb.cells[0].source.startswith("# Mean body mass per species in penguins.csv")
    assert "[report.ipynb](report.ipynb)" in sub_nb.cells[0].source
    assert sub_nb.metadata["nbagent"]["manager"] == {"notebook": "report.ipynb"}
    assert sub_nb.metadata["nbagent"]["runs"][0]["status"] == "answered"
    payload = sub_nb.cells[-2].outputs[0]["data"]["application/vnd.nbagent.answer+json"]
    answer = decode_answer(payload).value
    assert isinstance(answer, pd.Series)
    assert answer.idxmax() == "Gentoo"


def test_a_managed_agent_without_an_answer_raises_in_the_managers_code(tmp_path: Path) -> None:
    idler = Agent(
        scripted(code("x = 1"), code("y = 2")),
        name="idler",
        description="Never answers.",
        max_steps=1,
    )
    manager_model = scripted(
        code(
            "try:\n    idler(task='do nothing')\nexcept HostToolError as e:\n    print(e)",
            "Try the idler.",
        ),
        code("final_answer('no help')"),
    )
    with Agent(manager_model, managed_agents=[idler]) as manager:
        result = manager.run("Get help", notebook=tmp_path / "boss.ipynb")
    observation = result.steps[0].observation.text
    assert "managed agent 'idler' ended without an answer (max_steps)" in observation
    assert "boss.idler-1.ipynb" in observation
    nb = nbformat.read(tmp_path / "boss.ipynb", as_version=4)
    note = next(c for c in nb.cells if c.metadata.get("nbagent", {}).get("role") == "host-calls")
    assert "[boss.idler-1.ipynb](boss.idler-1.ipynb): no answer (max_steps)" in note.source
    assert (tmp_path / "boss.idler-1.ipynb").exists()


def test_a_managed_agent_needs_a_name_and_a_description() -> None:
    with pytest.raises(ToolDefinitionError, match="needs a name and a description"):
        Agent(scripted(), managed_agents=[Agent(scripted(), name="helper")])
