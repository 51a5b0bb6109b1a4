"""The sessions of ``nbagent mcp``: each is an Agent's kernel, notebook and working folder, driven by
another agent's tool calls instead of by a model.

A session is an :class:`~nbagent.Agent` (the server's settings, a model standing for the client)
driving an :class:`~nbagent.agent.session.Session` (the kernel, memory and notebook): its question
was opened with :meth:`~nbagent.Agent.aopen_task` and its steps come from
:meth:`~nbagent.Agent.arun_code`, so the jail, the setup cell, observations, redaction, restarts and
the notebook are those of ``nbagent run``. Paths a client gives are read relative to the server's
root folder and must stay inside it: the calling agent chooses notebooks and data files, but only
where the server's user put it to work.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agent.agent import Agent, RunResult
from ..agent.config import setting
from ..agent.observe import Observer
from ..agent.session import Session as AgentSession
from ..exceptions import ModelError, UsageError
from ..execution.kernel import DEFAULT_KERNEL
from ..execution.sandbox import Sandbox
from ..models import Message, Model, Reply
from ..records import Step

DEFAULT_QUESTION = "Work done through nbagent's MCP server"
DEFAULT_IDLE_TIMEOUT = 30 * 60.0


class ClientModel(Model):
    """Stands for the calling agent: a session's steps are its tool calls, never a model's reply."""

    def __init__(self, name: str = "mcp-client") -> None:
        self.name = name

    async def acomplete(self, messages: Sequence[Message], stop: Sequence[str] = ()) -> Reply:
        raise ModelError("an MCP session has no model: its steps come from run_code calls")


@dataclass
class SessionSettings:
    """What ``nbagent mcp``'s own flags decide for every session (a client can change none of it)."""

    root: Path
    kernel: str = DEFAULT_KERNEL
    sandbox: Sandbox | None = None
    timeout: float = setting("timeout").default
    max_restarts: int = setting("max_restarts").default
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    observer: Observer = field(default_factory=Observer)
    max_total_tokens: int | None = None
    """Budget of one ``ask`` run, in tokens (sessions call no model)."""
    max_cost: float | None = None
    """Budget of one ``ask`` run, in US dollars."""


@dataclass
class Session:
    """One client's kernel and notebook: ``agent`` drives them (its :attr:`work`)."""

    id: str
    agent: Agent
    notebook: Path
    owner: str | None = None
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    answer: str | None = None

    @property
    def work(self) -> AgentSession:
        """The kernel, memory and notebook the client's steps go to."""
        return self.agent.session


class SessionManager:
    """Opens, finds, runs and closes sessions; closes the idle ones and those of clients that left."""

    def __init__(self, settings: SessionSettings, model: Callable[[], Model] | None = None) -> None:
        self.settings = settings
        self.make_model = model
        self.sessions: dict[str, Session] = {}

    # -- paths --------------------------------------------------------------------------------

    def inside_root(self, given: str, what: str) -> Path:
        """``given`` (relative to the root) as an absolute path; :class:`UsageError` if outside the root."""
        root = self.settings.root
        path = (root / Path(given).expanduser()).resolve()
        if not path.is_relative_to(root):
            raise UsageError(
                f"{what} {given!r} is outside the server's folder {str(root)!r}; give a path inside it"
            )
        return path

    # -- sessions -----------------------------------------------------------------------------

    def _agent(self, model: Model, **settings: Any) -> Agent:
        s = self.settings
        return Agent(
            model,
            kernel=s.kernel,
            sandbox=s.sandbox,
            timeout=s.timeout,
            max_restarts=s.max_restarts,
            observer=s.observer,
            **settings,
        )

    async def open(
        self,
        files: Sequence[str] = (),
        notebook: str | None = None,
        question: str | None = None,
        overwrite: bool = False,
        owner: str | None = None,
        client: str = "mcp-client",
    ) -> Session:
        """Start a kernel and a notebook; data files are copied beside the notebook.

        ``owner``: the MCP session that opened it (HTTP); ``client``: the name the notebook records
        for whoever writes the steps.
        """
        session_id = secrets.token_hex(4)
        while session_id in self.sessions:
            session_id = secrets.token_hex(4)
        path = self.inside_root(notebook or f"nbagent-session-{session_id}.ipynb", "notebook")
        if path.suffix != ".ipynb":
            raise UsageError(f"notebook {notebook!r} must end in .ipynb")
        sources = [self.inside_root(f, "data file") for f in files]
        agent = self._agent(ClientModel(client))
        try:
            await agent.aopen_task(question or DEFAULT_QUESTION, sources, path, overwrite=overwrite)
        except BaseException:
            await agent.aclose()
            raise
        session = Session(session_id, agent, path, owner)
        self.sessions[session_id] = session
        return session

    def get(self, session_id: str) -> Session:
        """The open session ``session_id``; :class:`UsageError` if there is none."""
        session = self.sessions.get(session_id)
        if session is None:
            known = ", ".join(sorted(self.sessions)) or "none"
            raise UsageError(
                f"no open session {session_id!r} (open sessions: {known}); "
                "call open_session first (idle sessions close after "
                f"{self.settings.idle_timeout:g} s)"
            )
        session.last_used = time.monotonic()
        return session

    async def run_code(self, session_id: str, code: str, thought: str = "") -> tuple[Session, Step]:
        """Run ``code`` as the session's next step."""
        session = self.get(session_id)
        async with session.lock:  # one step at a time per kernel; other sessions go on
            step, answer = await session.agent.arun_code(code, thought)
            session.last_used = time.monotonic()
            if answer is not None:
                session.answer = answer
        return session, step

    async def close(self, session_id: str) -> Session:
        """Shut the session's kernel down and record how the notebook ended."""
        session = self.get(session_id)
        del self.sessions[session_id]
        async with session.lock:
            recorder = session.work.recorder
            if recorder is not None:
                recorder.finish_task(
                    status="answered" if session.answer is not None else "closed", answer=session.answer
                )
                recorder.save()
            await session.agent.aclose()
        return session

    async def close_all(self) -> None:
        """Close every session (the server is stopping or its client left)."""
        for session_id in list(self.sessions):
            try:
                await self.close(session_id)
            except Exception:  # one broken kernel must not keep the others running
                pass

    async def close_idle(self, alive: Callable[[str], bool] | None = None) -> list[str]:
        """Close the sessions idle longer than the idle timeout, and those whose client is gone."""
        now = time.monotonic()
        closing = [
            s.id
            for s in self.sessions.values()
            if not s.lock.locked()
            and (
                now - s.last_used > self.settings.idle_timeout
                or (alive is not None and s.owner is not None and not alive(s.owner))
            )
        ]
        for session_id in closing:
            try:
                await self.close(session_id)
            except Exception:
                pass
        return closing

    # -- whole runs ---------------------------------------------------------------------------

    async def ask(self, question: str, files: Sequence[str] = ()) -> RunResult:
        """A whole nbagent run with the server's model, in a notebook of its own under the root."""
        if self.make_model is None:
            raise UsageError("this server has no model for ask: start it with nbagent mcp --model MODEL")
        sources = [self.inside_root(f, "data file") for f in files]
        path = self.settings.root / f"nbagent-ask-{secrets.token_hex(4)}.ipynb"
        agent = self._agent(
            self.make_model(),
            max_total_tokens=self.settings.max_total_tokens,
            max_cost=self.settings.max_cost,
        )
        try:
            return await agent.arun(question, sources, path)
        finally:
            await agent.aclose()


def step_status(step: Step) -> str:
    """How a step's code ended: ok, error, timeout, died, interrupted, or no-code."""
    return "no-code" if step.execution is None else step.execution.status


def step_record(step: Step) -> dict[str, Any]:
    """A step as read_notebook reports it."""
    return {
        "step": step.number,
        "thought": step.thought,
        "code": step.code,
        "status": step_status(step),
        "observation": step.observation.text,
    }
