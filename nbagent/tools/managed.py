"""Managed agents: an Agent offered to another Agent's code as a function ``name(task)``.

The manager's code calls it like any function; the call crosses the host bridge to the manager's
process, where the managed agent answers the task in its own kernel and writes its own notebook
next to the manager's (``<manager>.<name>-<n>.ipynb``). The call returns the managed agent's final
answer as a value (text, number, list/dict, DataFrame...), and the manager's notebook links to the
sub-notebook.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..exceptions import ToolDefinitionError
from ..notebook import schema
from .bridge import HostResult
from .tool import Tool, ToolParameter, ToolSpec


class ManagedAgent(Protocol):
    """What a manager needs of the agent it manages (:class:`~nbagent.Agent` has it all).

    A protocol rather than ``Agent`` itself: tools sit below the agent loop, which imports them.
    """

    name: str | None
    description: str | None

    @property
    def recorder(self) -> Any: ...

    def new_session(self, executor: Any = None, *, run_folder: Path | None = None) -> Any: ...

    async def arun(
        self,
        question: str,
        files: Any = (),
        notebook: Any = None,
        *,
        reset: bool = True,
        overwrite: bool = False,
        workdir: Any = None,
        parameters: Any = None,
        session: Any = None,
    ) -> Any: ...

    async def aclose(self) -> None: ...


@dataclass
class ManagerSession:
    """Where the manager's current session writes: its notebook (if any) and working directory."""

    notebook: Path | None
    workdir: Path
    overwrite: bool = False
    run_folder: Path | None = None
    """In the jail: the manager's run folder (seen at ``workdir``), which its managed agents share."""


class ManagedAgentTool(Tool):
    """A managed agent as a host-side tool: ``name(task: str) -> Any``."""

    host = True

    def __init__(self, agent: ManagedAgent) -> None:
        name = getattr(agent, "name", None)
        description = getattr(agent, "description", None)
        if not name or not description:
            raise ToolDefinitionError(
                "a managed agent needs a name and a description: "
                "create it with Agent(..., name='analyst', description='what it is good at')"
            )
        self.agent = agent
        self.name = name
        self.description = description
        self.session: ManagerSession | None = None
        self.runs = 0
        self._lock: asyncio.Lock | None = None
        self._agent_session: Any = None

    def _build_spec(self) -> ToolSpec:
        return ToolSpec(
            name=self.name,
            description=(
                f"{self.description.strip()}\n\n"
                "A managed agent: it works on `task` in its own kernel and notebook, then returns its\n"
                "final answer (text, a number, a list/dict, a DataFrame...). It cannot see your\n"
                "variables, so say everything it needs in the task; it shares your working directory,\n"
                "so it can read the files you name."
            ),
            parameters=(
                ToolParameter(
                    name="task",
                    annotation="str",
                    description="what to do, in plain words, with every detail it needs.",
                ),
            ),
            returns="Any",
            returns_description="the managed agent's final answer.",
        )

    def source(self) -> tuple[str, Any]:
        raise ToolDefinitionError(f"managed agent {self.name!r} is an Agent, not code: it cannot be saved")

    async def forward(self, task: str) -> HostResult:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one task at a time: an Agent holds one kernel and one memory
            return await self._run(task)

    async def _run(self, task: str) -> HostResult:
        session = self.session
        if session is None:
            raise RuntimeError(f"managed agent {self.name!r} was called outside a manager's run")
        self.runs += 1
        notebook = self._notebook_path(session)
        # Same run, same files: a managed agent's jail gets the manager's run folder. Each task
        # is a session of its own; the previous task's kernel is shut down first.
        previous = self._agent_session
        self._agent_session = self.agent.new_session(run_folder=session.run_folder)
        if previous is not None:
            await previous.aclose()
        result = await self.agent.arun(
            task,
            notebook=notebook,
            overwrite=session.overwrite,
            workdir=session.workdir,
            session=self._agent_session,
        )
        if notebook is not None and session.notebook is not None:
            _link_back(self.agent, session.notebook)
        link = f"[{notebook.name}]({notebook.name})" if notebook is not None else "(notebook kept in memory)"
        meta = {
            "managed_agent": self.name,
            "notebook": notebook.name if notebook is not None else None,
            "status": result.status,
            "steps": len(result.steps),
        }
        if not result.answered:
            why = f"{result.status}" + (f": {result.error}" if result.error else "")
            error = ManagedAgentError(
                f"managed agent {self.name!r} ended without an answer ({why}); see its notebook {link}"
            )
            error.note = f"managed agent `{self.name}` → {link}: no answer ({why})"
            raise error
        note = f"managed agent `{self.name}` → {link}: {_short(result.answer_text or '')}"
        return HostResult(value=result.answer, note=note, meta=meta)

    def _notebook_path(self, session: ManagerSession) -> Path | None:
        if session.notebook is None:
            return None
        folder, stem = session.notebook.parent, session.notebook.stem
        number = self.runs
        path = folder / f"{stem}.{self.name}-{number}.ipynb"
        while path.exists() and not session.overwrite:
            number += 1
            path = folder / f"{stem}.{self.name}-{number}.ipynb"
        self.runs = number
        return path


class ManagedAgentError(RuntimeError):
    """A managed agent ended its task without a final answer."""

    note: str = ""


def _link_back(agent: ManagedAgent, manager: Path) -> None:
    # The sub-notebook says who asked: a line in its header cell and a metadata entry.
    recorder = agent.recorder
    if recorder is None or recorder.path is None:
        return
    link = manager.name if manager.parent == recorder.path.parent else str(manager)
    if recorder.nb.cells:
        recorder.nb.cells[0].source += f"\n\n*Delegated by the manager notebook [{link}]({link}).*"
    schema.set_notebook_key(recorder.nb, "manager", {"notebook": link})
    recorder.save()


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
