"""What the model is sent: images only for vision models, and a bounded history on long runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import code

from nbagent import Agent, HistoryLimits, Kernel, LiteLLMModel, Step, Task, Usage
from nbagent.agent.memory import Memory
from nbagent.records import Observation
from nbagent.testing.openai_server import OpenAICompatibleServer

PLOT_STEPS = [
    code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2], label='sales')\nplt.title('Rise')\n"
        "plt.legend()\nplt.show()"
    ),
    code("final_answer('done')"),
]


def image_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        part
        for m in messages
        if isinstance(m["content"], list)
        for part in m["content"]
        if part.get("type") == "image_url"
    ]


@pytest.mark.parametrize(
    "model_name, vision, sends_images",
    [
        ("openai/gpt-4o", None, True),  # litellm says it takes images
        ("openai/gpt-3.5-turbo", None, False),  # litellm says it does not
        ("openai/gpt-4o", False, False),  # the explicit override wins
        ("openai/gpt-3.5-turbo", True, True),
    ],
)
def test_vision_models_get_figures_as_image_parts_and_text_models_get_none(
    kernel: Kernel, tmp_path: Path, model_name: str, vision: bool | None, sends_images: bool
) -> None:
    with OpenAICompatibleServer(PLOT_STEPS) as server:
        model = LiteLLMModel(model_name, api_base=server.url, api_key="test-key", vision=vision)
        result = Agent(model, executor=kernel).run("Plot the sales.", notebook=tmp_path / "plot.ipynb")
    assert result.answered
    after_plot = server.requests[1]["messages"]
    parts = image_parts(after_plot)
    assert len(parts) == (1 if sends_images else 0)
    if parts:
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    # Every model reads the figure's text summary.
    observation = after_plot[-1]["content"]
    text = observation if isinstance(observation, str) else observation[0]["text"]
    assert "'Rise': line plot (1 line)" in text and "legend: sales" in text


def make_step(number: int, text: str, images: int = 0) -> Step:
    return Step(
        number=number,
        reply=f"Thought: step {number}.\n```python\nx{number} = {number}\n```",
        thought=f"step {number}",
        code=f"x{number} = {number}",
        execution=None,
        observation=Observation(text=text, images=[f"png{number}-{i}" for i in range(images)]),
        usage=Usage(),
        model_duration=0.0,
    )


def urls(messages: list[dict[str, Any]]) -> list[str]:
    return [p["image_url"]["url"] for p in image_parts(messages)]


def test_only_the_newest_images_are_sent_whatever_their_steps() -> None:
    memory = Memory("system", HistoryLimits(max_images=2))
    memory.entries += [Task("q"), make_step(1, "a", images=2), make_step(2, "b", images=2), make_step(3, "c")]
    messages = memory.to_messages(images=True)
    assert urls(messages) == ["data:image/png;base64,png2-0", "data:image/png;base64,png2-1"]
    assert "[2 earlier image(s) not shown again]" in messages[3]["content"]
    memory.entries.append(make_step(4, "d", images=1))
    assert urls(memory.to_messages(images=True)) == [
        "data:image/png;base64,png2-1",
        "data:image/png;base64,png4-0",
    ]
    assert urls(memory.to_messages(images=False)) == []


def test_long_runs_stay_bounded_old_observations_shortened_then_oldest_steps_left_out() -> None:
    limits = HistoryLimits(max_images=1, recent_steps=2, old_observation_chars=500, max_chars=30_000)
    memory = Memory("system prompt", limits)
    memory.entries.append(Task("a long analysis"))
    sizes = []
    for n in range(1, 201):
        memory.entries.append(make_step(n, f"START{n} " + "y" * 8000 + f" END{n}", images=1))
        messages = memory.to_messages(images=True)
        sizes.append(sum(len(str(m["content"])) for m in messages))
    assert max(sizes) <= 30_000 + 1_000
    assert messages[1]["content"] == "Task: a long analysis"
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in messages]
    # The two newest observations whole, older ones cut to head and tail.
    assert "y" * 8000 in texts[-1] and "y" * 8000 in texts[-3]
    shortened = texts[-5]
    assert len(shortened) < 700 and "START198" in shortened and "END198" in shortened
    assert "characters cut" in shortened
    note = next(t for t in texts if "left out here" in t)
    assert note.startswith("[Steps 1 to ") and "still exist in the kernel" in note
    assert len(urls(messages)) == 1


def test_a_short_run_is_sent_whole() -> None:
    memory = Memory("system")
    memory.entries += [Task("q"), make_step(1, "z" * 5000), make_step(2, "w" * 10)]
    texts = [m["content"] for m in memory.to_messages()]
    assert "z" * 5000 in texts[3]
