"""A person's answer to "run this step?", read the same way by every prompt that asks it
(``nbagent run --approve`` on the terminal, ``%%agent --approve`` under the cell)."""

from __future__ import annotations

from typing import Literal

from ..exceptions import StopRun

Decision = Literal["run", "skip", "edit"]

_ANSWERS: dict[str, Decision | None] = {
    **dict.fromkeys(("r", "run", "y", "yes", ""), "run"),
    **dict.fromkeys(("s", "skip", "n", "no"), "skip"),
    **dict.fromkeys(("e", "edit"), "edit"),
    **dict.fromkeys(("t", "stop", "q", "quit"), None),
}


def read_decision(answer: str, number: int) -> Decision | None:
    """What ``answer`` asks for step ``number``; ``None`` when it is none of the choices (ask
    again). A stop raises :class:`~nbagent.StopRun`."""
    choice = answer.strip().lower()
    if choice not in _ANSWERS:
        return None
    decision = _ANSWERS[choice]
    if decision is None:
        raise StopRun(f"stopped by the user at step {number}")
    return decision
