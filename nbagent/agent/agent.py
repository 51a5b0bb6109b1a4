"""The agent loop: ask the model, run its code, show it what happened, until it answers.

The loop knows executors, models, observers and the recorder only through their small
interfaces; it never touches ZMQ or nbformat itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from jupyter_core.utils import run_sync
from nbformat import NotebookNode

from ..exceptions import KernelDiedError, KernelError, ModelError, StopRun, UntrustedToolError, UsageError
from ..execution.executor import Executor
from ..execution.kernel import Kernel
from ..execution.outputs import ANSWER_MIME, ErrorInfo, Execution
from ..execution.sandbox import Sandbox
from ..kernel_code import agent_code, kernel_source, setup_code
from ..models import Model, Reply, Usage, resolve_model
from ..notebook import schema
from ..notebook.recorder import ANSWER_SOURCE, NotebookRecorder, file_digest
from ..notebook.redact import Redactor
from ..notebook.safe_files import check_writable_folder, copy_atomic
from ..records import Observation, Plan, Step, Task
from ..tools.tool import Tool
from ..tools.toolbox import Toolbox
from .answers import complete_answer, decode_answer
from .config import AgentConfig, check_names, setting_names
from .environment import probe_environment
from .memory import HistoryLimits, Memory, default_system_prompt
from .observe import Observer
from .parameters import check_parameters, parameters_code
from .parsing import ParsedReply, assigns_name, parse_reply
from .planning import make_plan, plan_due, record_plan
from .restore import SavedRun, read_run, replay_steps
from .session import Session

RunStatus = Literal["answered", "max_steps", "error", "interrupted", "kernel_died", "budget", "stopped"]

Approval = Callable[[int, str, str], "bool | str | Awaitable[bool | str]"]
"""``approve(step_number, thought, code)``: True runs the code, False skips it, a string runs that
code instead; raising :class:`~nbagent.StopRun` ends the run (see :class:`Agent`)."""

STOP_SEQUENCES = ("\nObservation:",)

NO_CODE = (
    "Your reply had no ```python code block, so nothing ran. Reply with a short thought and one "
    "```python block. When you have the answer, call final_answer(value) in a code block."
)


CUT_OFF = (
    "Your reply was cut off: it reached the length limit of one reply before it ended, so none of "
    "its code ran. Reply again, shorter: a brief thought and one short ```python block (split long "
    "work over several steps; print summaries rather than whole tables)."
)

EMPTY_REPLY = (
    "Your reply was empty: the server sent no text, so nothing ran. Reply with a short thought and "
    "one ```python block."
)


RESERVED_FINAL_ANSWER = (
    "This code was not run: it defines, assigns, imports or deletes `final_answer`, which the "
    "environment provides and the run depends on. Do not redefine it; call final_answer(value) "
    "when you have the answer. Reply with the code again without that part."
)


REFUSED = (
    "The user refused to run this code, so it did not run. Take their refusal into account: "
    "try another way, or explain in a thought what you need and why."
)


def _edited_note(code: str) -> str:
    return f"[The user edited your code before it ran. This is the code that ran:]\n```python\n{code}\n```\n"


def _final_nudge(max_steps: int) -> str:
    return (
        f"You have used all {max_steps} steps. Reply now with one ```python block that calls "
        "final_answer(...) with your best answer from what you have found so far."
    )


_FINAL_ANSWER_MARK = "nbagent-final-answer-check:"
# Run silently after each step. Identity, not source: a step cannot give its own function the
# id of nbagent's, nor swap the code inside nbagent's function without changing this pair.
_FINAL_ANSWER_IDENTITY = (
    "(id(globals().get('final_answer')), id(getattr(globals().get('final_answer'), '__code__', None)))"
)
_FINAL_ANSWER_PROBE = (
    f"__import__('sys').stdout.write({_FINAL_ANSWER_MARK!r} + repr({_FINAL_ANSWER_IDENTITY}) + '\\n')"
)
REPLACED_FINAL_ANSWER = (
    "This step replaced `final_answer` (for instance through globals()), so nothing it answered "
    "counts; nbagent's final_answer has been restored. Do not replace it; call final_answer(value)."
)


class RunListener:
    """Receives a run's progress as it happens (live logs, progress bars, live cell output).

    Subclass and override what you need; every method does nothing by default.
    """

    def task_started(self, task: Task, notebook_path: Path | None) -> None:
        """A question was put to the agent."""

    def model_called(self, number: int) -> None:
        """The model was asked for the reply of step ``number``; its text follows (or not) as it comes."""

    def reply_text(self, number: int, text: str) -> None:
        """A piece of the reply of step ``number`` arrived (the model streams its reply)."""

    def reply_received(self, number: int, thought: str, code: str | None) -> None:
        """The model replied; ``code`` is about to run (``None``: the reply had none)."""

    def step_finished(self, step: Step) -> None:
        """A step ran and its observation was made."""

    def plan_made(self, plan: Plan) -> None:
        """The model made (or updated) its plan."""

    def run_finished(self, result: RunResult) -> None:
        """The question was answered, or the run ended without an answer."""


@dataclass
class RunResult:
    """The outcome of :meth:`Agent.run`.

    ``status`` is ``"answered"``, ``"max_steps"`` (no answer within the step limit),
    ``"error"`` (the model or kernel failed; see ``error``), ``"interrupted"``, or
    ``"kernel_died"`` (the kernel had to be restarted more than ``max_restarts`` times),
    ``"budget"`` (``max_total_tokens`` or ``max_cost`` was reached; ``resume`` with a larger
    budget goes on) or ``"stopped"`` (the approval callback raised :class:`~nbagent.StopRun`).
    ``answer`` is the value given to ``final_answer``, rebuilt as the same kind of object
    (pandas objects with index and dtypes, numpy arrays, tuples, sets, datetimes, Decimals...;
    figures as PIL images); a value nbagent cannot carry is exactly its ``str()``, and
    ``answer_note`` then says so (it is ``None`` for a faithful answer). ``answer_text`` is the
    answer's readable form.
    """

    question: str
    status: RunStatus
    answer: Any = None
    answer_text: str | None = None
    answer_note: str | None = None
    steps: list[Step] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    notebook_path: Path | None = None
    notebook: NotebookNode | None = None
    duration: float = 0.0
    error: str | None = None
    plans: list[Plan] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        """True when the model gave a final answer."""
        return self.status == "answered"


class Agent:
    """A code-first agent whose actions are cells run in a real IPython kernel.

    The agent holds settings (an :class:`~nbagent.AgentConfig`) and the objects a run uses
    (model, tools, listeners, approval); the kernel, memory and notebook of the question being
    answered are the :class:`~nbagent.agent.session.Session` it drives (:meth:`run` opens one,
    ``reset=False`` goes on in it, ``session=`` goes on in one another agent opened).

    Args:
        model: a :class:`~nbagent.models.Model` or a model string (litellm string,
            ``hf:MODEL_ID`` or ``scripted:PATH``); default: the ``model`` setting, else the
            ``NBAGENT_MODEL`` variable.
        config: the settings (default :class:`~nbagent.AgentConfig()`); ``**settings`` change
            some of them.
        settings: any :class:`~nbagent.AgentConfig` field by name, e.g. ``max_steps=3``,
            ``timeout=30``, ``api_base=...``, ``memory_limit="2G"``, ``planning_interval=2``,
            ``max_total_tokens=...``. A name that is not a setting is an
            :class:`~nbagent.UnknownSettingError` naming the nearest one.
        observer: turns executions into observations (default: from the ``observation_*``
            settings).
        history: how much of a long run is replayed to the model (default: from the
            ``history_*`` settings); see :class:`HistoryLimits`.
        system_prompt: replaces the packaged prompt (``nbagent/agent/prompts/system.md``).
        listeners: receive progress events (see :class:`RunListener`).
        executor: run steps here instead of a new kernel (``batch``'s pooled kernel): the
            executor of the agent's session, never shut down by it. ``%%agent`` gives a whole
            session instead (``run(..., session=...)``).
        tools: tools the code can call (:class:`~nbagent.Tool`, or plain typed, documented
            functions); defined in the kernel, or reached through the host bridge (``host=True``).
            Saved tools named by the ``tool_sources`` setting are added to them.
        managed_agents: Agents (each with a ``name`` and ``description``) the code can call as
            ``name(task)``; each runs in its own kernel and writes its own notebook.
        name: this agent's name, when it is managed by another agent.
        description: what this agent is good at, shown to a manager agent.
        sandbox: a :class:`~nbagent.Sandbox` (sets every sandbox setting at once) or a level
            (``"jail"``, ``"limits"``); other kernels ignore it.
        approve: called as ``approve(step_number, thought, code)`` before each step's code
            runs (it may be a coroutine function): ``True`` runs it, ``False`` does not (the model
            is told the user refused), a string runs that code instead (recorded as what ran,
            the model's own code kept in the cell's metadata as ``original_code``); raising
            :class:`~nbagent.StopRun` ends the run with status ``"stopped"``.
        model_kwargs: more keyword arguments for the model's constructor when ``model`` is a
            string (e.g. ``{"top_p": 0.9}``).
    """

    def __init__(
        self,
        model: str | Model | None = None,
        *,
        config: AgentConfig | None = None,
        observer: Observer | None = None,
        history: HistoryLimits | None = None,
        system_prompt: str | None = None,
        listeners: Sequence[RunListener] = (),
        executor: Executor | None = None,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        managed_agents: Sequence[Agent] = (),
        name: str | None = None,
        description: str | None = None,
        sandbox: Sandbox | str | None = None,
        approve: Approval | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        check_names(settings, where=f"{type(self).__name__}()")
        given = AgentConfig.from_objects(
            sandbox if isinstance(sandbox, Sandbox) else None, observer, history
        ) | dict(settings)
        if isinstance(sandbox, str):
            given["sandbox"] = sandbox
        if isinstance(model, str):
            given["model"] = model
        base = config if config is not None else AgentConfig()
        self.config = base.replace(where=f"{type(self).__name__}()", **given)
        defaults = AgentConfig()
        # What the user chose (here or in ``config``): on resume it wins over the notebook.
        self._explicit = set(given) | {n for n in setting_names() if getattr(base, n) != getattr(defaults, n)}
        self._active = self.config  # the settings of the open question (a resume may take the notebook's)
        self.approve = approve
        spec = model if model is not None else self.config.model
        kwargs = self.config.model_options().kwargs() | dict(model_kwargs or {})
        self.model = resolve_model(spec, **kwargs)
        if self.config.vision is not None:
            self.model.supports_images = self.config.vision  # an explicit choice wins over litellm's
        self._owns_model = not isinstance(model, Model)
        self._given_observer = observer
        self.observer = observer or self.config.observer()
        self.name, self.description = name, description
        all_tools: list[Tool | Callable[..., Any]] = [*tools, *_saved_tools(self.config)]
        self.toolbox = Toolbox(
            all_tools, managed_agents, default_tools=self.config.default_tools, seed=self.config.seed
        )
        prompt = system_prompt if system_prompt is not None else default_system_prompt()
        self.system_prompt = self.toolbox.apply_to_prompt(prompt, self.config.instructions)
        self.listeners = list(listeners)
        self._session = Session(executor)
        self._owns_session = True  # closed when the agent moves to another session, or closes

    # -- the settings of the open question --------------------------------------------------

    @property
    def max_steps(self) -> int:
        """Steps before a final answer is demanded (the ``max_steps`` setting)."""
        return self._active.max_steps

    @property
    def timeout(self) -> float | None:
        """Seconds a step may run (the ``timeout`` setting)."""
        return self._active.timeout

    @property
    def kernel_name(self) -> str:
        """The kernel spec a new session starts (the ``kernel`` setting)."""
        return self._active.kernel

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox a new session's kernel runs in (from the sandbox settings)."""
        return self._active.sandbox_spec()

    @property
    def history(self) -> HistoryLimits:
        """How much of a long run is replayed to the model (from the ``history_*`` settings)."""
        return self._active.history_limits()

    @property
    def max_restarts(self) -> int:
        """Kernel restarts one run survives (the ``max_restarts`` setting)."""
        return self._active.max_restarts

    @property
    def planning_interval(self) -> int | None:
        """Plan every N steps (the ``planning_interval`` setting)."""
        return self._active.planning_interval

    @property
    def max_total_tokens(self) -> int | None:
        """Tokens one question may use (the ``max_total_tokens`` setting)."""
        return self._active.max_total_tokens

    @property
    def max_cost(self) -> float | None:
        """US dollars one question may spend (the ``max_cost`` setting)."""
        return self._active.max_cost

    # -- public API ------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        """The session this agent drives: its kernel, memory, notebook and working folder."""
        return self._session

    def new_session(self, executor: Executor | None = None, *, run_folder: Path | None = None) -> Session:
        """A session for :meth:`arun` ``(session=...)``; see :class:`~nbagent.agent.session.Session`."""
        return Session(executor, run_folder=run_folder)

    @property
    def executor(self) -> Executor | None:
        """Where steps run (a :class:`~nbagent.Kernel` unless one was given)."""
        return self._session.executor

    @property
    def memory(self) -> Memory | None:
        """The memory of the current session."""
        return self._session.memory

    @property
    def recorder(self) -> NotebookRecorder | None:
        """The notebook of the current session."""
        return self._session.recorder

    @property
    def run_folder(self) -> Path | None:
        """The host folder the kernel writes in (the jail's run folder; else its working folder)."""
        return self._session.run_folder

    async def arun(
        self,
        question: str,
        files: Iterable[str | os.PathLike[str]] | None = (),
        notebook: str | os.PathLike[str] | None = None,
        *,
        reset: bool = True,
        overwrite: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> RunResult:
        """Answer ``question``; see :meth:`run`."""
        started = time.perf_counter()
        task = await self.aopen_task(
            question,
            files,
            notebook,
            reset=reset,
            overwrite=overwrite,
            workdir=workdir,
            parameters=parameters,
            session=session,
        )
        s = self._session
        assert s.memory is not None and s.recorder is not None
        created, s.created = s.created, []
        path = s.recorder.path
        result = RunResult(question=task.question, status="max_steps", notebook_path=path)
        first_number = len(s.memory.steps) + 1
        result = await self._drive(result, first_number, first_number, 0, started)
        if result.status == "error" and not result.steps and not result.plans and created:
            # Refused before its first step (a bad model, a dead server): leave nothing behind.
            _remove_created(created)
            if path is not None and path in created:
                result.notebook_path = None
        return result

    async def aopen_task(
        self,
        question: str,
        files: Iterable[str | os.PathLike[str]] | None = (),
        notebook: str | os.PathLike[str] | None = None,
        *,
        reset: bool = True,
        overwrite: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> Task:
        """Start a question without asking the model: the kernel is set up and the notebook has its
        header. :meth:`arun` goes on with the model; :meth:`arun_code` runs steps given from outside
        (the MCP server's sessions). Arguments as for :meth:`run`."""
        if not question or not question.strip():
            raise UsageError("the question is empty: say what you want the agent to find out")
        sources = check_data_files(files or ())
        params = check_parameters(parameters or {})
        if session is not None:
            await self._drive_session(session)
        s = self._session
        follow_up = not reset and s.started
        if follow_up:
            if (
                notebook is not None
                and s.recorder is not None
                and s.recorder.path is not None
                and Path(notebook).resolve() != s.recorder.path.resolve()
            ):
                raise UsageError(
                    "a follow-up (reset=False) continues the same notebook; do not pass another one"
                )
            self._check_tools(s)
        else:
            self._active = self.config
            if self._given_observer is None:
                self.observer = self._active.observer()
            await self._new_session(notebook, overwrite, workdir)
        assert s.memory is not None and s.recorder is not None and s.workdir is not None
        path = s.recorder.path
        # What this run creates, so that a run refused before its first step leaves nothing behind.
        created = [] if follow_up else [p for p in [path] if p is not None and not p.exists()]
        created += [s.workdir / f.name for f in sources if not (s.workdir / f.name).exists()]
        if not follow_up and s.made_run_folder is not None:
            created.append(s.made_run_folder)
        s.made_run_folder = None
        s.created = created
        digests = _bring_files(sources, s.workdir)
        run_folder = s.run_folder
        if run_folder is not None and run_folder.resolve() != s.workdir.resolve():
            _bring_files(sources, run_folder)  # the jail's folder: the kernel sees these copies
        notebook_folder = s.recorder.path.parent if s.recorder.path is not None else None
        if notebook_folder is not None and notebook_folder.resolve() != s.workdir.resolve():
            _bring_files(sources, notebook_folder)  # beside the notebook, for stock re-runs
        task = Task(question=question.strip(), files=list(digests), parameters=params)
        s.memory.entries.append(task)
        settings = self._active.to_record() | {"model": self.model.name}
        s.recorder.start_task(task, self.model.name, digests, follow_up=follow_up, settings=settings)
        if not follow_up:
            await self._setup_kernel()
        if params:
            await self._set_parameters(params)
        s.recorder.save()
        for listener in self.listeners:
            listener.task_started(task, s.recorder.path)
        return task

    async def _drive_session(self, session: Session) -> None:
        """Drive ``session`` from now on; the session this agent opened itself is closed."""
        if session is self._session:
            return
        if self._owns_session:
            await self._session.aclose()
        self._session, self._owns_session = session, False

    def _check_tools(self, session: Session) -> None:
        """A follow-up by another agent: its tools must be those set up in the session's kernel."""
        theirs = session.toolbox
        if theirs is None or theirs is self.toolbox:
            return
        ours = self.toolbox
        if (
            ours.bridge is not None
            or theirs.bridge is not None
            or ours.managed
            or ours.tools_source() != theirs.tools_source()
        ):
            raise UsageError(
                "this session's kernel has the tools of the agent that opened it; an agent with "
                "other tools cannot go on in it (start a new session, reset=True)"
            )

    async def arun_code(self, code: str, thought: str = "") -> tuple[Step, str | None]:
        """Run ``code`` as the next step of the open question, as if the model had replied with
        ``thought`` and ``code``: recorded as a thought cell and a code cell, observed, the kernel
        restarted and restored if it dies. Returns the step and, when the code called
        ``final_answer``, the answer's text (also recorded in the notebook)."""
        s = self._session
        if s.memory is None or s.recorder is None or s.executor is None:
            raise UsageError("no question is open: call aopen_task first")
        if not code.strip():
            raise UsageError("the code is empty: give the Python code to run")
        if s.gave_up:
            raise KernelDiedError(f"{s.gave_up}; close this session and open a new one")
        reply = Reply(text=f"Thought: {thought}\n```python\n{code}\n```", usage=Usage())
        parsed = ParsedReply(thought=thought, code=code)
        step = await self._act(len(s.memory.steps) + 1, reply, parsed, 0.0, None)
        answer = await self._take_answer(step)
        return step, None if answer is None else answer[1]

    async def _drive(
        self, result: RunResult, first_number: int, number: int, done: int, started: float
    ) -> RunResult:
        """Run the loop from step ``number`` (``done`` of this task's steps taken), then close the task."""
        s = self._session
        assert s.memory is not None and s.recorder is not None
        s.begin_question(first_number)
        try:
            await self._loop(result, number, done)
        except StopRun as exc:
            result.status, result.error = "stopped", str(exc) or "stopped by the user"
            s.recorder.add_marker("the run was stopped by the user; the last step's code did not run.")
        except asyncio.CancelledError:
            result.status, result.error = "interrupted", "interrupted by the user"
            s.recorder.add_marker("the run was interrupted before it finished.")
            raise
        except KernelDiedError as exc:
            result.status, result.error = "kernel_died", str(exc)
            s.recorder.add_marker(f"the run stopped: {exc}")
        except (ModelError, KernelError) as exc:
            result.status, result.error = "error", str(exc)
            s.recorder.add_marker(f"the run stopped: {exc}")
        except Exception as exc:
            # A failure of the host itself (input it did not foresee, a bug): the notebook says so
            # truthfully, never "no final answer within N steps", and the error goes on up.
            result.status, result.error = "error", f"nbagent failed: {type(exc).__name__}: {exc}"
            s.recorder.add_marker(f"the run stopped: {result.error}")
            raise
        finally:
            result.steps = [step for step in s.memory.steps if step.number >= first_number]
            result.plans = [p for p in s.memory.plans if p.before_step >= first_number]
            for usage in [step.usage for step in result.steps] + [p.usage for p in result.plans]:
                result.usage = result.usage + usage
            result.duration = time.perf_counter() - started
            result.notebook = s.recorder.nb
            if result.status == "max_steps":
                s.recorder.add_marker(f"no final answer within {self.max_steps} steps.")
            s.recorder.finish_task(
                status=result.status,
                answer=result.answer_text,
                steps=len(result.steps),
                usage=result.usage.to_dict(),
                duration=round(result.duration, 3),
                error=result.error,
            )
            s.recorder.save()
            for listener in self.listeners:
                listener.run_finished(result)
        return result

    def run(
        self,
        question: str,
        files: Iterable[str | os.PathLike[str]] | None = (),
        notebook: str | os.PathLike[str] | None = None,
        *,
        reset: bool = True,
        overwrite: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> RunResult:
        """Answer ``question`` by running code in the kernel, step by step.

        Args:
            question: what to find out.
            files: data files made available in the kernel's working directory (copied there
                unless already in it), recorded with their SHA-256 in the notebook.
            notebook: where to save the notebook (saved after every step); ``None``: in memory.
            reset: ``False`` continues the previous run: same kernel, memory and notebook.
            overwrite: allow replacing an existing notebook file.
            workdir: the kernel's working directory; default: the notebook's folder, else the
                current directory.
            parameters: variables set in the kernel before the first step (JSON-like values),
                written as a cell tagged ``parameters`` (papermill's convention) and named in
                the task given to the model.
            session: drive this :class:`~nbagent.agent.session.Session` from now on (one another
                agent opened, say); with ``reset=False`` the question goes on in its kernel,
                memory and notebook, with this agent's settings, model and approval. The session
                this agent opened itself is closed; :meth:`close` closes the one it drives.
        """
        return run_sync(self.arun)(
            question,
            files,
            notebook,
            reset=reset,
            overwrite=overwrite,
            workdir=workdir,
            parameters=parameters,
            session=session,
        )

    async def aresume(
        self, notebook: str | os.PathLike[str], *, workdir: str | os.PathLike[str] | None = None
    ) -> RunResult:
        """Go on with the last question of a notebook nbagent wrote; see :meth:`resume`."""
        started = time.perf_counter()
        saved = read_run(notebook, self.observer)
        # The loop's settings come back from the notebook (tighter limits only; never what it may
        # reach): a run made with --timeout 3 goes on with 3 s, unless the user says otherwise now.
        recorded = saved.last_run.get("settings")
        self._active = self.config.resumed(recorded if isinstance(recorded, Mapping) else {}, self._explicit)
        if self._given_observer is None:
            self.observer = self._active.observer()
        path = saved.path.resolve()
        new_workdir = Path(workdir).resolve() if workdir is not None else path.parent
        s = self._session
        if s.given_executor is not None:
            new_workdir = s.given_executor.cwd
        missing = _check_recorded_files(saved, new_workdir)
        task = [e for e in saved.entries if isinstance(e, Task)][-1]
        result = RunResult(question=task.question, status="max_steps", notebook_path=path)
        first_number = saved.task_steps[0].number if saved.task_steps else len(saved.steps) + 1
        done = sum(1 for st in saved.task_steps if st.kind == "action")
        secrets = self._model_secrets()
        recorder = NotebookRecorder.from_notebook(saved.nb, path, secrets=secrets)
        memory = Memory(self.system_prompt, self.history)
        memory.entries = list(saved.entries)
        payload = saved.answer_payload
        if payload is not None:
            # Answered already (perhaps the host died just after): report it, run nothing.
            result.status = "answered"
            result.answer_text = str(payload.get("text", ""))
            # A deferred (large) value lived in the old kernel only: its text stands in for it.
            if payload.get("deferred"):
                result.answer = result.answer_text
                result.answer_note = "the answer was too large for the notebook, and its kernel is gone"
            else:
                answer = decode_answer(payload)
                result.answer, result.answer_note = answer.value, answer.note
            result.steps = list(saved.task_steps)
            for step in result.steps:
                result.usage = result.usage + step.usage
            result.notebook = saved.nb
            if saved.last_run.get("status") != "answered":
                if not any(schema.role(c) == "answer" for c in saved.nb.cells):
                    recorder.add_answer(result.answer_text)
                recorder.finish_task(status="answered", answer=result.answer_text)
                recorder.save()
            s.begin(memory, recorder, Redactor.from_environment(extra=secrets), new_workdir)
            return result

        recorded = [new_workdir / n for n in _recorded_names(saved)]
        await s.start_kernel(self.kernel_name, self.sandbox, path, new_workdir, recorded)
        s.begin(memory, recorder, Redactor.from_environment(extra=secrets), new_workdir)
        s.toolbox = self.toolbox
        assert s.executor is not None
        await self.toolbox.start_session(
            path, new_workdir, overwrite=True, bridge_folder=s.bridge_folder, run_folder=s.jail_folder
        )
        self.model.resume([e.reply for e in saved.entries if isinstance(e, (Step, Plan))])
        restoration = await replay_steps(s.executor, saved.steps, self.timeout, setup=self._restore_source())
        await self._remember_final_answer()
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        previous = saved.last_run.get("status", "running")
        ended = "the host process stopped mid-run" if previous == "running" else f"it ended: {previous}"
        note = f"the run was resumed at {when} ({ended}); {restoration.describe()}."
        if missing:
            note += f" Data files changed since they were recorded: {', '.join(missing)}."
        recorder.add_marker(note)
        recorder.runs[-1].setdefault("resumed", []).append(when)
        # What the run goes on with (the notebook's loop settings, or what the user gave now).
        recorder.runs[-1]["settings"] = self._active.to_record() | {"model": self.model.name}
        recorder.finish_task(status="running")
        recorder.save()
        if not restoration.complete and saved.steps:
            last = saved.steps[-1]
            last.observation = Observation(
                f"{last.observation.text}\n[The run was resumed in a new kernel; {restoration.describe()}.]",
                last.observation.images,
            )
        for listener in self.listeners:
            listener.task_started(task, path)
        return await self._drive(result, first_number, len(saved.steps) + 1, done, started)

    def resume(
        self, notebook: str | os.PathLike[str], *, workdir: str | os.PathLike[str] | None = None
    ) -> RunResult:
        """Go on with the last question of ``notebook``, a notebook nbagent wrote (after a crash, say).

        The kernel's state is restored by re-running the setup code and the code of every step
        that succeeded, in order; the agent's memory (the replies and observations the model saw)
        is rebuilt from the cells' ``metadata.nbagent``; the run then goes on in the same notebook,
        with a marker cell saying it was resumed. ``max_steps`` counts the steps already taken for
        this question. A notebook whose question is already answered is left alone and its answer
        returned.

        Args:
            notebook: the ``.ipynb`` file to resume; it is updated in place.
            workdir: the kernel's working directory; default: the notebook's folder (where the
                run's data files were copied).
        """
        return run_sync(self.aresume)(notebook, workdir=workdir)

    async def aclose(self) -> None:
        """Shut down the kernel of this agent's session (unless it was given one), its managed
        agents' kernels, and the model if it made it from a string."""
        await self.toolbox.aclose()
        await self._session.aclose()
        if self._owns_model:
            await self.model.aclose()

    def close(self) -> None:
        """Shut down the kernel this agent started."""
        run_sync(self.aclose)()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self, result: RunResult, number: int, done: int = 0) -> None:
        s = self._session
        for i in range(min(done, self.max_steps), self.max_steps + 1):
            final = i == self.max_steps
            spent = self.budget_spent()
            if spent is not None:
                result.status, result.error = "budget", spent
                assert s.recorder is not None
                s.recorder.add_marker(
                    f"the run stopped before step {number}: {spent}. "
                    "`nbagent resume` with a larger budget goes on from here."
                )
                return
            if plan_due(self.planning_interval, i, final):
                await self._plan(number, remaining=self.max_steps - i, first=i == 0)
            step = await self._step(number, nudge=_final_nudge(self.max_steps) if final else None)
            number += 1
            if s.gave_up:
                raise KernelDiedError(s.gave_up)
            taken = await self._take_answer(step)
            if taken is not None:
                result.status = "answered"
                result.answer, result.answer_text, result.answer_note = taken
                return

    async def _take_answer(self, step: Step) -> tuple[Any, str, str | None] | None:
        """The answer (value, text, note) the step's code gave to ``final_answer``, recorded;
        else ``None``. Only a payload stamped with this session's key counts (see kernel_code)."""
        s = self._session
        payload = None if step.execution is None else step.execution.answer_bundle(s.answer_key)
        if payload is None:
            return None
        assert s.executor is not None and s.recorder is not None
        payload = await complete_answer(s.executor, payload)
        answer = decode_answer(payload)
        text = s.redactor.text(str(payload.get("text", "")))
        s.recorder.add_answer(text, await self._answer_cell())
        s.recorder.save()
        return answer.value, text, answer.note

    async def _answer_cell(self) -> Execution | None:
        # In a kernel of its own the answer cell is run, so it shows what a re-run will show; in
        # the user's shell (%%agent) the answer is the magic's result, and a statement records it.
        s = self._session
        if not isinstance(s.executor, Kernel):
            return None
        execution = await s.executor.aexecute(ANSWER_SOURCE, timeout=60)
        return execution if execution.ok else None

    async def _step(self, number: int, nudge: str | None) -> Step:
        s = self._session
        assert s.memory is not None and s.recorder is not None and s.executor is not None
        messages = s.memory.to_messages(images=self.model.supports_images, nudge=nudge)

        def on_text(text: str) -> None:
            for listener in self.listeners:
                listener.reply_text(number, text)

        for listener in self.listeners:
            listener.model_called(number)
        t0 = time.perf_counter()
        reply = await self.model.astream(messages, stop=STOP_SEQUENCES, on_text=on_text)
        model_duration = time.perf_counter() - t0
        if not reply.text.strip() and s.memory.steps and not s.memory.steps[-1].reply.strip():
            # A server that sends nothing twice in a row is broken, not the model unlucky.
            raise ModelError(
                f"model {self.model.name!r} sent an empty reply twice in a row; "
                "check the model and its server (its log may say why)"
            )
        parsed = parse_reply(reply.text)
        if reply.finish_reason == "length":
            # The code is probably cut short too: running half of it helps no one.
            parsed = replace(parsed, code=None)
        for listener in self.listeners:
            listener.reply_received(number, parsed.thought, parsed.code)
        return await self._act(number, reply, parsed, model_duration, nudge)

    async def _act(
        self, number: int, reply: Reply, parsed: ParsedReply, model_duration: float, nudge: str | None
    ) -> Step:
        """Approve, run and observe the code of a reply, and record the step."""
        s = self._session
        assert s.executor is not None
        execution: Execution | None = None
        original_code: str | None = None
        decision: bool | str = True
        if parsed.code is not None and self.approve is not None:
            try:
                decision = await self._ask_approval(number, parsed.thought, parsed.code)
            except StopRun:
                stopped = _not_run(parsed.code, "StopRun", "the user stopped the run")
                observation = Observation("[Stopped by the user.]")
                self._record(number, reply, parsed.thought, stopped, observation, model_duration, nudge)
                raise
        if isinstance(decision, str) and decision != parsed.code:
            original_code, parsed = parsed.code, dataclasses.replace(parsed, code=decision)
        if parsed.code is None:
            observation = Observation(text=_no_code_text(reply))
        elif decision is False:
            execution = _not_run(parsed.code, "Refused", "the user refused to run this code")
            observation = Observation(text=REFUSED)
        elif assigns_name(parsed.code, "final_answer"):
            execution = Execution(
                code=parsed.code,
                status="error",
                error=ErrorInfo("ReservedName", "final_answer cannot be redefined; the cell was not run", ""),
                note="not run: it redefines final_answer",
            )
            observation = Observation(text=RESERVED_FINAL_ANSWER)
        else:
            self.toolbox.before_step()
            try:
                execution = await self._run_step_code(parsed.code)
            except asyncio.CancelledError:
                # Record what was running when the user stopped the run, then stop. A kernel
                # keeps what the cell printed before the interrupt (as Jupyter shows it).
                cut_short = getattr(s.executor, "interrupted", None)
                if not isinstance(cut_short, Execution) or cut_short.code != parsed.code:
                    await _interrupt(s.executor)
                    cut_short = Execution(
                        code=parsed.code,
                        status="interrupted",
                        error=ErrorInfo("KeyboardInterrupt", "the run was interrupted by the user", ""),
                    )
                cut_short.note = "interrupted by the user"
                self._record(
                    number,
                    reply,
                    parsed.thought,
                    cut_short,
                    Observation("[Interrupted.]"),
                    model_duration,
                    nudge,
                )
                raise
            if execution.restarted:
                await self._after_restart(execution)
                replaced = False
            else:
                replaced = await self._check_final_answer(execution)
            observation = self.observer.observe(execution)
            if original_code is not None:
                observation.text = _edited_note(parsed.code) + observation.text
            if replaced:
                observation.text = f"{observation.text}\n{REPLACED_FINAL_ANSWER}".lstrip("\n")
        observation.text = s.redactor.text(observation.text)
        return self._record(
            number, reply, parsed.thought, execution, observation, model_duration, nudge, original_code
        )

    async def _ask_approval(self, number: int, thought: str, code: str) -> bool | str:
        assert self.approve is not None
        decision = self.approve(number, thought, code)
        if inspect.isawaitable(decision):
            decision = await decision
        if not isinstance(decision, (bool, str)):
            raise UsageError(
                f"the approve callback returned a {type(decision).__name__}; it must return True "
                "(run), False (skip), the edited code as a string, or raise nbagent.StopRun"
            )
        if isinstance(decision, str) and not decision.strip():
            return False  # an emptied cell is a refusal
        return decision

    def task_usage(self) -> Usage:
        """Tokens and cost of the current question so far (its plans and steps, resumed ones too)."""
        s = self._session
        total = Usage()
        if s.memory is None:
            return total
        for entry in s.memory.entries:
            number = entry.number if isinstance(entry, Step) else getattr(entry, "before_step", 0)
            if isinstance(entry, (Step, Plan)) and number >= s.first_step:
                total = total + entry.usage
        return total

    def budget_spent(self) -> str | None:
        """Why the current question may not call the model again, or ``None`` while within budget."""
        usage = self.task_usage()
        if self.max_total_tokens is not None and usage.total_tokens >= self.max_total_tokens:
            return f"its token budget is used ({usage.total_tokens:,} of {self.max_total_tokens:,} tokens)"
        if self.max_cost is not None and (usage.cost or 0.0) >= self.max_cost:
            return f"its cost budget is used (${usage.cost or 0:.4f} of ${self.max_cost:.4f})"
        return None

    def _record(
        self,
        number: int,
        reply: Reply,
        thought: str,
        execution: Execution | None,
        observation: Observation,
        model_duration: float,
        nudge: str | None,
        original_code: str | None = None,
    ) -> Step:
        s = self._session
        assert s.memory is not None and s.recorder is not None
        step = Step(
            number=number,
            reply=reply.text,
            thought=thought,
            code=None if execution is None else execution.code,
            execution=execution,
            observation=observation,
            usage=reply.usage,
            model_duration=model_duration,
            kind="final" if nudge else "action",
        )
        s.memory.entries.append(step)
        s.recorder.add_step(step, self.model.name)
        if original_code is not None:
            s.recorder.annotate_last(original_code=original_code)
        if execution is not None:
            self.toolbox.after_step(s.recorder)
        s.recorder.save()
        for listener in self.listeners:
            listener.step_finished(step)
        return step

    # -- sessions --------------------------------------------------------------------------

    async def _new_session(
        self,
        notebook: str | os.PathLike[str] | None,
        overwrite: bool,
        workdir: str | os.PathLike[str] | None,
    ) -> None:
        """Begin a new conversation in the session: a fresh kernel (unless given), memory, notebook."""
        s = self._session
        path = check_notebook_path(notebook, overwrite)
        new_workdir = s.choose_workdir(workdir, path)
        await s.start_kernel(self.kernel_name, self.sandbox, path, new_workdir)
        secrets = self._model_secrets()
        s.begin(
            Memory(self.system_prompt, self.history),
            NotebookRecorder(path, secrets=secrets),
            Redactor.from_environment(extra=secrets),
            new_workdir,
        )
        s.toolbox = self.toolbox
        await self.toolbox.start_session(
            path, new_workdir, overwrite, s.bridge_folder, run_folder=s.jail_folder
        )

    def _model_secrets(self) -> list[str | None]:
        return [getattr(self.model, "api_key", None)]

    async def _plan(self, number: int, remaining: int, first: bool) -> None:
        s = self._session
        assert s.memory is not None and s.recorder is not None
        plan = await make_plan(self.model, s.memory, number, remaining, first)
        s.memory.entries.append(plan)
        record_plan(s.recorder, plan, self.model.name)
        s.recorder.save()
        for listener in self.listeners:
            listener.plan_made(plan)

    async def _setup_kernel(self) -> None:
        s = self._session
        assert s.executor is not None and s.recorder is not None
        # The setup cell a person reads; the agent's own part runs with it but is not recorded.
        core = setup_code(self.toolbox.seed)
        execution = await s.executor.aexecute(core + agent_code(s.answer_key), timeout=60, setup=True)
        execution.code = core
        if not execution.ok:
            raise KernelError(f"the kernel setup code failed: {execution.error or execution.status}")
        s.recorder.add_setup(execution)
        live_tools = self.toolbox.live_tools_source()
        if live_tools:
            # Setup code: the user's shell (%%agent) keeps it out of its history.
            execution = await s.executor.aexecute(live_tools, timeout=60, setup=True)
            execution.code = self.toolbox.tools_source()  # the live bridge address is not recorded
            if not execution.ok:
                self.toolbox.check_setup(execution)
                raise KernelError(f"the kernel setup code failed: {execution.error or execution.status}")
            s.recorder.add_setup(execution, tools=True)
        # A given kernel (batch's pool) is named too; the user's own shell (%%agent) is none.
        kernel_name = s.executor.name if isinstance(s.executor, Kernel) else None
        s.recorder.set_environment(await probe_environment(s.executor, kernel_name))
        self.toolbox.add_replay_cell(s.recorder)
        await self._remember_final_answer()

    async def _final_answer_identity(self) -> str | None:
        s = self._session
        assert s.executor is not None
        probe = await s.executor.aexecute(_FINAL_ANSWER_PROBE, timeout=30, silent=True)
        for out in probe.outputs:
            for line in str(out.get("text", "")).splitlines():
                if line.startswith(_FINAL_ANSWER_MARK):
                    return line[len(_FINAL_ANSWER_MARK) :]
        return None

    async def _remember_final_answer(self) -> None:
        self._session.final_answer_id = await self._final_answer_identity()

    async def _run_step_code(self, code: str) -> Execution:
        s = self._session
        assert s.executor is not None
        if isinstance(s.executor, Kernel):
            # The final_answer check rides along as a user expression: no extra round trip.
            return await s.executor.aexecute(
                code, timeout=self.timeout, expressions={"final_answer": _FINAL_ANSWER_IDENTITY}
            )
        return await s.executor.aexecute(code, timeout=self.timeout)

    async def _check_final_answer(self, execution: Execution) -> bool:
        """True (and the step marked failed, its answer voided, final_answer restored) when the
        step replaced ``final_answer`` in a way the code guard could not see."""
        s = self._session
        if s.final_answer_id is None:
            return False
        # Evaluated with the step when it succeeded; asked afresh after a failed step (a kernel
        # skips user expressions then, though the step may have replaced final_answer first).
        identity = execution.expressions.get("final_answer")
        if identity is None:
            identity = await self._final_answer_identity()
        if identity == s.final_answer_id:
            return False
        assert s.executor is not None
        for out in execution.outputs:
            data = out.get("data")
            if isinstance(data, dict) and ANSWER_MIME in data:
                del data[ANSWER_MIME]  # whatever it "answered" came from the replacement
        execution.status = "error"
        execution.error = ErrorInfo(
            "ReservedName", "final_answer was replaced; the step's answer is void", ""
        )
        execution.note = "final_answer was replaced by this step and restored"
        # final_answer itself, then the hand-over that stamps its payload with this run's key.
        source = kernel_source("final_answer.py")
        await s.executor.aexecute(source + "\n" + agent_code(s.answer_key), timeout=60, silent=True)
        await self._remember_final_answer()
        return True

    async def _set_parameters(self, parameters: dict[str, Any]) -> None:
        s = self._session
        assert s.executor is not None and s.recorder is not None
        execution = await s.executor.aexecute(parameters_code(parameters), timeout=60)
        if not execution.ok:
            raise KernelError(f"setting the parameters failed: {execution.error or execution.status}")
        s.recorder.add_parameters(execution, parameters)

    def _restore_source(self) -> str:
        # What a fresh kernel runs before the steps are replayed: setup, then the parameters.
        s = self._session
        core = setup_code(self.toolbox.seed)
        source = core + agent_code(s.answer_key) + self.toolbox.live_tools_source()
        tasks = [e for e in s.memory.entries if isinstance(e, Task)] if s.memory else []
        if tasks and tasks[-1].parameters:
            source = source.rstrip("\n") + "\n\n" + parameters_code(tasks[-1].parameters)
        return source

    async def _after_restart(self, execution: Execution) -> None:
        # The kernel lost its state. The notebook is the recipe: re-run the cells that made it.
        s = self._session
        assert s.executor is not None and s.memory is not None
        s.restarts += 1
        if s.restarts > self.max_restarts:
            s.gave_up = (
                f"the kernel had to be restarted {s.restarts} times in this run "
                f"(more than max_restarts={self.max_restarts}); last: {execution.note}"
            )
            execution.note += "; that is too many restarts, so the run stops"
            return
        restoration = await replay_steps(
            s.executor, s.memory.steps, self.timeout, setup=self._restore_source()
        )
        if restoration.died:
            s.restarts += 1
        execution.note += "; " + restoration.describe()
        await self._remember_final_answer()


def _no_code_text(reply: Reply) -> str:
    """What the model is told when its reply ran nothing: cut off, empty, or without code."""
    if reply.finish_reason == "length":
        return CUT_OFF
    if not reply.text.strip():
        return EMPTY_REPLY
    return NO_CODE


def _saved_tools(config: AgentConfig) -> list[Tool]:
    """The tools the ``tool_sources`` and ``web_search`` settings name (saved tools run code here
    and in the kernel: they need ``trust_tools``)."""
    from ..tools.defaults import WebSearchTool
    from ..tools.sharing import load_tool

    if config.tool_sources and not config.trust_tools:
        raise UntrustedToolError(
            f"the saved tool {config.tool_sources[0]} runs its code here and in the kernel; "
            "read its tool.py, then allow it with trust_tools (--trust-tools)"
        )
    tools: list[Tool] = [load_tool(source, trust_remote_code=True) for source in config.tool_sources]
    if config.web_search:
        tools.append(WebSearchTool())
    return tools


def _remove_created(paths: list[Path]) -> None:
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)  # the jail's run folder this run made
            else:
                path.unlink()
        except OSError:
            pass  # already gone, or never written: nothing to clean


async def _interrupt(executor: Executor) -> None:
    try:
        await executor.ainterrupt()
    except Exception:  # best effort while the run is being cancelled
        pass


def _not_run(code: str, name: str, why: str) -> Execution:
    # No execution count: the recorder tags the cell so that a re-run skips it too.
    return Execution(code=code, status="error", error=ErrorInfo(name, why, ""), note=f"not run: {why}")


def check_notebook_path(notebook: str | os.PathLike[str] | None, overwrite: bool) -> Path | None:
    """The output notebook as an absolute path; :class:`UsageError` if it cannot be written."""
    if notebook is None:
        return None
    # Absolute, but a symlink at the name is not followed: saving replaces it, never writes through it.
    path = Path(os.path.abspath(Path(notebook).expanduser()))
    if path.is_dir():
        raise UsageError(
            f"output {str(notebook)!r} is a directory; give a notebook file name such as answer.ipynb"
        )
    if path.exists() and not overwrite:
        raise UsageError(
            f"output {str(notebook)!r} already exists; "
            "choose another name or pass --overwrite (overwrite=True)"
        )
    if not path.parent.is_dir():
        raise UsageError(f"the folder of output {str(notebook)!r} does not exist")
    problem = check_writable_folder(path.parent)
    if problem is not None:
        raise UsageError(
            f"cannot write output {str(notebook)!r}: its folder does not take new files ({problem}); "
            "choose a writable folder"
        )
    return path


def check_data_files(files: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The data files as paths; :class:`UsageError` if one is missing, not a file, or a name repeats."""
    sources = [Path(f).expanduser() for f in files]
    seen: set[str] = set()
    for src in sources:
        if not src.exists():
            raise UsageError(f"data file {str(src)!r} does not exist")
        if not src.is_file():
            raise UsageError(f"data file {str(src)!r} is not a regular file")
        if src.name in seen:
            raise UsageError(f"two data files are named {src.name!r}; rename one of them")
        seen.add(src.name)
    return sources


def _check_recorded_files(saved: SavedRun, workdir: Path) -> list[str]:
    """Data files the notebook records must be in ``workdir``; returns those whose content changed."""
    changed: list[str] = []
    runs = schema.runs(saved.nb)
    for f in (f for run in runs for f in run.get("files", [])):
        target = workdir / f["name"]
        if not target.is_file():
            raise UsageError(
                f"data file {f['name']!r} recorded in {str(saved.path)!r} is missing from "
                f"{str(workdir)!r}; put it back (or pass workdir=/--workdir where it is)"
            )
        if file_digest(target) != f.get("sha256") and f["name"] not in changed:
            changed.append(f["name"])
    return changed


def _recorded_names(saved: SavedRun) -> list[str]:
    runs = schema.runs(saved.nb)
    return sorted({f["name"] for run in runs for f in run.get("files", [])})


def _bring_files(sources: list[Path], workdir: Path) -> dict[str, str]:
    """Copy data files into the working directory; returns name -> sha256."""
    names: dict[str, str] = {}
    for src in sources:
        digest = file_digest(src)
        target = workdir / src.name
        if target.is_symlink() and target.resolve() != src.resolve():
            # Planted, perhaps, by code of an earlier step in this folder: never copied through.
            raise UsageError(
                f"{str(target)!r} is a symlink; nbagent does not write data files through symlinks: "
                "remove it or choose another output folder"
            )
        if target.exists() and target.resolve() != src.resolve():
            if file_digest(target) != digest:
                raise UsageError(
                    f"data file {str(src)!r} would replace a different {src.name!r} in {str(workdir)!r}; "
                    "rename it or choose another output folder"
                )
        elif not target.exists():
            copy_atomic(src, target)
        names[src.name] = digest
    return names
