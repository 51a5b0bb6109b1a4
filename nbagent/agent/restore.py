"""Bringing a run back: the kernel's state from the notebook's cells, the agent's memory from its metadata.

The notebook is the recipe. After a kernel restart (a death, an ignored interrupt) the setup code
and the code of every step that ran without error are run again, in order
(:func:`replay_steps`). After a host crash, :func:`read_run` turns the notebook's cells and their
``metadata.nbagent`` back into the :class:`~nbagent.agent.memory.Task` and
:class:`~nbagent.agent.memory.Step` entries the model saw, so :meth:`Agent.resume
<nbagent.Agent.resume>` can rebuild the kernel and go on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from ..exceptions import UsageError
from ..execution.executor import Executor
from ..execution.outputs import ErrorInfo, Execution, error_from_outputs
from ..kernel_code import setup_code
from ..models import Usage
from ..notebook import schema
from ..notebook.reader import read_run_notebook
from ..notebook.recorder import step_code
from ..records import Observation, Plan, Step, Task
from .observe import Observer
from .parsing import parse_reply


@dataclass
class Restoration:
    """What re-running a run's cells in a fresh kernel did.

    ``cells`` is how many step cells were re-run; ``failed`` names the steps whose cell did not
    run cleanly again (their variables may be missing); ``died`` says the kernel died (or was
    restarted) during the replay, which stops it.
    """

    cells: int = 0
    failed: list[str] = field(default_factory=list)
    died: bool = False
    duration: float = 0.0

    @property
    def complete(self) -> bool:
        """True when every cell ran again without error."""
        return not self.failed and not self.died

    def describe(self) -> str:
        """A sentence for the model (and the notebook) about the restored state."""
        cells = f"{self.cells} earlier cell{'s' if self.cells != 1 else ''}"
        if self.complete:
            return f"its state was restored by re-running {cells} ({self.duration:.1f} s)"
        what = "; ".join(self.failed)
        return (
            f"its state was only partly restored by re-running {cells}: {what}. Variables made by "
            "those cells may be missing; re-create what you need"
        )


def successful_steps(steps: Sequence[Step]) -> list[Step]:
    """The steps whose code ran to the end without error, in order: the recipe of the state."""
    return [s for s in steps if s.execution is not None and s.execution.ok and s.code]


async def replay_steps(
    executor: Executor, steps: Sequence[Step], timeout: float | None, setup: str | None = None
) -> Restoration:
    """Run the setup code, then the code of ``steps`` that succeeded, in a freshly (re)started kernel.

    ``setup`` is the setup cell's source (default: the core definitions, :func:`setup_code`; an
    agent with tools passes its own).
    """
    t0 = time.perf_counter()
    restoration = Restoration()
    setup = setup if setup is not None else setup_code()
    ran = await executor.aexecute(setup, timeout=60, setup=True)
    if not ran.ok:
        restoration.failed.append(f"the setup code ({ran.error or ran.status})")
        restoration.died = ran.restarted
    else:
        for step in successful_steps(steps):
            assert step.code is not None
            execution = await executor.aexecute(step.code, timeout=timeout)
            restoration.cells += 1
            if execution.restarted:
                # The kernel is fresh again: give it back at least final_answer, and stop.
                restoration.died = True
                restoration.failed.append(
                    f"step {step.number}'s cell killed the kernel again, so the kernel was "
                    "restarted once more with none of the earlier state"
                )
                await executor.aexecute(setup, timeout=60, setup=True)
                break
            if not execution.ok:
                restoration.failed.append(
                    f"step {step.number}'s cell failed ({execution.error or execution.status})"
                )
    restoration.duration = time.perf_counter() - t0
    return restoration


# -- reading a run back from its notebook ---------------------------------------------------


@dataclass
class SavedRun:
    """A notebook nbagent wrote, read back: its tasks and steps in order, and facts about its last run."""

    path: Path
    nb: NotebookNode
    entries: list[Task | Step | Plan]
    last_run: dict[str, Any]
    task_steps: list[Step]
    """The steps of the last task (the one a resume continues)."""

    @property
    def steps(self) -> list[Step]:
        """Every step, across tasks."""
        return [e for e in self.entries if isinstance(e, Step)]

    @property
    def answer_payload(self) -> dict[str, Any] | None:
        """The ``final_answer`` payload of the last task, if its last step gave one."""
        for step in reversed(self.task_steps):
            if step.execution is not None:
                return step.execution.answer_bundle()
        return None


def read_run(path: str | os.PathLike[str], observer: Observer | None = None) -> SavedRun:
    """Read back the tasks and steps recorded in an nbagent notebook.

    Each step comes from its cells' ``metadata.nbagent`` (the model's reply, the observation it
    was shown, token usage) and its code cell (code and outputs). Figures are taken again from
    the outputs, for models that see images.
    """
    path = Path(path)
    nb = read_run_notebook(path)
    runs = schema.runs(nb)
    observer = observer or Observer()
    entries: list[Task | Step | Plan] = []
    tasks = 0
    task_steps: list[Step] = []
    for index, cell in enumerate(nb.cells):
        meta = schema.cell_meta(cell)
        role = meta.get("role")
        try:
            if role == "task":
                if tasks >= len(runs):
                    raise KeyError("runs")
                run = runs[tasks]
                entries.append(
                    Task(
                        question=run["question"],
                        files=[f["name"] for f in run["files"]],
                        parameters=dict(run.get("parameters") or {}),
                    )
                )
                tasks += 1
                task_steps = []
            elif role == "plan":
                entries.append(_plan_from_cell(cell, meta))
            elif role == "step" or (role == "thought" and meta.get("status") == "no-code"):
                step = _step_from_cell(cell, meta, observer)
                entries.append(step)
                task_steps.append(step)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(
                f"notebook {str(path)!r} cannot be resumed: cell {index + 1} ({role}) lacks the "
                f"metadata nbagent records ({exc}); was it edited by hand?"
            ) from None
    if tasks != len(runs):
        raise UsageError(
            f"notebook {str(path)!r} cannot be resumed: it records {len(runs)} question(s) "
            f"but has {tasks} question cell(s); was it edited by hand?"
        )
    return SavedRun(path=path, nb=nb, entries=entries, last_run=runs[-1], task_steps=task_steps)


def _usage(meta: dict[str, Any]) -> Usage:
    usage = meta.get("usage") or {}
    return Usage(
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
        cost=usage.get("cost"),
        estimated=bool(usage.get("estimated", False)),
    )


def _plan_from_cell(cell: NotebookNode, meta: dict[str, Any]) -> Plan:
    text = meta.get("text")
    if not isinstance(text, str):
        # Written before plans recorded their text: the cell reads "**Plan** (before step N)\n\n<the plan>".
        text = cell.source.split("\n\n", 1)[1] if "\n\n" in cell.source else cell.source
    return Plan(
        before_step=int(meta["before_step"]),
        text=text,
        reply=str(meta["reply"]),
        usage=_usage(meta),
        model_duration=float(meta.get("model_duration", 0.0)),
        kind="update" if meta.get("kind") == "update" else "initial",
    )


def _step_from_cell(cell: NotebookNode, meta: dict[str, Any], observer: Observer) -> Step:
    reply = str(meta["reply"])
    execution: Execution | None = None
    images: list[str] = []
    if cell.cell_type == "code":
        error = meta.get("error")
        outputs = list(cell.get("outputs", []))
        execution = Execution(
            code=step_code(cell.source),
            outputs=outputs,
            status=meta["status"],
            execution_count=cell.get("execution_count"),
            error=error_from_outputs(outputs)
            or (ErrorInfo(error["name"], error["value"], "") if error else None),
            duration=float(meta.get("duration", 0.0)),
            restarted=bool(meta.get("restarted", False)),
        )
        if meta.get("observation_images"):
            images = observer.observe(execution).images
    return Step(
        number=int(meta["step"]),
        reply=reply,
        thought=parse_reply(reply).thought,
        code=None if execution is None else execution.code,
        execution=execution,
        observation=Observation(text=str(meta["observation"]), images=images),
        usage=_usage(meta),
        model_duration=float(meta.get("model_duration", 0.0)),
        kind="final" if meta.get("kind") == "final" else "action",
    )
