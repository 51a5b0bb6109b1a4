"""The records of a run: the question asked, each step, each plan, and what a step showed the model.

One module of plain dataclasses that everything reads: the agent loop and its memory, the
notebook recorder, restoring a run, the step log, ``%%agent`` and the MCP server. It imports only
the two records it is made of (an :class:`~nbagent.Execution`, a :class:`~nbagent.Usage`), so the
recorder can use it without importing the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .execution.outputs import Execution
from .models.base import Usage

StepKind = Literal["action", "final"]


@dataclass
class Observation:
    """What the model is shown after a step: text, plus PNG images (base64) for vision models."""

    text: str
    images: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as kept in notebook metadata (images counted, not copied)."""
        return {"text": self.text, "images": len(self.images)}


@dataclass
class Task:
    """A question put to the agent, with the data files it was given."""

    question: str
    files: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

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
