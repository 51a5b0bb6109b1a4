"""Planning: every N steps the model stops to list the facts known, the facts to find, and a plan.

The plan is a separate model call that runs no code. It is kept in memory (the model sees it as
its own message, followed by "now carry out this plan") and written to the notebook as a markdown
cell before the step it precedes.
"""

from __future__ import annotations

import re
import time
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Literal

from ..exceptions import UsageError
from ..records import Plan
from .memory import Memory

if TYPE_CHECKING:
    from ..models import Model
    from ..notebook.recorder import NotebookRecorder

_CODE_BLOCK = re.compile(r"```[\w+.-]*\n.*?(```|\Z)", re.DOTALL)


@cache
def _prompt(kind: str) -> str:
    path = resources.files("nbagent") / "agent" / "prompts" / f"plan_{kind}.md"
    return path.read_text(encoding="utf-8").strip()


def check_planning_interval(interval: int | None) -> int | None:
    """``interval`` if usable (``None``: no planning); :class:`UsageError` otherwise."""
    if interval is None:
        return None
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise UsageError(
            f"planning_interval must be a whole number of steps, at least 1 (or None), not {interval!r}"
        )
    return interval


def plan_due(interval: int | None, steps_done: int, final: bool) -> bool:
    """Whether to plan before the next step: before the first step, then every ``interval`` steps."""
    return interval is not None and not final and steps_done % interval == 0


async def make_plan(
    model: Model, memory: Memory, before_step: int, remaining_steps: int, first: bool
) -> Plan:
    """Ask the model for a plan (initial, or an update after some steps); returns it, not yet stored."""
    kind: Literal["initial", "update"] = "initial" if first else "update"
    request = _prompt(kind).format(remaining_steps=remaining_steps)
    messages = memory.to_messages(images=model.supports_images)
    last = messages[-1]
    if last["role"] == "user" and isinstance(last["content"], str):
        messages[-1] = {"role": "user", "content": f"{last['content']}\n\n{request}"}
    else:
        messages.append({"role": "user", "content": request})
    t0 = time.perf_counter()
    reply = await model.acomplete(messages, stop=("\nObservation:",))
    duration = time.perf_counter() - t0
    text = _CODE_BLOCK.sub("", reply.text).strip() or "*(the model gave an empty plan)*"
    return Plan(
        before_step=before_step,
        text=text,
        reply=reply.text,
        usage=reply.usage,
        model_duration=duration,
        kind=kind,
    )


def record_plan(recorder: NotebookRecorder, plan: Plan, model: str) -> None:
    """Write the plan as a markdown cell."""
    title = "Plan" if plan.kind == "initial" else "Updated plan"
    recorder.add_note(
        f"**{title}** (before step {plan.before_step})\n\n{plan.text}",
        role="plan",
        before_step=plan.before_step,
        kind=plan.kind,
        model=model,
        reply=plan.reply,
        text=plan.text,
        usage=plan.usage.to_dict(),
        model_duration=round(plan.model_duration, 6),
    )
