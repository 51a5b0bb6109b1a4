"""The agent loop: ask the model, run its code, show it what happened, until it answers.

The loop knows executors, models, observers and the recorder only through their small
interfaces; it never touches ZMQ or nbformat itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from jupyter_core.utils import run_sync
from nbformat import NotebookNode

from ..exceptions import KernelDiedError, KernelError, ModelError, UsageError
from ..execution.jail import JAIL_UID, make_jail_folder
from ..execution.kernel import DEFAULT_KERNEL, Kernel
from ..execution.outputs import ErrorInfo, Execution
from ..execution.sandbox import Sandbox
from ..models import Model, Reply, Usage, resolve_model
from ..notebook.recorder import NotebookRecorder, file_digest
from ..notebook.redact import Redactor
from ..tools.tool import Tool
from ..tools.toolbox import Toolbox
from .bootstrap import complete_answer, decode_answer
from .environment import probe_environment
from .memory import HistoryLimits, Memory, Plan, Step, Task, default_system_prompt
from .observe import Observation, Observer
from .parameters import check_parameters, parameters_code
from .parsing import assigns_name, parse_reply
from .planning import check_planning_interval, make_plan, plan_due, record_plan
from .restore import SavedRun, read_run, replay_steps

RunStatus = Literal["answered", "max_steps", "error", "interrupted", "kernel_died"]

STOP_SEQUENCES = ("\nObservation:",)

NO_CODE = (
    "Your reply had no ```python code block, so nothing ran. Reply with a short thought and one "
    "```python block. When you have the answer, call final_answer(value) in a code block."
)


RESERVED_FINAL_ANSWER = (
    "This code was not run: it defines, assigns, imports or deletes `final_answer`, which the "
    "environment provides and the run depends on. Do not redefine it; call final_answer(value) "
    "when you have the answer. Reply with the code again without that part."
)


def _final_nudge(max_steps: int) -> str:
    return (
        f"You have used all {max_steps} steps. Reply now with one ```python block that calls "
        "final_answer(...) with your best answer from what you have found so far."
    )


class Executor(Protocol):
    """Runs code somewhere (a kernel process, the user's own shell) and reports an Execution."""

    cwd: Path

    async def astart(self) -> None: ...
    async def aexecute(self, code: str, timeout: float | None = None, *, silent: bool = False) -> Execution:
        """Run ``code``; ``silent``: outside the history and unseen (no execution count, no echo)."""
        ...

    async def ashutdown(self) -> None: ...


class RunListener:
    """Receives a run's progress as it happens (live logs, progress bars, live cell output).

    Subclass and override what you need; every method does nothing by default.
    """

    def task_started(self, task: Task, notebook_path: Path | None) -> None:
        """A question was put to the agent."""

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
    ``"kernel_died"`` (the kernel had to be restarted more than ``max_restarts`` times).
    ``answer`` is the value given to ``final_answer`` (JSON-able values as themselves, pandas
    objects as pandas objects, figures as PIL images, anything else as text); ``answer_text`` is
    its readable form.
    """

    question: str
    status: RunStatus
    answer: Any = None
    answer_text: str | None = None
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

    Args:
        model: a :class:`~nbagent.models.Model` or a model string (litellm string,
            ``hf:MODEL_ID`` or ``scripted:PATH``); default: the ``NBAGENT_MODEL`` variable.
        max_steps: steps before the model is asked for a final answer.
        timeout: seconds a step may run before it is interrupted.
        kernel: kernel spec name (nbagent's own ``kernels/`` first, then Jupyter's).
        observer: turns executions into observations (budget, formatting).
        history: how much of a long run is replayed to the model (see :class:`HistoryLimits`).
        system_prompt: replaces the packaged prompt (``nbagent/prompts/system.md``).
        instructions: extra text appended to the system prompt.
        listeners: receive progress events (see :class:`RunListener`).
        executor: run steps here instead of a new kernel (used by ``%%agent``).
        tools: tools the code can call (:class:`~nbagent.Tool`, or plain typed, documented
            functions); defined in the kernel, or reached through the host bridge (``host=True``).
        default_tools: add the offline tools ``list_files``, ``read_file`` and ``inspect_data``.
        seed: the setup cell seeds ``random`` and ``numpy.random`` with it, so a re-run draws
            the same numbers; ``None`` leaves the generators alone.
        managed_agents: Agents (each with a ``name`` and ``description``) the code can call as
            ``name(task)``; each runs in its own kernel and writes its own notebook.
        planning_interval: plan (facts known, facts to find, plan) before the first step and
            every N steps; ``None``: never.
        name: this agent's name, when it is managed by another agent.
        description: what this agent is good at, shown to a manager agent.
        sandbox: limits of the sandboxed kernel (memory, CPU time, file size, network,
            environment allow-list); default :class:`~nbagent.Sandbox()`. Other kernels ignore it.
        max_restarts: kernel restarts (after a death or an ignored interrupt) one run survives,
            each followed by restoring the kernel's state; one more ends the run with status
            ``"kernel_died"``.
        model_kwargs: passed to the model's constructor when ``model`` is a string.
    """

    def __init__(
        self,
        model: str | Model | None = None,
        *,
        max_steps: int = 10,
        timeout: float | None = 60.0,
        kernel: str = DEFAULT_KERNEL,
        observer: Observer | None = None,
        history: HistoryLimits | None = None,
        system_prompt: str | None = None,
        instructions: str = "",
        listeners: Sequence[RunListener] = (),
        executor: Executor | None = None,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        default_tools: bool = True,
        seed: int | None = 0,
        managed_agents: Sequence[Agent] = (),
        planning_interval: int | None = None,
        name: str | None = None,
        description: str | None = None,
        sandbox: Sandbox | None = None,
        max_restarts: int = 3,
        **model_kwargs: Any,
    ) -> None:
        if max_restarts < 0:
            raise UsageError(f"max_restarts cannot be negative ({max_restarts})")
        if max_steps < 1:
            raise UsageError(f"max_steps must be at least 1, not {max_steps}")
        if timeout is not None and timeout <= 0:
            raise UsageError(f"timeout must be a positive number of seconds, not {timeout}")
        self.model = resolve_model(model, **model_kwargs)
        self._owns_model = not isinstance(model, Model)
        self.max_steps = max_steps
        self.timeout = timeout
        self.kernel_name = kernel
        self.observer = observer or Observer()
        self.history = history or HistoryLimits()
        self.name, self.description = name, description
        self.planning_interval = check_planning_interval(planning_interval)
        self.toolbox = Toolbox(tools, managed_agents, default_tools=default_tools, seed=seed)
        prompt = system_prompt if system_prompt is not None else default_system_prompt()
        self.system_prompt = self.toolbox.apply_to_prompt(prompt, instructions)
        self.listeners = list(listeners)
        self._given_executor = executor
        self._executor: Executor | None = executor
        self._memory: Memory | None = None
        self._recorder: NotebookRecorder | None = None
        self._workdir: Path | None = executor.cwd if executor is not None else None
        self.sandbox = sandbox
        self.max_restarts = max_restarts
        self._restarts = 0
        self._gave_up: str | None = None
        self._redactor = Redactor({})
        self._shared_run_folder: Path | None = None

    # -- public API ------------------------------------------------------------------------

    @property
    def executor(self) -> Executor | None:
        """Where steps run (a :class:`~nbagent.Kernel` unless one was given)."""
        return self._executor

    @property
    def memory(self) -> Memory | None:
        """The memory of the current session."""
        return self._memory

    @property
    def recorder(self) -> NotebookRecorder | None:
        """The notebook of the current session."""
        return self._recorder

    async def arun(
        self,
        question: str,
        files: Iterable[str | os.PathLike[str]] = (),
        notebook: str | os.PathLike[str] | None = None,
        *,
        reset: bool = True,
        overwrite: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Answer ``question``; see :meth:`run`."""
        if not question or not question.strip():
            raise UsageError("the question is empty: say what you want the agent to find out")
        started = time.perf_counter()
        sources = check_data_files(files)
        params = check_parameters(parameters or {})
        follow_up = not reset and self._memory is not None
        if follow_up:
            if (
                notebook is not None
                and self._recorder is not None
                and self._recorder.path is not None
                and Path(notebook).resolve() != self._recorder.path.resolve()
            ):
                raise UsageError(
                    "a follow-up (reset=False) continues the same notebook; do not pass another one"
                )
        else:
            await self._new_session(notebook, overwrite, workdir)
        assert self._memory is not None and self._recorder is not None and self._workdir is not None
        digests = _bring_files(sources, self._workdir)
        run_folder = self.run_folder
        if run_folder is not None and run_folder.resolve() != self._workdir.resolve():
            _bring_files(sources, run_folder)  # the jail's folder: the kernel sees these copies
        notebook_folder = self._recorder.path.parent if self._recorder.path is not None else None
        if notebook_folder is not None and notebook_folder.resolve() != self._workdir.resolve():
            _bring_files(sources, notebook_folder)  # beside the notebook, for stock re-runs
        task = Task(question=question.strip(), files=list(digests), parameters=params)
        self._memory.entries.append(task)
        self._recorder.start_task(task, self.model.name, digests, follow_up=follow_up)
        if not follow_up:
            await self._setup_kernel()
        if params:
            await self._set_parameters(params)
        self._recorder.save()
        for listener in self.listeners:
            listener.task_started(task, self._recorder.path)

        result = RunResult(question=task.question, status="max_steps", notebook_path=self._recorder.path)
        first_number = len(self._memory.steps) + 1
        return await self._drive(result, first_number, first_number, 0, started)

    async def _drive(
        self, result: RunResult, first_number: int, number: int, done: int, started: float
    ) -> RunResult:
        """Run the loop from step ``number`` (``done`` of this task's steps taken), then close the task."""
        assert self._memory is not None and self._recorder is not None
        self._restarts, self._gave_up = 0, None
        try:
            await self._loop(result, number, done)
        except asyncio.CancelledError:
            result.status, result.error = "interrupted", "interrupted by the user"
            self._recorder.add_marker("the run was interrupted before it finished.")
            raise
        except KernelDiedError as exc:
            result.status, result.error = "kernel_died", str(exc)
            self._recorder.add_marker(f"the run stopped: {exc}")
        except (ModelError, KernelError) as exc:
            result.status, result.error = "error", str(exc)
            self._recorder.add_marker(f"the run stopped: {exc}")
        finally:
            result.steps = [s for s in self._memory.steps if s.number >= first_number]
            result.plans = [p for p in self._memory.plans if p.before_step >= first_number]
            for usage in [s.usage for s in result.steps] + [p.usage for p in result.plans]:
                result.usage = result.usage + usage
            result.duration = time.perf_counter() - started
            result.notebook = self._recorder.nb
            if result.status == "max_steps":
                self._recorder.add_marker(f"no final answer within {self.max_steps} steps.")
            self._recorder.finish_task(
                status=result.status,
                answer=result.answer_text,
                steps=len(result.steps),
                usage=result.usage.to_dict(),
                duration=round(result.duration, 3),
                error=result.error,
            )
            self._recorder.save()
            for listener in self.listeners:
                listener.run_finished(result)
        return result

    def run(
        self,
        question: str,
        files: Iterable[str | os.PathLike[str]] = (),
        notebook: str | os.PathLike[str] | None = None,
        *,
        reset: bool = True,
        overwrite: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
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
        """
        return run_sync(self.arun)(
            question,
            files,
            notebook,
            reset=reset,
            overwrite=overwrite,
            workdir=workdir,
            parameters=parameters,
        )

    async def aresume(
        self, notebook: str | os.PathLike[str], *, workdir: str | os.PathLike[str] | None = None
    ) -> RunResult:
        """Go on with the last question of a notebook nbagent wrote; see :meth:`resume`."""
        started = time.perf_counter()
        saved = read_run(notebook, self.observer)
        path = saved.path.resolve()
        new_workdir = Path(workdir).resolve() if workdir is not None else path.parent
        if self._given_executor is not None:
            new_workdir = self._given_executor.cwd
        missing = _check_recorded_files(saved, new_workdir)
        task = [e for e in saved.entries if isinstance(e, Task)][-1]
        result = RunResult(question=task.question, status="max_steps", notebook_path=path)
        first_number = saved.task_steps[0].number if saved.task_steps else len(saved.steps) + 1
        done = sum(1 for s in saved.task_steps if s.kind == "action")
        secrets = self._model_secrets()
        self._redactor = Redactor.from_environment(extra=secrets)
        self._recorder = NotebookRecorder.from_notebook(saved.nb, path, secrets=secrets)
        self._memory = Memory(self.system_prompt, self.history)
        self._memory.entries = list(saved.entries)
        self._workdir = new_workdir
        payload = saved.answer_payload
        if payload is not None:
            # Answered already (perhaps the host died just after): report it, run nothing.
            result.status = "answered"
            result.answer_text = str(payload.get("text", ""))
            # A deferred (large) value lived in the old kernel only: its text stands in for it.
            result.answer = result.answer_text if payload.get("deferred") else decode_answer(payload)
            result.steps = list(saved.task_steps)
            for s in result.steps:
                result.usage = result.usage + s.usage
            result.notebook = saved.nb
            if saved.last_run.get("status") != "answered":
                if not any(c.metadata.get("nbagent", {}).get("role") == "answer" for c in saved.nb.cells):
                    self._recorder.add_answer(result.answer_text)
                self._recorder.finish_task(status="answered", answer=result.answer_text)
                self._recorder.save()
            return result

        if self._given_executor is None:
            if self._executor is not None:
                await self._executor.ashutdown()
            recorded = [new_workdir / n for n in _recorded_names(saved)]
            self._executor = self._new_kernel(path, new_workdir, recorded)
            await self._executor.astart()
        assert self._executor is not None
        await self.toolbox.start_session(
            path,
            new_workdir,
            overwrite=True,
            bridge_folder=self._bridge_folder(),
            run_folder=self._jail_folder(),
        )
        self.model.resume([e.reply for e in saved.entries if isinstance(e, (Step, Plan))])
        restoration = await replay_steps(
            self._executor, saved.steps, self.timeout, setup=self._restore_source()
        )
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        previous = saved.last_run.get("status", "running")
        ended = "the host process stopped mid-run" if previous == "running" else f"it ended: {previous}"
        note = f"the run was resumed at {when} ({ended}); {restoration.describe()}."
        if missing:
            note += f" Data files changed since they were recorded: {', '.join(missing)}."
        self._recorder.add_marker(note)
        self._recorder.runs[-1].setdefault("resumed", []).append(when)
        self._recorder.finish_task(status="running")
        self._recorder.save()
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
        """Shut down the kernel this agent started, its managed agents' kernels, and the model if
        it made it from a string."""
        await self.toolbox.aclose()
        if self._executor is not None and self._executor is not self._given_executor:
            await self._executor.ashutdown()
        self._executor = self._given_executor
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
        for i in range(min(done, self.max_steps), self.max_steps + 1):
            final = i == self.max_steps
            if plan_due(self.planning_interval, i, final):
                await self._plan(number, remaining=self.max_steps - i, first=i == 0)
            step = await self._step(number, nudge=_final_nudge(self.max_steps) if final else None)
            number += 1
            if self._gave_up:
                raise KernelDiedError(self._gave_up)
            if step.execution is not None:
                payload = step.execution.answer_bundle()
                if payload is not None:
                    assert self._executor is not None
                    payload = await complete_answer(self._executor, payload)
                    result.status = "answered"
                    result.answer = decode_answer(payload)
                    result.answer_text = self._redactor.text(str(payload.get("text", "")))
                    assert self._recorder is not None
                    self._recorder.add_answer(result.answer_text)
                    self._recorder.save()
                    return

    async def _step(self, number: int, nudge: str | None) -> Step:
        assert self._memory is not None and self._recorder is not None and self._executor is not None
        messages = self._memory.to_messages(images=self.model.supports_images, nudge=nudge)
        t0 = time.perf_counter()
        reply = await self.model.acomplete(messages, stop=STOP_SEQUENCES)
        model_duration = time.perf_counter() - t0
        parsed = parse_reply(reply.text)
        for listener in self.listeners:
            listener.reply_received(number, parsed.thought, parsed.code)
        execution: Execution | None = None
        if parsed.code is None:
            observation = Observation(text=NO_CODE)
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
                execution = await self._executor.aexecute(parsed.code, timeout=self.timeout)
            except asyncio.CancelledError:
                await _interrupt(self._executor)
                # Record what was running when the user stopped the run, then stop.
                stopped = Execution(
                    code=parsed.code,
                    status="interrupted",
                    error=ErrorInfo("KeyboardInterrupt", "the run was interrupted by the user", ""),
                    note="interrupted by the user",
                )
                self._record(
                    number,
                    reply,
                    parsed.thought,
                    stopped,
                    Observation("[Interrupted.]"),
                    model_duration,
                    nudge,
                )
                raise
            if execution.restarted:
                await self._after_restart(execution)
            observation = self.observer.observe(execution)
        observation.text = self._redactor.text(observation.text)
        return self._record(number, reply, parsed.thought, execution, observation, model_duration, nudge)

    def _record(
        self,
        number: int,
        reply: Reply,
        thought: str,
        execution: Execution | None,
        observation: Observation,
        model_duration: float,
        nudge: str | None,
    ) -> Step:
        assert self._memory is not None and self._recorder is not None
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
        self._memory.entries.append(step)
        self._recorder.add_step(step, self.model.name)
        if execution is not None:
            self.toolbox.after_step(self._recorder)
        self._recorder.save()
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
        path = check_notebook_path(notebook, overwrite)
        if self._given_executor is not None:
            new_workdir = self._given_executor.cwd
        elif workdir is not None:
            new_workdir = Path(workdir).resolve()
        elif path is not None:
            new_workdir = path.parent
        else:
            new_workdir = Path.cwd()
        if not new_workdir.is_dir():
            raise UsageError(f"working directory {str(new_workdir)!r} does not exist")
        if self._given_executor is None:
            if self._executor is not None:
                await self._executor.ashutdown()
            self._executor = self._new_kernel(path, new_workdir)
            await self._executor.astart()
        self._workdir = new_workdir
        self._memory = Memory(self.system_prompt, self.history)
        self._recorder = NotebookRecorder(path, secrets=self._model_secrets())
        self._redactor = Redactor.from_environment(extra=self._model_secrets())
        await self.toolbox.start_session(
            path, new_workdir, overwrite, self._bridge_folder(), run_folder=self._jail_folder()
        )

    def _new_kernel(self, notebook: Path | None, workdir: Path, files: Iterable[Path] = ()) -> Kernel:
        """The run's kernel; a jailed one writes in a run folder nbagent makes, seen at ``workdir``.

        nbagent never changes the owner of a user's folder, and a jailed kernel must not see the
        notebook (it could rewrite its own record) nor other runs' files. So the jail's one
        writable folder is ``<notebook stem>.work/`` beside the notebook (without a notebook, a
        temporary folder), holding copies of the data files, and is bound at ``workdir``: the code
        sees the paths a stock re-run from the notebook's folder sees.
        """
        kernel = Kernel(self.kernel_name, cwd=workdir, sandbox=self.sandbox)
        if not kernel.jailed:
            return kernel
        if self._shared_run_folder is not None:
            folder = self._shared_run_folder  # a managed agent works in its manager's folder
        elif notebook is not None:
            folder = notebook.with_name(notebook.stem + ".work")
            if not folder.is_dir():
                make_jail_folder(folder)
        else:
            folder = Path(tempfile.mkdtemp(prefix="nbagent-work-"))
            if os.geteuid() == 0:
                os.chown(folder, JAIL_UID, JAIL_UID)
        for src in files:
            if not (folder / src.name).exists():
                shutil.copy2(src, folder / src.name)
        return Kernel(self.kernel_name, cwd=folder, sandbox=self.sandbox, inside_cwd=workdir, run_folder=True)

    def _jail_folder(self) -> Path | None:
        executor = self._executor
        if isinstance(executor, Kernel) and executor.jailed and executor is not self._given_executor:
            return executor.cwd
        return None

    def _bridge_folder(self) -> Path | None:
        folder = getattr(self._executor, "bridge_folder", None)
        return folder if isinstance(folder, Path) else None

    @property
    def run_folder(self) -> Path | None:
        """The host folder the kernel writes in (the jail's run folder; else its working folder)."""
        cwd = getattr(self._executor, "cwd", None)
        return cwd if isinstance(cwd, Path) else None

    def _model_secrets(self) -> list[str | None]:
        return [getattr(self.model, "api_key", None)]

    async def _plan(self, number: int, remaining: int, first: bool) -> None:
        assert self._memory is not None and self._recorder is not None
        plan = await make_plan(self.model, self._memory, number, remaining, first)
        self._memory.entries.append(plan)
        record_plan(self._recorder, plan, self.model.name)
        self._recorder.save()
        for listener in self.listeners:
            listener.plan_made(plan)

    async def _setup_kernel(self) -> None:
        assert self._executor is not None and self._recorder is not None
        execution = await self._executor.aexecute(self.toolbox.live_source(), timeout=60)
        execution.code = self.toolbox.setup_source()  # the live bridge address is not recorded
        if not execution.ok:
            self.toolbox.check_setup(execution)
            raise KernelError(f"the kernel setup code failed: {execution.error or execution.status}")
        self._recorder.add_setup(execution)
        kernel_name = self.kernel_name if self._given_executor is None else None
        self._recorder.set_environment(await probe_environment(self._executor, kernel_name))
        self.toolbox.add_replay_cell(self._recorder)

    async def _set_parameters(self, parameters: dict[str, Any]) -> None:
        assert self._executor is not None and self._recorder is not None
        execution = await self._executor.aexecute(parameters_code(parameters), timeout=60)
        if not execution.ok:
            raise KernelError(f"setting the parameters failed: {execution.error or execution.status}")
        self._recorder.add_parameters(execution, parameters)

    def _restore_source(self) -> str:
        # What a fresh kernel runs before the steps are replayed: setup, then the parameters.
        source = self.toolbox.live_source()
        tasks = [e for e in self._memory.entries if isinstance(e, Task)] if self._memory else []
        if tasks and tasks[-1].parameters:
            source = source.rstrip("\n") + "\n\n" + parameters_code(tasks[-1].parameters)
        return source

    async def _after_restart(self, execution: Execution) -> None:
        # The kernel lost its state. The notebook is the recipe: re-run the cells that made it.
        assert self._executor is not None and self._memory is not None
        self._restarts += 1
        if self._restarts > self.max_restarts:
            self._gave_up = (
                f"the kernel had to be restarted {self._restarts} times in this run "
                f"(more than max_restarts={self.max_restarts}); last: {execution.note}"
            )
            execution.note += "; that is too many restarts, so the run stops"
            return
        restoration = await replay_steps(
            self._executor, self._memory.steps, self.timeout, setup=self._restore_source()
        )
        if restoration.died:
            self._restarts += 1
        execution.note += "; " + restoration.describe()


async def _interrupt(executor: Executor) -> None:
    interrupt = getattr(executor, "ainterrupt", None)
    if interrupt is not None:
        try:
            await interrupt()
        except Exception:  # best effort while the run is being cancelled
            pass


def check_notebook_path(notebook: str | os.PathLike[str] | None, overwrite: bool) -> Path | None:
    """The output notebook as an absolute path; :class:`UsageError` if it cannot be written."""
    if notebook is None:
        return None
    path = Path(notebook).expanduser().resolve()
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
    runs = saved.nb.metadata["nbagent"]["runs"]
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
    runs = saved.nb.metadata["nbagent"]["runs"]
    return sorted({f["name"] for run in runs for f in run.get("files", [])})


def _bring_files(sources: list[Path], workdir: Path) -> dict[str, str]:
    """Copy data files into the working directory; returns name -> sha256."""
    names: dict[str, str] = {}
    for src in sources:
        digest = file_digest(src)
        target = workdir / src.name
        if target.exists() and target.resolve() != src.resolve():
            if file_digest(target) != digest:
                raise UsageError(
                    f"data file {str(src)!r} would replace a different {src.name!r} in {str(workdir)!r}; "
                    "rename it or choose another output folder"
                )
        elif not target.exists():
            shutil.copy2(src, target)
        names[src.name] = digest
    return names
