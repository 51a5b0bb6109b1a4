"""The Executor protocol: what every place that runs a step's code offers the agent.

A kernel process (:class:`~nbagent.Kernel`) and the user's own shell (:class:`~nbagent.ShellExecutor`)
both run code and report an :class:`~nbagent.Execution`; the agent, the environment probe and the
answer fetch know them only through this protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .outputs import Execution


class Executor(Protocol):
    """Runs code somewhere (a kernel process, the user's own shell) and reports an Execution."""

    cwd: Path

    async def astart(self) -> None: ...
    async def aexecute(
        self, code: str, timeout: float | None = None, *, silent: bool = False, setup: bool = False
    ) -> Execution:
        """Run ``code``; ``silent``: outside the history and unseen (no execution count, no echo).

        ``setup``: nbagent's own setup code (recorded in the notebook, run like a step), which a
        user's shell keeps out of its In/Out history; a kernel of nbagent's own treats it as any cell.
        """
        ...

    async def ainterrupt(self) -> None:
        """Interrupt the code running now, as Ctrl-C would (the user stopped the run)."""
        ...

    async def ashutdown(self) -> None: ...
