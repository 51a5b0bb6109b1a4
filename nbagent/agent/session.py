"""A :class:`Session`: what belongs to one conversation, apart from the agent that drives it.

An :class:`~nbagent.Agent` holds settings, a model, tools and listeners; a session holds where the
code runs (its executor), what the model has been told (its memory), its notebook (its recorder),
its working folder, and the state of the question it has open (restarts, the answer key, what the
question created). :meth:`Agent.run <nbagent.Agent.run>` opens a session; ``reset=False`` goes
on in it; ``session=`` goes on in a session another agent opened (``%%agent`` makes an agent per
cell, with that cell's settings, and keeps one session for the whole conversation).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import UsageError
from ..execution.executor import Executor
from ..execution.jail import JAIL_UID, make_jail_folder
from ..execution.kernel import Kernel
from ..execution.sandbox import Sandbox
from ..kernel_code import new_answer_key
from ..notebook.recorder import NotebookRecorder
from ..notebook.redact import Redactor
from .memory import Memory

if TYPE_CHECKING:
    from ..tools.toolbox import Toolbox


class Session:
    """One conversation: its executor, memory, notebook and working folder.

    Args:
        executor: run the code here (the user's shell for ``%%agent``, a pooled kernel for
            ``batch``); it is never shut down by the session. Default: the session starts a
            kernel of its own when a question opens it, and shuts it down in :meth:`aclose`.
        run_folder: the jail's writable folder to use instead of making one (a managed agent
            works in its manager's run folder).
    """

    def __init__(self, executor: Executor | None = None, *, run_folder: Path | None = None) -> None:
        self.given_executor = executor
        self.executor: Executor | None = executor
        self.workdir: Path | None = executor.cwd if executor is not None else None
        self.memory: Memory | None = None
        self.recorder: NotebookRecorder | None = None
        self.redactor = Redactor({})
        self.toolbox: Toolbox | None = None
        """The tools set up in its kernel (those of the agent that opened it)."""
        self.answer_key = new_answer_key()
        """Only an answer stamped with this key counts (see :mod:`nbagent.kernel_code`)."""
        self.final_answer_id: str | None = None
        """The identity of nbagent's ``final_answer`` in the kernel, checked after each step."""
        self.shared_run_folder = run_folder
        self.made_run_folder: Path | None = None
        # The open question.
        self.first_step = 1
        self.restarts = 0
        self.gave_up: str | None = None
        self.created: list[Path] = []
        """What the open question created (removed if it is refused before its first step)."""

    @property
    def started(self) -> bool:
        """True once a question has been opened in it (it has memory and a notebook)."""
        return self.memory is not None

    @property
    def run_folder(self) -> Path | None:
        """The host folder the kernel writes in (the jail's run folder; else its working folder)."""
        cwd = getattr(self.executor, "cwd", None)
        return cwd if isinstance(cwd, Path) else None

    @property
    def jail_folder(self) -> Path | None:
        """The run folder of the jailed kernel this session started (shared with managed agents)."""
        executor = self.executor
        if isinstance(executor, Kernel) and executor.jailed and executor is not self.given_executor:
            return executor.cwd
        return None

    @property
    def bridge_folder(self) -> Path | None:
        """Where the host bridge's socket goes (a jailed kernel's own folder)."""
        folder = getattr(self.executor, "bridge_folder", None)
        return folder if isinstance(folder, Path) else None

    def choose_workdir(self, workdir: str | os.PathLike[str] | None, notebook: Path | None) -> Path:
        """The working folder of a new conversation: the given executor's, else ``workdir``, else
        the notebook's folder, else the current directory."""
        if self.given_executor is not None:
            chosen = self.given_executor.cwd
        elif workdir is not None:
            chosen = Path(workdir).resolve()
        elif notebook is not None:
            chosen = notebook.parent
        else:
            chosen = Path.cwd()
        if not chosen.is_dir():
            raise UsageError(f"working directory {str(chosen)!r} does not exist")
        return chosen

    async def start_kernel(
        self, kernel: str, sandbox: Sandbox, notebook: Path | None, workdir: Path, files: Iterable[Path] = ()
    ) -> None:
        """A fresh kernel of spec ``kernel`` for a new conversation (or a resumed notebook's), the
        one it had shut down; nothing when the session was given its executor."""
        if self.given_executor is not None:
            return
        if self.executor is not None:
            await self.executor.ashutdown()
        self.executor = self._new_kernel(kernel, sandbox, notebook, workdir, files)
        await self.executor.astart()

    def begin(self, memory: Memory, recorder: NotebookRecorder, redactor: Redactor, workdir: Path) -> None:
        """Begin a conversation with this memory and notebook, working in ``workdir``."""
        self.memory, self.recorder, self.redactor = memory, recorder, redactor
        self.workdir = workdir
        self.final_answer_id = None

    def begin_question(self, first_step: int) -> None:
        """A question starts (or goes on) at step ``first_step``: its restarts count from zero."""
        self.first_step = first_step
        self.restarts, self.gave_up = 0, None

    def _new_kernel(
        self, name: str, sandbox: Sandbox, notebook: Path | None, workdir: Path, files: Iterable[Path]
    ) -> Kernel:
        """The session's kernel; a jailed one writes in a run folder nbagent makes, seen at ``workdir``.

        nbagent never changes the owner of a user's folder, and a jailed kernel must not see the
        notebook (it could rewrite its own record) nor other runs' files. So the jail's one
        writable folder is ``<notebook stem>.work/`` beside the notebook (without a notebook, a
        temporary folder), holding copies of the data files, and is bound at ``workdir``: the code
        sees the paths a stock re-run from the notebook's folder sees.
        """
        kernel = Kernel(name, cwd=workdir, sandbox=sandbox)
        if not kernel.jailed:
            return kernel
        if self.shared_run_folder is not None:
            folder = self.shared_run_folder  # a managed agent works in its manager's folder
        elif notebook is not None:
            folder = notebook.with_name(notebook.stem + ".work")
            if not folder.is_dir():
                make_jail_folder(folder)
                self.made_run_folder = folder  # removed again if the run is refused at once
        else:
            folder = Path(tempfile.mkdtemp(prefix="nbagent-work-"))
            if os.geteuid() == 0:
                os.chown(folder, JAIL_UID, JAIL_UID)
        for src in files:
            if not (folder / src.name).exists():
                shutil.copy2(src, folder / src.name)
        return Kernel(name, cwd=folder, sandbox=sandbox, inside_cwd=workdir, run_folder=True)

    async def aclose(self) -> None:
        """Shut down the kernel the session started (a given executor is left running)."""
        if self.executor is not None and self.executor is not self.given_executor:
            await self.executor.ashutdown()
        self.executor = self.given_executor
