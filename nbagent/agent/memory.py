"""What the agent remembers of a run, and how it becomes the messages sent to the model.

Memory entries are dataclasses with ``to_dict()``: a :class:`Task` for each question asked in the
session and a :class:`Step` for each model reply. :meth:`Memory.to_messages` replays them as a
chat within :class:`HistoryLimits`, so the context stays bounded on long runs: only the newest
images are sent, older observations are shortened, and the oldest steps are left out last.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ..exceptions import UsageError
from ..models.base import Message
from ..records import Plan, Step, Task
from .observe import truncate_middle
from .parameters import describe_parameters


@cache
def default_system_prompt() -> str:
    """The system prompt shipped with nbagent (``nbagent/agent/prompts/system.md``)."""
    return (resources.files("nbagent") / "agent" / "prompts" / "system.md").read_text(encoding="utf-8")


PLAN_FOLLOW_UP = (
    "Now carry out this plan, one step at a time: reply with a short thought and one ```python block."
)


def task_prompt(task: Task, follow_up: bool = False) -> str:
    """The user message that states ``task``."""
    lines = [("New task (the kernel keeps its state): " if follow_up else "Task: ") + task.question]
    if task.files:
        lines.append("Data files in the working directory: " + ", ".join(task.files))
    if task.parameters:
        lines.append(
            "Parameters (already defined as variables in the kernel): " + describe_parameters(task.parameters)
        )
    return "\n".join(lines)


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
                messages.append({"role": "user", "content": task_prompt(entry, follow_up=tasks_seen > 0)})
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
            return len(task_prompt(entry))
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
