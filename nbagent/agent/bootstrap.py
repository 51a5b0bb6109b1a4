"""Kernel-side definitions (host view): the setup code sent to every kernel, and answer fetching.

The setup code is plain Python kept as package data in ``kernel_code/``, in two parts. The
recorded part (``final_answer``, the random seed, re-runs past failed steps) is run as the first
cell of every run and written into the notebook as its setup cell, short enough to read, so a
notebook re-runs with nothing of nbagent installed. The agent's part (display summaries for the
model, the typed hand-over of answers) is run right after it and not written down: a person
re-running the notebook has no use for it.
"""

from __future__ import annotations

import re
import secrets
from functools import cache
from importlib import resources
from typing import Any, Protocol

from ..exceptions import KernelError
from ..execution.outputs import ANSWER_MIME, Execution
from . import answers

SETUP_MARKER = "# nbagent setup"
"""Every setup cell starts with this comment (executors use it to keep the setup out of history)."""

SETUP_PARTS = ("final_answer.py", "reproducibility.py", "rerun.py")
"""Files of ``nbagent/kernel_code`` joined, in this order, into the setup cell."""

AGENT_PARTS = ("formatters.py", "hand_over.py")
"""Files of ``nbagent/kernel_code`` run after the setup cell during a run, not recorded."""


@cache
def setup_code(seed: int | None = 0) -> str:
    """The source of the notebook's setup cell.

    ``seed``: the value the global random generators are seeded with (``None``: as in ``%%agent``,
    where the session is the user's own: not seeded, and its cells are not transformed to go past
    failed steps, since the audit notebook documents the run rather than re-running on its own).
    """
    base = resources.files("nbagent") / "kernel_code"
    parts = []
    for part in SETUP_PARTS:
        text = (base / part).read_text(encoding="utf-8").strip()
        if seed is None:
            if part in ("reproducibility.py", "rerun.py"):
                continue
        elif part == "reproducibility.py":
            text = text.replace('{"seed": 0,', f'{{"seed": {int(seed)},', 1)
        parts.append(text)
    # One blank line between definitions (not the two of PEP 8): the cell is read, and short.
    return re.sub(r"\n{3,}", "\n\n", "\n\n".join(parts)) + "\n"


def new_answer_key() -> str:
    """A fresh key for :func:`agent_code`: a displayed answer payload without it is not an answer."""
    return secrets.token_hex(16)


def agent_code(key: str) -> str:
    """What the kernel runs after the setup cell during a run (not recorded): display summaries
    for the model, and final_answer's typed hand-over of the answer, stamped with ``key``."""
    base = resources.files("nbagent") / "kernel_code"
    parts = [(base / part).read_text(encoding="utf-8").strip() for part in AGENT_PARTS]
    code = "\n\n\n".join(parts) + "\n"
    if not re.fullmatch(r"[0-9a-f]{1,64}", key):
        raise ValueError("the answer key must be hex digits")
    return SETUP_MARKER + " (the agent's part)\n" + code.replace("NBAGENT_ANSWER_KEY", key)


FETCH_ANSWER_CODE = (
    "from IPython.display import display as _nbagent_display\n"
    f"_nbagent_display({{{ANSWER_MIME!r}: _nbagent_encode_answer(_nbagent_answer)}}, raw=True)\n"
    "del _nbagent_display"
)
"""Run in the kernel (not recorded) to fetch an answer too large to travel in the notebook."""


class AnswerExecutor(Protocol):
    """What :func:`complete_answer` needs of an executor."""

    async def aexecute(self, code: str, timeout: float | None = None) -> Execution: ...


async def complete_answer(executor: AnswerExecutor, payload: dict[str, Any]) -> dict[str, Any]:
    """The answer payload with its value: a deferred (large) value is fetched from the kernel."""
    if not payload.get("deferred"):
        return payload
    text = str(payload.get("text", ""))
    try:
        execution = await executor.aexecute(FETCH_ANSWER_CODE, timeout=120)
    except KernelError as exc:  # the run has answered: its text is still the answer
        fetched, why = None, str(exc)
    else:
        fetched = execution.answer_bundle(payload.get("key"))
        why = str(execution.error or "nothing came back")
    if fetched is None or fetched.get("deferred"):
        note = f"the answer was too large to carry in the notebook and fetching it failed ({why})"
        return {**payload, "kind": "str", "value": text, "note": note, "deferred": False}
    return {**fetched, "text": text}


def decode_answer(payload: dict[str, Any]) -> Any:
    """The value of an answer payload (see :func:`nbagent.agent.answers.decode_answer`, which
    also says when the value is only the answer's text)."""
    return answers.decode_answer(payload).value


def answer_text(payload: dict[str, Any]) -> str:
    """A short human-readable form of an answer payload."""
    return str(payload.get("text", ""))
