"""The Python that runs inside the kernel, kept here as package data, and the host's view of it.

Each file of this folder is plain Python the kernel runs as text (never imported by the host):
the recorded setup cell (``final_answer``, the random seed, re-runs past failed steps), the agent's
unrecorded part (display summaries for the model, the typed hand-over of answers), the host-bridge
client and the tool bases. The functions below read them out as source; they import nothing of
nbagent, so every layer (executors, tools, the agent) can use them.
"""

from __future__ import annotations

import re
import secrets
from functools import cache
from importlib import resources


def kernel_source(name: str) -> str:
    """The text of one file of this folder, e.g. ``"host_bridge.py"``."""
    return (resources.files(__name__) / name).read_text(encoding="utf-8")


SETUP_MARKER = "# nbagent setup"
"""The comment nbagent's own code in the kernel starts with, for a person reading it (executors are
told setup code by ``aexecute(..., setup=True)``, never by its text)."""

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
    parts = []
    for part in SETUP_PARTS:
        text = kernel_source(part).strip()
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
    parts = [kernel_source(part).strip() for part in AGENT_PARTS]
    code = "\n\n\n".join(parts) + "\n"
    if not re.fullmatch(r"[0-9a-f]{1,64}", key):
        raise ValueError("the answer key must be hex digits")
    return SETUP_MARKER + " (the agent's part)\n" + code.replace("NBAGENT_ANSWER_KEY", key)
