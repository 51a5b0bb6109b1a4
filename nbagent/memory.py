"""What the agent remembers of a run, and how it becomes the messages sent to the model.

Memory entries are dataclasses with ``to_dict()``: a :class:`Task` for each question asked in the
session and a :class:`Step` for each model reply. :meth:`Memory.to_messages` replays them as a
chat; only the latest images are sent so the context stays bounded on long runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

from .execution import Execution
from .models.base import Message, Usage
from .observe import Observation

StepKind = Literal["action", "final"]


@cache
def default_system_prompt() -> str:
    """The system prompt shipped with nbagent (``nbagent/prompts/system.md``)."""
    return (resources.files("nbagent") / "prompts" / "system.md").read_text(encoding="utf-8")


@dataclass
class Task:
    """A question put to the agent, with the data files it was given."""

    question: str
    files: list[str] = field(default_factory=list)

    def prompt(self, follow_up: bool = False) -> str:
        """The user message that states this task."""
        lines = [("New task (the kernel keeps its state): " if follow_up else "Task: ") + self.question]
        if self.files:
            lines.append("Data files in the working directory: " + ", ".join(self.files))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"question": self.question, "files": list(self.files)}


@dataclass
class Step:
    """One model reply and what came of it.

    ``kind`` is ``"action"`` for ordinary steps and ``"final"`` for the last request made when
    ``max_steps`` ran out. ``execution`` is ``None`` when the reply held no code.
    """

    number: int
    reply: str
    thought: str
    code: str | None
    execution: Execution | None
    observation: Observation
    usage: Usage
    model_duration: float
    kind: StepKind = "action"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (outputs excluded; they live in the notebook)."""
        return {
            "number": self.number,
            "kind": self.kind,
            "thought": self.thought,
            "code": self.code,
            "execution": None if self.execution is None else self.execution.to_dict(),
            "observation": self.observation.to_dict(),
            "usage": self.usage.to_dict(),
            "model_duration": round(self.model_duration, 6),
        }


PLAN_FOLLOW_UP = (
    "Now carry out this plan, one step at a time: reply with a short thought and one ```python block."
)


@dataclass
class Plan:
    """A plan the model made before step ``before_step``: facts known, facts to find, the plan.

    ``kind`` is ``"initial"`` for the first plan of a task and ``"update"`` for later ones.
    """

    before_step: int
    text: str
    reply: str
    usage: Usage
    model_duration: float
    kind: Literal["initial", "update"] = "initial"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "before_step": self.before_step,
            "kind": self.kind,
            "text": self.text,
            "usage": self.usage.to_dict(),
            "model_duration": round(self.model_duration, 6),
        }


MemoryEntry = Task | Step | Plan


class Memory:
    """The run's history, replayed to the model as chat messages."""

    def __init__(self, system_prompt: str, max_images: int = 2) -> None:
        self.system_prompt = system_prompt
        self.max_images = max_images
        self.entries: list[MemoryEntry] = []

    @property
    def steps(self) -> list[Step]:
        """Every step so far, across tasks."""
        return [e for e in self.entries if isinstance(e, Step)]

    @property
    def plans(self) -> list[Plan]:
        """Every plan so far, across tasks."""
        return [e for e in self.entries if isinstance(e, Plan)]

    def to_messages(self, images: bool = False, nudge: str | None = None) -> list[Message]:
        """The chat to send: system, tasks, and each step as assistant reply + observation.

        ``images``: include figures as image parts (only the last ``max_images`` of them).
        ``nudge``: a final user message (e.g. "give your final answer now").
        """
        messages: list[Message] = [{"role": "system", "content": self.system_prompt}]
        image_budget = self.max_images if images else 0
        keep_images: set[int] = set()
        for i in range(len(self.entries) - 1, -1, -1):
            entry = self.entries[i]
            if image_budget <= 0:
                break
            if isinstance(entry, Step) and entry.observation.images:
                keep_images.add(i)
                image_budget -= len(entry.observation.images)
        tasks_seen = 0
        for i, entry in enumerate(self.entries):
            if isinstance(entry, Task):
                messages.append({"role": "user", "content": entry.prompt(follow_up=tasks_seen > 0)})
                tasks_seen += 1
                continue
            if isinstance(entry, Plan):
                messages.append({"role": "assistant", "content": entry.text})
                messages.append({"role": "user", "content": PLAN_FOLLOW_UP})
                continue
            messages.append({"role": "assistant", "content": entry.reply})
            text = "Observation:\n" + entry.observation.text
            if i in keep_images:
                parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
                for png in entry.observation.images[-self.max_images :]:
                    parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}})
                messages.append({"role": "user", "content": parts})
            else:
                if entry.observation.images and images:
                    text += f"\n[{len(entry.observation.images)} earlier image(s) not shown again]"
                messages.append({"role": "user", "content": text})
        if nudge:
            messages.append({"role": "user", "content": nudge})
        return messages
