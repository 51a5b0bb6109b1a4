"""Planning: every N steps the model states facts known, facts to find and a plan; recorded as markdown."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import code, scripted

from nbagent import Agent, Plan, Usage, UsageError
from nbagent.agent.restore import read_run

PLAN = (
    "## Facts known\nA file is given.\n\n## Facts to find\nIts row count.\n\n## Plan\n1. Count.\n2. Answer."
)
UPDATE = "## Facts known\nx is 1.\n\n## Facts to find\nNothing.\n\n## Plan\n1. Answer."


def test_planning_every_n_steps_records_plans_as_markdown_cells(tmp_path: Path) -> None:
    model = scripted(
        {"reply": PLAN, "input_tokens": 100, "output_tokens": 20},
        code("x = 1"),
        code("print(x)"),
        {"reply": UPDATE + "\n```python\nprint('not run')\n```", "input_tokens": 200, "output_tokens": 10},
        code("final_answer(x)"),
    )
    notebook = tmp_path / "planned.ipynb"
    with Agent(model, planning_interval=2) as agent:
        result = agent.run("What is x?", notebook=notebook)

    assert result.answer == 1
    assert [p.before_step for p in result.plans] == [1, 3]
    assert [p.kind for p in result.plans] == ["initial", "update"]
    assert result.plans[1].text == UPDATE  # code in a plan is dropped, never run
    plan_usage = Usage(input_tokens=300, output_tokens=30)
    steps_usage = sum((s.usage for s in result.steps), Usage())
    assert result.usage.total_tokens == steps_usage.total_tokens + plan_usage.total_tokens

    # The planning requests: the first asks for the three sections, the later one reviews progress.
    first_request = model.calls[0][-1]["content"]
    assert first_request.startswith("Task: What is x?")
    assert "## Facts known" in first_request and "## Facts to find" in first_request
    assert "You have 10 steps." in first_request
    update_request = model.calls[3][-1]["content"]
    assert "review your progress" in update_request and "You have 8 steps left." in update_request
    # Later steps see the plan as the model's own message, followed by the instruction to carry it out.
    step_messages = model.calls[1]
    assert step_messages[-2] == {"role": "assistant", "content": PLAN}
    assert step_messages[-1]["content"].startswith("Now carry out this plan")

    nb = nbformat.read(notebook, as_version=4)
    roles = [c.metadata.get("nbagent", {}).get("role") for c in nb.cells]
    assert roles == [
        "task",
        "setup",
        "tools",
        "plan",
        "thought",
        "step",
        "thought",
        "step",
        "plan",
        "thought",
        "step",
        "answer",
    ]
    first, second = (c for c in nb.cells if c.metadata["nbagent"]["role"] == "plan")
    assert first.cell_type == "markdown" and first.source.startswith(
        "**Plan** (before step 1)\n\n## Facts known"
    )
    assert second.source.startswith("**Updated plan** (before step 3)")
    assert second.metadata["nbagent"]["usage"]["input_tokens"] == 200
    # The plan's text is recorded as such: reading it back parses no markdown.
    assert second.metadata["nbagent"]["text"] == UPDATE
    read_back = [e.text for e in read_run(notebook).entries if isinstance(e, Plan)]
    assert read_back == [p.text for p in result.plans]


def test_no_planning_by_default_and_bad_intervals_are_refused() -> None:
    model = scripted(code("final_answer(2)"))
    with Agent(model) as agent:
        result = agent.run("two")
    assert result.plans == [] and len(model.calls) == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match="planning_interval must be a whole number"):
            Agent(scripted(), planning_interval=bad)  # type: ignore[arg-type]
