"""Re-run a notebook in a fresh kernel and check that it still gives what it recorded.

:func:`verify_notebook` copies the notebook's data files (checked against their recorded SHA-256)
into a temporary folder, starts a fresh kernel there (nbagent's own spec unless told otherwise;
``PYTHONHASHSEED`` as recorded), runs every code cell with nbclient -- cells tagged
``raises-exception`` may raise, cells tagged ``skip-execution`` are skipped, as nbclient and
``jupyter nbconvert --execute`` do -- and compares each cell's new outputs with the stored ones
after normalisation (:mod:`nbagent.repro.compare`). Each code cell comes out ``same``, ``differs`` (with a
short diff), ``new-error`` (it raises now and did not then), ``skipped``, ``not-run`` (the kernel
died before it) or ``code-changed``: its code (or recorded answer) is not what nbagent wrote, by the
keyed digests of :mod:`nbagent.notebook.signing`. The notebook is reproduced when every answer cell
gives the same answer and no cell differs or changed. A notebook without digests made on this
machine is reported as "not signed here", which is not a failure on its own.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nbformat
from jupyter_core.utils import run_sync
from nbformat import NotebookNode

from .._version import __version__
from ..agent.config import AgentConfig, setting
from ..agent.environment import parse_probe_output, probe_code, version_changes
from ..exceptions import KernelStartError, SandboxUnavailableError, UsageError
from ..execution.jail import JAIL_UID, jail_unavailable
from ..execution.kernel import DEFAULT_KERNEL, check_kernel_name, is_sandboxed_spec, kernel_spec_manager
from ..execution.outputs import ANSWER_MIME
from ..execution.run_limits import JailedRun
from ..execution.sandbox import Sandbox
from ..kernel_code import agent_code, new_answer_key
from ..notebook import schema
from ..notebook.reader import check_metadata, read_notebook_file
from ..notebook.recorder import RAISES, SKIP, atomic_write_text, file_digest, step_code
from ..notebook.signing import Signature, SignatureCheck, check_signatures, load_key
from .compare import DEFAULT_IMAGE_TOLERANCE, answers_match, compare_outputs

CellStatus = Literal["same", "differs", "new-error", "skipped", "not-run", "code-changed"]

DEFAULT_CELL_TIMEOUT = 600.0
"""Seconds a cell may run when re-run, for a notebook that records no step time limit."""
MIN_CELL_TIMEOUT = 60.0
"""The least a re-run gives one cell, whatever the run's step limit was."""


@dataclass
class CellCheck:
    """The verdict on one code cell of a verified notebook.

    ``index`` is the cell's position in ``notebook.cells`` (``number`` counts from 1, as a reader
    would); ``diff`` holds a short unified diff (``-`` recorded, ``+`` re-run) when it differs;
    ``error`` the new exception for ``new-error``.
    """

    index: int
    label: str
    status: CellStatus
    source: str = ""
    diff: list[str] = field(default_factory=list)
    error: str | None = None
    answer: bool = False
    answer_reproduced: bool | None = None

    @property
    def number(self) -> int:
        """The cell's position counting from 1."""
        return self.index + 1

    @property
    def ok(self) -> bool:
        """True when the cell reproduced (or was skipped on purpose)."""
        return self.status in ("same", "skipped") and self.answer_reproduced is not False

    def describe(self) -> str:
        """``cell 8 (step 3)``."""
        return f"cell {self.number} ({self.label})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as recorded in the notebook's metadata."""
        out: dict[str, Any] = {"cell": self.number, "label": self.label, "status": self.status}
        if self.diff:
            out["diff"] = self.diff
        if self.error:
            out["error"] = self.error
        if self.answer:
            out["answer_reproduced"] = self.answer_reproduced
        return out


@dataclass
class VerifyReport:
    """The result of :func:`verify_notebook`.

    ``ok`` is true when every answer cell reproduced its answer, every other code cell is
    ``same`` (or ``skipped``) and nothing else went wrong (``problems``: data files that changed,
    no answer to check, a kernel that died). ``executed`` is the re-run notebook.
    """

    notebook: Path | None
    kernel: str
    cells: list[CellCheck]
    problems: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    recorded_environment: dict[str, Any] = field(default_factory=dict)
    executed: NotebookNode | None = None
    duration: float = 0.0
    verified_at: str = ""
    signature: Signature = "not signed here"
    """Whether the notebook carries digests made with this machine's key (:mod:`nbagent.notebook.signing`)."""

    @property
    def answer_cells(self) -> list[CellCheck]:
        """The cells that gave a final answer in the recorded notebook."""
        return [c for c in self.cells if c.answer]

    @property
    def answer_reproduced(self) -> bool:
        """True when the notebook has answer cells and each gives the same answer again."""
        answers = self.answer_cells
        return bool(answers) and all(c.answer_reproduced for c in answers)

    @property
    def failures(self) -> list[CellCheck]:
        """Cells that did not reproduce."""
        return [c for c in self.cells if not c.ok]

    @property
    def ok(self) -> bool:
        """True when the notebook reproduced (see the class docstring)."""
        return self.answer_reproduced and not self.failures and not self.problems

    @property
    def version_changes(self) -> dict[str, tuple[str, str]]:
        """Python and package versions that differ from the recorded ones."""
        if not self.recorded_environment or not self.environment:
            return {}
        return version_changes(self.recorded_environment, self.environment)

    def counts(self) -> dict[str, int]:
        """How many code cells have each status."""
        counts = {
            status: 0 for status in ("same", "differs", "new-error", "skipped", "not-run", "code-changed")
        }
        for cell in self.cells:
            counts[cell.status] += 1
        return counts

    def summary(self, all_cells: bool = True) -> str:
        """A readable report: one line per code cell (diffs indented), then the verdict."""
        where = "notebook"
        if self.notebook is not None:
            try:
                where = str(self.notebook.relative_to(Path.cwd()))
            except ValueError:
                where = str(self.notebook)
        lines = [
            f"verify {where}: kernel {self.kernel}, {len(self.cells)} code cells, {self.duration:.1f} s, "
            f"{self.signature}"
        ]
        for cell in self.cells:
            if not all_cells and cell.ok:
                continue
            status = cell.status.replace("-", " ")
            if cell.error:
                status += f": {cell.error}"
            if cell.answer:
                status += ", answer reproduced" if cell.answer_reproduced else ", ANSWER DIFFERS"
            head = f"  cell {cell.number:>3}  {cell.label:<16} {status}"
            lines.append(head)
            lines += [f"      {line}" for line in cell.diff]
        lines += [f"  problem: {p}" for p in self.problems]
        changes = self.version_changes
        if changes:
            lines.append(
                "  versions changed since the run: "
                + ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changes.items())
            )
        counts = self.counts()
        verdict = "REPRODUCED" if self.ok else "NOT REPRODUCED"
        lines.append(
            f"{verdict}: {counts['same']} same, {counts['differs']} differ, "
            f"{counts['new-error']} new errors, {counts['skipped']} skipped, {counts['not-run']} not run"
            + (f", {counts['code-changed']} code changed" if counts["code-changed"] else "")
            + "; "
            f"answer {'reproduced' if self.answer_reproduced else 'not reproduced'}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as recorded under ``metadata.nbagent.verification``."""
        return {
            "ok": self.ok,
            "answer_reproduced": self.answer_reproduced,
            "verified_at": self.verified_at,
            "nbagent_version": __version__,
            "kernel": self.kernel,
            "duration": round(self.duration, 3),
            "counts": self.counts(),
            "signature": self.signature,
            "cells": [c.to_dict() for c in self.cells if not c.ok or c.answer],
            "problems": list(self.problems),
            "environment": self.environment,
            "version_changes": {k: list(v) for k, v in self.version_changes.items()},
        }


def recorded_files(nb: NotebookNode) -> dict[str, str]:
    """Data files the notebook's runs were given: name -> sha256."""
    files: dict[str, str] = {}
    for run in schema.runs(nb):
        for entry in run.get("files", []):
            files[str(entry["name"])] = str(entry.get("sha256", ""))
    return files


def answer_payload(cell: NotebookNode) -> dict[str, Any] | None:
    """The ``final_answer`` payload among a cell's outputs (the last one), if any."""
    found = None
    for out in cell.get("outputs", []):
        if out.get("output_type") in ("display_data", "execute_result"):
            payload = out.get("data", {}).get(ANSWER_MIME)
            if isinstance(payload, dict):
                found = payload
    return found


def error_of(outputs: Sequence[Any]) -> str | None:
    """``Name: message`` of the last error among outputs, if any."""
    for out in reversed(outputs):
        if out.get("output_type") == "error":
            return f"{out.get('ename', '')}: {out.get('evalue', '')}"
    return None


def cell_label(cell: NotebookNode) -> str:
    """How the report names a cell: ``setup``, ``tools``, ``step 3``, ``answer cell`` or ``code``."""
    meta = schema.cell_meta(cell)
    role = meta.get("role")
    if role in ("setup", "tools"):
        return str(role)
    if role == "answer":
        return "answer cell"
    if role == "step" and meta.get("step") is not None:
        return f"step {meta['step']}"
    return "code"


def cell_timeout(step_timeout: float | None) -> float:
    """Seconds a re-run gives one cell of a run whose steps had ``step_timeout`` seconds: twice
    that (a cell that ran in time then may be slower now: a cold cache, a busier machine), at least
    :data:`MIN_CELL_TIMEOUT`; :data:`DEFAULT_CELL_TIMEOUT` for a run without a limit."""
    if step_timeout is None:
        return DEFAULT_CELL_TIMEOUT
    return max(2 * step_timeout, MIN_CELL_TIMEOUT)


_RERUN_SETTINGS = ("timeout", "memory_limit", "cpu_limit", "max_processes", "disk_limit", "file_size_limit")


def rerun_settings(nb: NotebookNode) -> dict[str, Any]:
    """The settings a re-run of the whole notebook takes from what its runs recorded: the step time
    limit and the sandbox limits, each the loosest any run had (every run's cells must be able to
    run again), and only where every run recorded a valid one (older notebooks record none).

    What a notebook may decide is then applied by :meth:`AgentConfig.resumed`: the limits only
    where tighter than the defaults; never the kernel, sandbox level, network or environment.
    """
    runs = schema.runs(nb)
    chosen: dict[str, Any] = {}
    for name in _RERUN_SETTINGS:
        spec = setting(name)
        values = []
        for run in runs:
            recorded = run.get("settings") if isinstance(run, Mapping) else None
            if not isinstance(recorded, Mapping) or name not in recorded:
                break
            try:
                values.append(spec.check(recorded[name]))
            except (UsageError, TypeError, ValueError):  # the notebook is untrusted input
                break
        else:
            if values:
                chosen[name] = None if None in values else max(values)
    return chosen


def rerun_config(nb: NotebookNode, given: Mapping[str, Any] | None = None) -> AgentConfig:
    """The settings to re-run ``nb`` with: ``given`` (the user's: they win), else the notebook's
    where :func:`rerun_settings` and :meth:`AgentConfig.resumed` allow, else the defaults."""
    given = dict(given or {})
    return AgentConfig().replace(**given).resumed(rerun_settings(nb), given)


def rerun_timeout(nb: NotebookNode) -> float:
    """Seconds each cell of ``nb`` may run when re-run (:func:`cell_timeout` of its runs' step
    limit; :data:`DEFAULT_CELL_TIMEOUT` if they record none)."""
    recorded = rerun_settings(nb)
    return cell_timeout(recorded["timeout"]) if "timeout" in recorded else DEFAULT_CELL_TIMEOUT


def _choose_kernel(kernel: str | None) -> str:
    # Never the kernel the notebook records: a notebook naming an unsandboxed kernel would
    # otherwise run its code with the host's secrets, network and no limits.
    return check_kernel_name(kernel) if kernel is not None else DEFAULT_KERNEL


def _stage_data(
    nb: NotebookNode, base_dir: Path, data: Iterable[str | os.PathLike[str]], workdir: Path
) -> list[str]:
    """Copy the data files into ``workdir``; returns problems (changed content)."""
    given: dict[str, Path] = {}
    for item in data:
        path = Path(item).expanduser()
        if not path.is_file():
            raise UsageError(f"data file {str(item)!r} does not exist or is not a file")
        given[path.name] = path
    problems = []
    for name, digest in recorded_files(nb).items():
        if Path(name).name != name or name in ("", ".", ".."):
            # A run records plain file names; anything else would copy outside the work folder.
            raise UsageError(f"the notebook lists a data file named {name!r}, which is not a plain file name")
        source = given.pop(name, base_dir / name)
        if not source.is_file():
            raise UsageError(
                f"the notebook was made with data file {name!r}, which is not in {str(base_dir)!r}; "
                f"pass it with --data PATH (data=[...])"
            )
        actual = file_digest(source)
        if digest and actual != digest:
            problems.append(
                f"data file {name!r} is not the one the notebook was made with "
                f"(sha256 {actual[:12]}…, recorded {digest[:12]}…)"
            )
        shutil.copy2(source, workdir / name)
    for name, path in given.items():
        shutil.copy2(path, workdir / name)
    return problems


def _kernel_env(nb: NotebookNode, sandbox: Sandbox) -> dict[str, str]:
    """The verifying kernel's environment: the host's, the sandbox's settings, the recorded hash seed."""
    env = dict(os.environ)
    # Set explicitly (not inherited, never from the notebook): limits no looser than asked for.
    env.update(sandbox.to_env())
    seed = schema.environment(nb).get("python_hash_seed")
    # Only a number PYTHONHASHSEED accepts: the notebook is not trusted to set anything else.
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= 4294967295:
        env["PYTHONHASHSEED"] = str(seed)
    return env


async def _execute(
    nb: NotebookNode,
    kernel: str,
    workdir: Path,
    env: dict[str, str],
    timeout: float,
    sandbox: Sandbox | None = None,
) -> tuple[NotebookNode, dict[int, str], set[int], dict[str, Any], str | None]:
    """Run ``nb`` (a copy) in a fresh kernel.

    Returns the executed notebook, errors reported per cell index, indices not run, the kernel's
    environment, and why the run stopped early (or ``None``).
    """
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    sandbox = sandbox or Sandbox()
    jail: JailedRun | None = None
    if is_sandboxed_spec(kernel):
        # The notebook under verification is as untrusted as a model's code: same sandbox.
        env = {**env, **sandbox.to_env()}
        if sandbox.jailed:
            reason = jail_unavailable()
            if reason is not None:
                raise SandboxUnavailableError(reason)
            jail = JailedRun(sandbox)
            env.update(jail.env(None))
    runtime_dir = jail.folder if jail is not None else tempfile.mkdtemp(prefix="nbagent-verify-kernel-")
    ipc_dir = jail.ipc if jail is not None else runtime_dir
    # ipc transport, as for the agent's own kernels: no TCP ports, works without a network.
    km = AsyncKernelManager(
        kernel_name=kernel,
        kernel_spec_manager=kernel_spec_manager(),
        transport="ipc",
        ip=os.path.join(ipc_dir, "k"),
        connection_file=os.path.join(runtime_dir, "connection.json"),
    )
    errors: dict[int, str] = {}

    def on_cell_error(cell: NotebookNode, cell_index: int, execute_reply: dict[str, Any]) -> None:
        content = execute_reply.get("content", {})
        errors[cell_index] = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"

    client = NotebookClient(
        nb,
        km=km,
        kernel_name=kernel,
        timeout=max(1, round(timeout)),
        allow_errors=True,
        interrupt_on_timeout=True,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": f"the cell ran longer than {timeout:g} s"},
        record_timing=False,
        on_cell_error=on_cell_error,
        resources={"metadata": {"path": str(workdir)}},
    )
    not_run: set[int] = set()
    stopped: str | None = None
    environment: dict[str, Any] = {}
    try:
        try:
            async with client.async_setup_kernel(cleanup_kc=True, env=env):
                code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
                for index in code_cells:
                    # A failed step raises again, to be compared with the error it recorded.
                    nb.cells[index].source = step_code(nb.cells[index].source)
                agent_part = nbformat.v4.new_code_cell(agent_code(new_answer_key()))
                for position, index in enumerate(code_cells):
                    try:
                        await client.async_execute_cell(
                            nb.cells[index], index, execution_count=client.code_cells_executed + 1
                        )
                        if agent_part is not None and cell_label(nb.cells[index]) == "setup":
                            # As in the run: the answer is handed over in typed form, to compare.
                            setup = nb.cells[index]
                            await client.async_execute_cell(agent_part, index, store_history=False)
                            nb.cells[index], agent_part = setup, None  # nbclient put agent_part there
                            client.code_cells_executed -= 1  # it is not a cell: counts go on as in the run
                    except DeadKernelError:
                        errors[index] = "DeadKernelError: the kernel died while running this cell"
                        not_run.update(code_cells[position + 1 :])
                        stopped = f"the kernel died in cell {index + 1}; later cells did not run"
                        break
                if stopped is None:
                    environment = await _probe(client, nb)
        except (RuntimeError, OSError, TimeoutError) as exc:
            if client.kc is None:
                raise KernelStartError(f"could not start kernel {kernel!r} to verify with: {exc}") from exc
            raise
    finally:
        if jail is not None:
            jail.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)
    return nb, errors, not_run, environment, stopped


async def _probe(client: Any, nb: NotebookNode) -> dict[str, Any]:
    """The verifying kernel's environment, asked the way the agent asks (nothing stays in ``nb``)."""
    probe = nbformat.v4.new_code_cell(probe_code())
    nb.cells.append(probe)
    try:
        await client.async_execute_cell(probe, len(nb.cells) - 1, store_history=False)
    finally:
        nb.cells.pop()
    text = "".join(str(o.get("text", "")) for o in probe.outputs if o.get("output_type") == "stream")
    return parse_probe_output(text) or {}


def _judge(
    stored: NotebookNode,
    executed: NotebookNode,
    errors: dict[int, str],
    not_run: set[int],
    workdirs: Sequence[str],
    image_tolerance: float,
) -> list[CellCheck]:
    checks = []
    for index, cell in enumerate(stored.cells):
        if cell.cell_type != "code":
            continue
        first_line = next((line for line in step_code(cell.source).splitlines() if line.strip()), "")
        payload = answer_payload(cell)
        check = CellCheck(
            index=index,
            label=cell_label(cell) + (" · answer" if payload is not None else ""),
            status="same",
            source=first_line,
            answer=payload is not None,
        )
        checks.append(check)
        tags = cell.metadata.get("tags", [])
        if SKIP in tags or not cell.source.strip():
            check.status = "skipped"
            check.answer_reproduced = None if payload is None else False
            continue
        if index in not_run:
            check.status = "not-run"
            check.answer_reproduced = None if payload is None else False
            continue
        new = executed.cells[index]
        new_error = errors.get(index) or error_of(new.outputs)
        old_error = error_of(cell.outputs) or (f"{RAISES}" if RAISES in tags else None)
        diff = compare_outputs(cell.outputs, new.outputs, workdirs=workdirs, image_tolerance=image_tolerance)
        if new_error and not old_error:
            check.status, check.error = "new-error", new_error
        elif not diff.same:
            check.status = "differs"
        check.diff = diff.lines
        if payload is not None:
            new_payload = answer_payload(new)
            check.answer_reproduced = new_payload is not None and answers_match(
                payload, new_payload, workdirs=workdirs, image_tolerance=image_tolerance
            )
    return checks


async def averify_notebook(
    notebook: str | os.PathLike[str] | NotebookNode,
    *,
    data: Iterable[str | os.PathLike[str]] = (),
    kernel: str | None = None,
    timeout: float | None = None,
    record: bool = False,
    image_tolerance: float = DEFAULT_IMAGE_TOLERANCE,
    base_dir: str | os.PathLike[str] | None = None,
    sandbox: Sandbox | None = None,
) -> VerifyReport:
    """Re-run a notebook in a fresh kernel and compare; see :func:`verify_notebook`."""
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"timeout must be a positive number of seconds, not {timeout:g}")
    if not 0 <= image_tolerance < 1:
        raise UsageError(f"image_tolerance must be a share between 0 and 1, not {image_tolerance:g}")
    path: Path | None = None
    if isinstance(notebook, NotebookNode):
        stored = notebook
        check_metadata(stored)
    else:
        path = Path(notebook).expanduser().resolve()
        stored = read_notebook_file(path)
    folder = Path(base_dir).resolve() if base_dir is not None else (path.parent if path else Path.cwd())
    kernel_name = _choose_kernel(kernel)
    if timeout is None:
        timeout = rerun_timeout(stored)
    if sandbox is None:
        sandbox = rerun_config(stored).sandbox_spec()
    started = time.perf_counter()
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    workdir = Path(tempfile.mkdtemp(prefix="nbagent-verify-"))
    if os.geteuid() == 0:
        os.chown(workdir, JAIL_UID, JAIL_UID)  # nbagent's own folder: a jailed kernel writes there
    try:
        problems = _stage_data(stored, folder, data, workdir)
        executed, errors, not_run, environment, stopped = await _execute(
            copy.deepcopy(stored),
            kernel_name,
            workdir,
            _kernel_env(stored, sandbox),
            timeout,
            sandbox,
        )
        workdirs = [str(folder), str(workdir), str(workdir.resolve())]
        checks = _judge(stored, executed, errors, not_run, workdirs, image_tolerance)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    signatures = _check_signatures(stored, checks)
    if stopped:
        problems.append(stopped)
    if not any(c.answer for c in checks):
        problems.append(
            "the notebook has no answer cell (final_answer was never called): nothing to reproduce"
        )
    report = VerifyReport(
        notebook=path,
        kernel=kernel_name,
        cells=checks,
        problems=problems,
        environment=environment,
        recorded_environment=dict(schema.environment(stored)),
        executed=executed,
        duration=time.perf_counter() - started,
        verified_at=when,
        signature=signatures.state,
    )
    if record:
        record_verification(stored, report, path)
    return report


def _check_signatures(nb: NotebookNode, checks: list[CellCheck]) -> SignatureCheck:
    """Mark the cells whose code or answer is not what nbagent wrote (by the keyed digests)."""
    try:
        key = load_key(create=False)
    except OSError:
        key = None  # a damaged key: nothing here can be checked, so "not signed here"
    signatures = check_signatures(nb.cells, key, answer_payload)
    for check in checks:
        what = signatures.changed.get(check.index)
        if what is not None:
            check.status = "code-changed"
            check.error = f"{what} is not what nbagent wrote (changed since the run)"
    return signatures


def record_verification(nb: NotebookNode, report: VerifyReport, path: Path | None = None) -> None:
    """Store ``report`` under ``metadata.nbagent.verification`` (and save ``path`` atomically)."""
    schema.set_notebook_key(nb, "verification", report.to_dict())
    if path is not None:
        nbformat.validate(nb)
        atomic_write_text(path, nbformat.v4.writes_json(nb) + "\n")


def verify_notebook(
    notebook: str | os.PathLike[str] | NotebookNode,
    *,
    data: Iterable[str | os.PathLike[str]] = (),
    kernel: str | None = None,
    timeout: float | None = None,
    record: bool = False,
    image_tolerance: float = DEFAULT_IMAGE_TOLERANCE,
    base_dir: str | os.PathLike[str] | None = None,
    sandbox: Sandbox | None = None,
) -> VerifyReport:
    """Re-run a notebook in a fresh kernel and check that it gives what it recorded.

    Args:
        notebook: a notebook file (or an in-memory notebook).
        data: data files to use instead of those beside the notebook (matched by name); each is
            checked against the SHA-256 recorded at run time.
        kernel: kernel spec to run in; default: nbagent's sandboxed kernel (never the one the
            notebook records: re-running a notebook is running untrusted code).
        timeout: seconds one cell may run; default: twice the step time limit the notebook's runs
            recorded, at least 60 (:func:`cell_timeout`), or 600 if they record none.
        record: store the result under ``metadata.nbagent.verification`` (the file is rewritten
            atomically; only its metadata changes).
        image_tolerance: share of pixels that may change before an image differs.
        base_dir: where the data files are when ``notebook`` is in memory (default: the
            notebook's folder, else the current directory).
        sandbox: the sandbox of a sandboxed kernel spec. Default: the jail, no network, and the
            default limits, or the limits the notebook's runs recorded where they are tighter
            (:func:`rerun_config`): a notebook handed to verify is untrusted code, and never
            loosens a limit or chooses the sandbox level, network or environment.

    Returns:
        a :class:`VerifyReport`; ``report.ok`` says whether the notebook reproduced.
    """
    return run_sync(averify_notebook)(
        notebook,
        data=data,
        kernel=kernel,
        timeout=timeout,
        record=record,
        image_tolerance=image_tolerance,
        base_dir=base_dir,
        sandbox=sandbox,
    )
