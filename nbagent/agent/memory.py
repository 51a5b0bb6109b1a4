"""What the agent remembers of a run, and how it becomes the messages sent to the model.

Memory entries are dataclasses with ``to_dict()``: a :class:`Task` for each question asked in the
session and a :class:`Step` for each model reply. :meth:`Memory.to_messages` replays them as a
chat within :class:`HistoryLimits`, so the context stays bounded on long runs: only the newest
images are sent, older observations are shortened, and the oldest steps are left out last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

from ..exceptions import UsageError
from ..execution.outputs import Execution
from ..models.base import Message, Usage
from .observe import Observation, truncate_middle
from .parameters import describe_parameters

StepKind = Literal["action", "final"]


@cache
def default_system_prompt() -> str:
    """The system prompt shipped with nbagent (``nbagent/agent/prompts/system.md``)."""
    return (resources.files("nbagent") / "agent" / "prompts" / "system.md").read_text(encoding="utf-8")


@dataclass
class Task:
    """A question put to the agent, with the data files it was given."""

    question: str
    files: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    def prompt(self, follow_up: bool = False) -> str:
        """The user message that states this task."""
        lines = [("New task (the kernel keeps its state): " if follow_up else "Task: ") + self.question]
        if self.files:
            lines.append("Data files in the working directory: " + ", ".join(self.files))
        if self.parameters:
            lines.append(
                "Parameters (already defined as variables in the kernel): "
                + describe_parameters(self.parameters)
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"question": self.question, "files": list(self.files), "parameters": dict(self.parameters)}


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


@dataclass
class HistoryLimits:
    """How much of a long run is replayed to the model at each step, so the context stays bounded.

    Newest first: the last ``max_images`` images are sent (older figures are still known by
    their text summaries), the observations of the last ``recent_steps`` steps are sent whole and
    older ones shortened to ``old_observation_chars`` (head and tail). When the text still exceeds
    ``max_chars``, the oldest steps are left out, with a note saying so.
    """

    max_images: int = 2
    recent_steps: int = 3
    old_observation_chars: int = 1500
    max_chars: int = 120_000

    def __post_init__(self) -> None:
        if self.max_images < 0 or self.recent_steps < 0:
            raise UsageError("max_images and recent_steps cannot be negative")
        if self.old_observation_chars < 200:
            raise UsageError(f"old_observation_chars must be at least 200, not {self.old_observation_chars}")
        if self.max_chars < 1000:
            raise UsageError(f"max_chars must be at least 1000, not {self.max_chars}")


class Memory:
    """The run's history, replayed to the model as chat messages (see :class:`HistoryLimits`)."""

    def __init__(self, system_prompt: str, limits: HistoryLimits | None = None) -> None:
        self.system_prompt = system_prompt
        self.limits = limits or HistoryLimits()
        self.entries: list[MemoryEntry] = []

    @property
    def max_images(self) -> int:
        """How many images (the newest) are sent to a vision model."""
        return self.limits.max_images

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

        ``images``: include figures as image parts (only the newest ``max_images`` of them).
        ``nudge``: a final user message (e.g. "give your final answer now").
        """
        limits = self.limits
        step_positions = [i for i, e in enumerate(self.entries) if isinstance(e, Step)]
        recent = set(step_positions[-limits.recent_steps :]) if limits.recent_steps > 0 else set()
        shown_images = self._allot_images() if images else {}

        texts: dict[int, str] = {}
        for i in step_positions:
            step = self.entries[i]
            assert isinstance(step, Step)
            text = step.observation.text
            if i not in recent:
                text = truncate_middle(text, limits.old_observation_chars)
            unsent = len(step.observation.images) - shown_images.get(i, 0)
            if images and unsent:
                text += f"\n[{unsent} earlier image(s) not shown again]"
            texts[i] = "Observation:\n" + text

        # Leave out the oldest steps while the whole exceeds the budget (the newest stay).
        size = len(self.system_prompt) + sum(self._size(i, e, texts) for i, e in enumerate(self.entries))
        left_out: list[int] = []
        for i in step_positions:
            if size <= limits.max_chars or i in recent:
                break
            step = self.entries[i]
            assert isinstance(step, Step)
            size -= len(step.reply) + len(texts[i])
            left_out.append(i)
        dropped = set(left_out)

        messages: list[Message] = [{"role": "system", "content": self.system_prompt}]
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
            if i in dropped:
                if i == left_out[0]:
                    first, last = entry.number, self._number(left_out[-1])
                    messages.append({"role": "user", "content": _left_out_note(first, last)})
                continue
            messages.append({"role": "assistant", "content": entry.reply})
            count = shown_images.get(i, 0)
            if count:
                parts: list[dict[str, Any]] = [{"type": "text", "text": texts[i]}]
                for png in entry.observation.images[-count:]:
                    parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}})
                messages.append({"role": "user", "content": parts})
            else:
                messages.append({"role": "user", "content": texts[i]})
        if nudge:
            messages.append({"role": "user", "content": nudge})
        return messages

    @staticmethod
    def _size(i: int, entry: MemoryEntry, texts: dict[int, str]) -> int:
        if isinstance(entry, Task):
            return len(entry.prompt())
        if isinstance(entry, Plan):
            return len(entry.text) + len(PLAN_FOLLOW_UP)
        return len(entry.reply) + len(texts[i])

    def _allot_images(self) -> dict[int, int]:
        # entry position -> how many of its (newest) images are sent, newest steps first.
        budget = self.limits.max_images
        shown: dict[int, int] = {}
        for i in range(len(self.entries) - 1, -1, -1):
            entry = self.entries[i]
            if budget <= 0:
                break
            if isinstance(entry, Step) and entry.observation.images:
                shown[i] = min(budget, len(entry.observation.images))
                budget -= shown[i]
        return shown

    def _number(self, position: int) -> int:
        entry = self.entries[position]
        return entry.number if isinstance(entry, Step) else 0


def _left_out_note(first: int, last: int) -> str:
    steps = f"Step {first} is" if first == last else f"Steps {first} to {last} are"
    return (
        f"[{steps} left out here to keep the context short. The variables, imports and "
        "functions they created still exist in the kernel.]"
    )
