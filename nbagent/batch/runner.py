"""Batch runs: many tasks, one notebook each, run concurrently from a warm kernel pool.

Layout of ``--out``::

    runs/
      status.jsonl          one JSON line per finished task, appended as tasks finish
      <id>/<id>.ipynb       a task's notebook, beside the task's data files (its kernel's folder)
      <id>/work/            in the jail (the default): the kernel's one writable folder, with
                            copies of the data files and what the code wrote
      .pool/                spare folders of warm kernels (removed at the end)

A task's folder is its kernel's working directory (in the jail, its ``work/`` folder, so the
kernel cannot touch its own notebook), so a notebook re-runs from its own folder and tasks never
see each other's files. ``status.jsonl`` is the record of what is done: a task with a line there
is finished (whatever its status, unless it is an error before the first step) and ``--resume``
skips it; any other task is run again from scratch, its folder (a half-written notebook of an
interrupted run) replaced.

One task's failure (model error, kernel crash, timeout) is written down and the batch goes on,
except when it cannot help: before the first task each distinct model is asked one tiny question
(a wrong key or URL stops the batch at once, nothing written), and after ``max_same_errors``
tasks in a row end with the same error the batch stops, saying why; ``--resume`` goes on once
it is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from ..agent.agent import Agent, RunResult
from ..agent.config import AgentConfig
from ..exceptions import ModelError, NbagentError, UntrustedToolError, UsageError
from ..execution.pool import KernelPool
from ..models import MODEL_ENV, LiteLLMModel, Usage, resolve_model
from ..notebook.safe_files import append_line, creation_problem
from .scoring import score_answer
from .tasks import BatchTask, resolve_scripted_path

TaskStatus = Literal["ok", "failed", "timeout", "error", "budget"]
STATUS_FILE = "status.jsonl"
_STATUS_OF_RUN: dict[str, TaskStatus] = {"answered": "ok", "max_steps": "failed", "budget": "budget"}
POOL_FOLDER = ".pool"
WORK_FOLDER = "work"


@dataclass(frozen=True)
class BatchSettings:
    """How a batch runs its tasks.

    Args:
        out: folder of the notebooks and ``status.jsonl``.
        config: the settings of every task's run (model, loop, budget, kernel and sandbox,
            tools); a task's own settings are applied over it (:func:`task_config`). The kernel,
            sandbox and tool settings are the batch's alone: one pool serves every task (in the
            jail, the default, a task writes in ``<id>/work/``, beside its notebook; see the
            module docstring).
        task_timeout: time limit of a whole task, in seconds (``None``: none); a task's own
            field overrides it.
        jobs: tasks run at once (and kernels kept warm) on this machine.
        fork: let the pool fork kernels from a pre-imported process where it can
            (:mod:`nbagent.execution.forking`); ``False``: start every kernel as a fresh process.
        total_tokens: tokens the whole batch may use: no task starts once they are used (those
            left have no status, so ``--resume`` with a larger budget runs them), and a task
            that starts may use no more than what is left.
        total_cost: the same in US dollars.
        max_same_errors: stop the batch after this many tasks in a row end with the same error
            (``0``: never stop).
        check_models: ask each distinct model one tiny question before the first task.
    """

    out: Path
    config: AgentConfig = field(default_factory=AgentConfig)
    task_timeout: float | None = None
    jobs: int = 1
    fork: bool = True
    total_tokens: int | None = None
    total_cost: float | None = None
    max_same_errors: int = 3
    check_models: bool = True


def task_config(settings: BatchSettings, task: BatchTask) -> AgentConfig:
    """The settings of ``task``'s run: the batch's, with the task's own applied over them."""
    changes = dict(task.settings)
    if "api_key_env" in changes:
        changes["api_key"] = None  # the task's own key, never the batch's --api-key
    return settings.config.replace(where=task.where, **changes)


@dataclass
class TaskRecord:
    """One line of ``status.jsonl``: how a task ended."""

    id: str
    status: TaskStatus
    answer: str | None = None
    expected: str | int | float | None = None
    correct: bool | None = None
    score: float | None = None
    scoring: str | None = None
    steps: int = 0
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    duration: float = 0.0
    notebook: str | None = None
    model: str | None = None
    error: str | None = None
    finished: str = ""
    metadata: Any = None

    def to_json(self) -> str:
        """The record as one line of JSON (no newline)."""
        data = {k: v for k, v in self.__dict__.items() if not (k == "metadata" and v is None)}
        return json.dumps(data, ensure_ascii=False, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskRecord:
        """A record read back from ``status.jsonl`` (unknown keys ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class StatusFile:
    """``status.jsonl``: appended one whole line per finished task, flushed to disk each time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, TaskRecord]:
        """Records by task id (the last line of an id wins); a torn or foreign line is skipped."""
        records: dict[str, TaskRecord] = {}
        if not self.path.exists():
            return records
        for text in self.path.read_text(encoding="utf-8").splitlines():
            try:
                data = json.loads(text)
                record = TaskRecord.from_dict(data)
            except (json.JSONDecodeError, TypeError):
                continue  # a line cut short by a crash: that task simply runs again
            records[record.id] = record
        return records

    def append(self, record: TaskRecord) -> None:
        """Add ``record`` as one line and make sure it is on disk before returning."""
        # Never through a symlink: the out folder may hold files a task's kernel wrote.
        append_line(self.path, record.to_json())


class BatchListener:
    """Receives a batch's progress; every method does nothing by default."""

    def batch_started(self, total: int, skipped: int) -> None:
        """``total`` tasks will run now; ``skipped`` were already finished (``--resume``)."""

    def task_finished(self, record: TaskRecord) -> None:
        """A task ended and its line was written."""

    def message(self, text: str) -> None:
        """Something worth telling the user (an unexpected error, a warning)."""

    def batch_finished(self) -> None:
        """The batch ended (all done, or interrupted)."""


@dataclass
class BatchOutcome:
    """What :func:`run_batch` did: the records of every task of the file that has one."""

    records: dict[str, TaskRecord]
    ran: list[TaskRecord] = field(default_factory=list)
    skipped: int = 0
    missing: list[str] = field(default_factory=list)
    interrupted: bool = False
    stopped: str | None = None
    """Why the batch stopped early (the same error again and again), ``None`` if it did not."""
    duration: float = 0.0
    budget_used: str | None = None
    """Why some tasks were not started: the batch's total budget was used."""

    @property
    def all_ok(self) -> bool:
        """Every task of the file finished with status ``ok``."""
        return not self.missing and all(r.status == "ok" for r in self.records.values())


def task_folder(out: Path, task: BatchTask) -> Path:
    """Where a task's notebook and data live."""
    return out / task.id


def notebook_path(out: Path, task: BatchTask) -> Path:
    """A task's notebook."""
    return task_folder(out, task) / f"{task.id}.ipynb"


def prepare(
    tasks: Sequence[BatchTask], settings: BatchSettings, resume: bool, check_models: bool = True
) -> tuple[BatchSettings, list[BatchTask], dict[str, TaskRecord]]:
    """Check the batch before anything runs; returns (settings, tasks to run, records so far).

    Raises :class:`UsageError` for a bad setting, a model that cannot be used, or an ``--out``
    folder that already holds a batch when ``resume`` is false (so nothing is overwritten).
    """
    if settings.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {settings.jobs}")
    if settings.max_same_errors < 0:
        raise UsageError(f"--max-same-errors cannot be negative ({settings.max_same_errors})")
    task_timeout = settings.task_timeout
    if task_timeout is not None and not (math.isfinite(task_timeout) and task_timeout > 0):
        raise UsageError(f"--task-timeout must be a positive number of seconds, not {task_timeout:g}")
    if settings.total_tokens is not None and settings.total_tokens < 1:
        raise UsageError(f"--total-tokens must be at least 1, not {settings.total_tokens}")
    if settings.total_cost is not None and not settings.total_cost > 0:
        raise UsageError(f"--total-cost must be a positive number of US dollars, not {settings.total_cost:g}")
    out = settings.out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(settings.out)!r} is a file; give a folder for the notebooks")
    problem = creation_problem(out)
    if problem is not None:
        raise UsageError(f"cannot write the batch to --out {str(settings.out)!r}: {problem}")
    config = settings.config
    if config.model is not None:
        config = config.replace(model=resolve_scripted_path(config.model, Path.cwd()))
    settings = replace(settings, out=out, config=config)
    _check_tools(config)

    for task in tasks:
        if not task_config(settings, task).model and not os.environ.get(MODEL_ENV):
            raise UsageError(
                "no model given for some tasks: pass --model, set NBAGENT_MODEL, or give each task a 'model'"
            )
    for spec, kwargs in distinct_models(tasks, settings):
        resolved = resolve_model(spec, **kwargs)
        if check_models and isinstance(resolved, LiteLLMModel):
            resolved.check()

    status = StatusFile(out / STATUS_FILE)
    done = status.read()
    if not resume:
        if status.path.exists():
            raise UsageError(
                f"{str(settings.out)!r} already holds a batch ({STATUS_FILE}); pass --resume to finish it, "
                "or choose another --out folder"
            )
        taken = [t.id for t in tasks if task_folder(out, t).exists()]
        if taken:
            raise UsageError(
                f"{str(settings.out)!r} already has a folder for task {taken[0]!r}; pass --resume to "
                "replace unfinished tasks, or choose another --out folder"
            )
    # A task that failed before its first step (its model refused or could not be reached) never
    # got to work: --resume runs it again, once the cause is fixed.
    done = {k: r for k, r in done.items() if not (r.status == "error" and r.steps == 0)}
    todo = [t for t in tasks if t.id not in done]
    return settings, todo, done


async def run_task(
    task: BatchTask, pool: KernelPool, settings: BatchSettings, left: BatchSpend | None = None
) -> TaskRecord:
    """Run one task in a kernel from ``pool``; never raises for a failure of the task itself.

    ``left``: what the batch's total budget still allows; the task may use no more.
    """
    started = time.perf_counter()
    folder = task_folder(settings.out, task)
    nb_path = notebook_path(settings.out, task)
    task_timeout = task.task_timeout if task.task_timeout is not None else settings.task_timeout
    record = TaskRecord(
        id=task.id,
        status="error",
        model=task.model or settings.config.model,
        expected=task.expected,
        metadata=task.metadata,
    )
    agent: Agent | None = None
    result: RunResult | None = None
    kernel = None
    try:
        config = task_config(settings, task)
        if left is not None:
            config = config.replace(
                max_total_tokens=_smallest(config.max_total_tokens, left.tokens),
                max_cost=_smallest(config.max_cost, left.cost),
            )
        if folder.exists():
            shutil.rmtree(folder)  # an unfinished earlier attempt: replaced, never merged
        if pool.jailed:
            # The jail writes in work/ only; the notebook beside it is out of the kernel's reach.
            folder.mkdir()
            if not pool.planned(folder / WORK_FOLDER):
                pool.plan([(folder / WORK_FOLDER, folder)])  # a task the pool was not told of (Dask)
            kernel = await pool.acquire(folder / WORK_FOLDER)
        else:
            kernel = await pool.acquire(folder)
        agent = Agent(config=config, executor=kernel)
        run = agent.arun(
            task.question, files=task.files, notebook=nb_path, overwrite=True, parameters=task.parameters
        )
        result = await asyncio.wait_for(run, task_timeout)
        record.status = _STATUS_OF_RUN.get(result.status, "error")
        record.answer = result.answer_text
        record.error = result.error
        if result.status == "max_steps":
            record.error = f"no final answer within {agent.max_steps} steps"
    except asyncio.TimeoutError:
        record.status = "timeout"
        record.error = f"the task ran past its time limit of {task_timeout:g} s and was stopped"
        if agent is not None and agent.recorder is not None:
            agent.recorder.add_marker(f"the batch stopped this task: {record.error}.")
            agent.recorder.finish_task(status="timeout", error=record.error)
            agent.recorder.save()
    except NbagentError as exc:
        record.status, record.error = "error", str(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug must cost one task, not the batch
        record.status = "error"
        record.error = f"internal error: {type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if kernel is not None:
            await pool.release(kernel)

    usage = Usage()
    steps = 0
    if agent is not None and agent.memory is not None:
        for step in agent.memory.steps:
            usage = usage + step.usage
            steps += 1
    record.steps = steps
    record.tokens, record.input_tokens, record.output_tokens = (
        usage.total_tokens,
        usage.input_tokens,
        usage.output_tokens,
    )
    record.cost = usage.cost
    if task.expected is not None:
        score = score_answer(
            record.answer if record.status == "ok" else None, task.expected, task.scoring, task.tolerance
        )
        record.correct, record.score, record.scoring = score.correct, round(score.score, 6), score.method
    record.duration = round(time.perf_counter() - started, 3)
    record.notebook = str(nb_path.relative_to(settings.out)) if nb_path.exists() else None
    record.finished = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return record


@dataclass
class BatchSpend:
    """Tokens and US dollars: what a batch has spent, or what its total budget still allows."""

    tokens: int | None = 0
    cost: float | None = 0.0

    def add(self, record: TaskRecord) -> None:
        """Count a finished task."""
        self.tokens = (self.tokens or 0) + record.tokens
        self.cost = (self.cost or 0.0) + (record.cost or 0.0)

    def left(self, settings: BatchSettings) -> BatchSpend | None:
        """What the total budget still allows (``None``: no total budget)."""
        if settings.total_tokens is None and settings.total_cost is None:
            return None
        return BatchSpend(
            None if settings.total_tokens is None else settings.total_tokens - (self.tokens or 0),
            None if settings.total_cost is None else settings.total_cost - (self.cost or 0.0),
        )

    def used_up(self, settings: BatchSettings) -> str | None:
        """Why no further task may start, or ``None`` while the total budget allows more."""
        if settings.total_tokens is not None and (self.tokens or 0) >= settings.total_tokens:
            return f"the batch's token budget is used ({self.tokens:,} of {settings.total_tokens:,} tokens)"
        if settings.total_cost is not None and (self.cost or 0.0) >= settings.total_cost:
            return f"the batch's cost budget is used (${self.cost:.4f} of ${settings.total_cost:.4f})"
        return None


def _check_tools(config: AgentConfig) -> None:
    """Load the batch's saved tools once, before any task: a tool that cannot be used (not
    trusted, not found) is one error now, not one per task."""
    from ..tools.sharing import load_tool

    if config.tool_sources and not config.trust_tools:
        raise UntrustedToolError(
            f"the saved tool {config.tool_sources[0]} runs its code here and in every task's kernel; "
            "read its tool.py, then add --trust-tools"
        )
    for source in config.tool_sources:
        load_tool(source, trust_remote_code=True)


def _smallest(*limits: Any) -> Any:
    given = [x for x in limits if x is not None]
    return min(given) if given else None


async def run_local(
    tasks: Sequence[BatchTask],
    settings: BatchSettings,
    on_record: Callable[[TaskRecord], None],
    stop: asyncio.Event | None = None,
) -> str | None:
    """Run ``tasks`` on this machine, ``settings.jobs`` at a time, from one warm kernel pool.

    Once ``stop`` is set no further task starts; those running finish. Returns why tasks were
    left unstarted (the batch's total budget was used), else ``None``.
    """
    pool = KernelPool(
        settings.jobs,
        settings.out / POOL_FOLDER,
        kernel=settings.config.kernel,
        limit=len(tasks),
        fork=None if settings.fork else False,
        sandbox=settings.config.sandbox_spec(),
    )
    if pool.jailed:
        # Each jail is made for its task: the code sees the task's folder, as a re-run would.
        pool.plan([(task_folder(settings.out, t) / WORK_FOLDER, task_folder(settings.out, t)) for t in tasks])
    queue: asyncio.Queue[BatchTask] = asyncio.Queue()
    for task in tasks:
        queue.put_nowait(task)

    spent = BatchSpend()
    stopped: list[str] = []

    async def worker() -> None:
        while stop is None or not stop.is_set():
            reason = spent.used_up(settings)
            if reason is not None:
                stopped.append(reason)
                return
            try:
                task = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            record = await run_task(task, pool, settings, spent.left(settings))
            spent.add(record)
            on_record(record)

    await pool.astart()
    workers = [asyncio.ensure_future(worker()) for _ in range(min(settings.jobs, len(tasks)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await pool.aclose()
    return stopped[0] if stopped and not queue.empty() else None


class RemoteTasks(Protocol):
    """Runs a batch's tasks somewhere else (e.g. :class:`nbagent.batch.cluster.DaskCluster`)."""

    async def __call__(
        self, tasks: Sequence[BatchTask], settings: BatchSettings, on_record: Callable[[TaskRecord], None]
    ) -> None: ...


async def run_batch(
    tasks: Sequence[BatchTask],
    settings: BatchSettings,
    *,
    resume: bool = False,
    cluster: RemoteTasks | None = None,
    listener: BatchListener | None = None,
) -> BatchOutcome:
    """Run a batch to the end, or until SIGINT/SIGTERM; see the module docstring.

    ``cluster``: where to send the tasks instead of this machine's pool, e.g.
    ``DaskCluster(address)`` (``nbagent-ai[dask]``). Raises :class:`UsageError` for bad input
    before anything runs.
    """
    listener = listener or BatchListener()
    started = time.perf_counter()
    if cluster is not None and (settings.total_tokens is not None or settings.total_cost is not None):
        raise UsageError(
            "--total-tokens and --total-cost apply to local batches; on a cluster give each task "
            "a budget (--max-total-tokens, --max-cost or the task's own fields)"
        )
    settings, todo, done = prepare(tasks, settings, resume, check_models=cluster is None)
    if cluster is None and settings.check_models:
        await check_models_answer(todo, settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    status = StatusFile(settings.out / STATUS_FILE)
    if not status.path.exists():
        status.path.touch()
    outcome = BatchOutcome(
        records={t.id: done[t.id] for t in tasks if t.id in done}, skipped=len(tasks) - len(todo)
    )

    stop = asyncio.Event()
    same: list[str] = []  # the error of the last tasks, while they all ended with the same one

    def on_record(record: TaskRecord) -> None:
        status.append(record)
        outcome.records[record.id] = record
        outcome.ran.append(record)
        listener.task_finished(record)
        if record.status != "error" or not record.error or (same and same[-1] != record.error):
            same.clear()
        if record.status == "error" and record.error:
            same.append(record.error)
        # (A cluster runs its tasks as they come; the batch stops early only on this machine.)
        if (
            cluster is None
            and settings.max_same_errors
            and len(same) >= settings.max_same_errors
            and outcome.stopped is None
        ):
            outcome.stopped = (
                f"{len(same)} tasks in a row failed with the same error, so the batch stopped: {record.error}"
            )
            listener.message(f"nbagent batch: {outcome.stopped}")
            stop.set()  # the tasks running end on their own (quickly, failing the same way)

    runner: Coroutine[Any, Any, str | None]
    if cluster is not None:

        async def on_cluster() -> None:
            await cluster(todo, settings, on_record)

        runner = on_cluster()
    else:
        runner = run_local(todo, settings, on_record, stop)

    listener.batch_started(len(todo), outcome.skipped)
    main = asyncio.ensure_future(runner)
    with _stop_on_signals(main) as stopped:
        try:
            outcome.budget_used = await main
        except asyncio.CancelledError:
            if not stopped():
                raise
            outcome.interrupted = True
    listener.batch_finished()
    outcome.missing = [t.id for t in tasks if t.id not in outcome.records]
    outcome.duration = time.perf_counter() - started
    return outcome


@contextlib.contextmanager
def _stop_on_signals(main: asyncio.Future[Any]) -> Any:
    """SIGINT/SIGTERM cancel ``main`` once (tasks end, kernels stop); a second SIGINT kills."""
    loop = asyncio.get_running_loop()
    hit: list[int] = []

    def stop(signum: int) -> None:
        hit.append(signum)
        for s in installed:
            loop.remove_signal_handler(s)  # a second Ctrl-C gets Python's default: stop at once
        main.cancel()

    installed: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or a platform without signal handlers
    try:
        yield lambda: bool(hit)
    finally:
        for s in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(s)


def model_kwargs(settings: BatchSettings, task: BatchTask | None = None) -> dict[str, Any]:
    """How a task's model is reached: the batch's model settings, overridden by the task's."""
    config = settings.config if task is None else task_config(settings, task)
    return config.model_options().kwargs()


def distinct_models(
    tasks: Sequence[BatchTask], settings: BatchSettings
) -> list[tuple[str | None, dict[str, Any]]]:
    """Each distinct (model string, how it is reached) of ``tasks``, in the order tasks name them."""
    seen: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for task in tasks:
        spec = task_config(settings, task).model or None
        kwargs = model_kwargs(settings, task)
        key = json.dumps([spec, {k: repr(v) for k, v in sorted(kwargs.items())}])
        seen.setdefault(key, (spec, kwargs))
    return list(seen.values())


async def check_models_answer(tasks: Sequence[BatchTask], settings: BatchSettings) -> None:
    """Ask each distinct model of ``tasks`` one tiny question; :class:`UsageError` naming the first
    that does not answer (a wrong key, model or URL would fail every task the same way)."""
    for spec, kwargs in distinct_models(tasks, settings):
        model = resolve_model(spec, **kwargs)
        try:
            await model.acheck()
        except ModelError as exc:
            users = [t.id for t in tasks if (task_config(settings, t).model or None) == spec]
            raise UsageError(
                f"{exc} (checked before the first task; no task was run. {len(users)} tasks use this "
                "model: fix it and run the batch again)"
            ) from None
        finally:
            await model.aclose()
