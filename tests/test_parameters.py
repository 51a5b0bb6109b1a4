"""Parameters: checked names and values, the papermill-style cell, and what the model is told."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import code, scripted

from nbagent import Agent, Kernel, UsageError
from nbagent.agent.parameters import check_parameters, parameters_code


def test_parameters_code_is_python_that_rebuilds_the_values() -> None:
    values = {
        "name": "O'Brien",
        "n": 3,
        "ratio": 0.25,
        "on": True,
        "none": None,
        "xs": [1, "a"],
        "m": {"k": [1.5]},
    }
    source = parameters_code({**values, "inf": math.inf})
    namespace: dict[str, object] = {}
    exec(source, namespace)
    assert {k: namespace[k] for k in values} == values
    assert namespace["inf"] == math.inf
    assert source.startswith("# Parameters\n")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"class": 1}, "'class' is not a Python variable name"),
        ({"2x": 1}, "is not a Python variable name"),
        ({"final_answer": 1}, "reserved"),
        ({"_hidden": 1}, "reserved"),
        ({"when": object()}, "parameter 'when': a object value is not allowed"),
        ({"m": {1: "a"}}, "mapping key 1 is not a string"),
    ],
)
def test_bad_parameters_are_refused_with_the_name(parameters: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        check_parameters(parameters)


def test_agent_runs_parameters_before_the_first_step_and_tells_the_model(
    kernel: Kernel, tmp_path: Path
) -> None:
    model = scripted(code("final_answer(f'{city}:{count + 1}')"))
    agent = Agent(model, executor=kernel)
    result = agent.run(
        "Use the parameters", notebook=tmp_path / "p.ipynb", parameters={"city": "Oslo", "count": 41}
    )
    assert result.answer == "Oslo:42"
    prompt = model.calls[0][1]["content"]
    assert "Parameters (already defined as variables in the kernel): city = 'Oslo', count = 41" in prompt
    cells = [c for c in result.notebook.cells if c.cell_type == "code"]  # type: ignore[union-attr]
    assert cells[0].metadata.nbagent.role == "setup" and cells[1].metadata.nbagent.role == "tools"
    assert cells[2].metadata.tags == ["parameters"]
    assert cells[2].source == "# Parameters\ncity = 'Oslo'\ncount = 41\n"
    assert cells[2].metadata.nbagent.role == "parameters"


def test_agent_refuses_bad_parameters_before_starting_anything(tmp_path: Path) -> None:
    agent = Agent(scripted())
    with pytest.raises(UsageError, match="not a Python variable name"):
        agent.run("q", notebook=tmp_path / "p.ipynb", parameters={"not valid": 1})
    assert agent.executor is None
    assert not (tmp_path / "p.ipynb").exists()
