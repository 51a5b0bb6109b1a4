"""The ``nbagent`` command. It parses arguments and reports; the agent logic lives in Agent.

Exit codes: 0 the question was answered; 1 the run ended without an answer (step limit, model or
kernel failure, a kernel that kept dying); 2 bad input (the message says which input and what to
do); 130 interrupted. ``verify`` (and ``run --verify``, ``export --tidy``) exit 1 when the notebook
does not reproduce.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from nbformat import NotebookNode

from ._version import __version__
from .agent import RunListener, RunResult
from .exceptions import NbagentError, UsageError
from .kernel import DEFAULT_KERNEL
from .memory import Plan, Step, Task
from .observe import Observer
from .sandbox import DEFAULT_CPU_TIME, DEFAULT_FILE_SIZE, DEFAULT_MEMORY, Sandbox, format_size, parse_size
from .tools import Tool

EXIT_OK, EXIT_NO_ANSWER, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class StepLog(RunListener):
    """A live, readable log of a run on a text stream (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, max_lines: int = 12) -> None:
        self.stream = stream or sys.stderr
        self.max_lines = max_lines
        self.width = min(shutil.get_terminal_size((100, 20)).columns, 100)

    def _print(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def _clip(self, text: str, prefix: str) -> str:
        lines = text.rstrip("\n").splitlines() or [""]
        if len(lines) > self.max_lines:
            lines = [
                *lines[: self.max_lines - 1],
                f"… ({len(lines) - self.max_lines + 1} more lines)",
            ]
        return "\n".join(prefix + line for line in lines)

    def task_started(self, task: Task, notebook_path: Path | None) -> None:
        where = f" → {notebook_path}" if notebook_path else ""
        self._print(f"nbagent {__version__}: {task.question}{where}")
        if task.files:
            self._print(f"data: {', '.join(task.files)}")

    def reply_received(self, number: int, thought: str, code: str | None) -> None:
        rule = f"── step {number} "
        self._print(rule + "─" * max(self.width - len(rule), 3))
        if thought:
            self._print(textwrap.fill(thought, self.width, initial_indent="", subsequent_indent=""))
        if code is not None:
            self._print(self._clip(code, "  │ "))

    def step_finished(self, step: Step) -> None:
        execution = step.execution
        status = "no code" if execution is None else execution.status
        took = "" if execution is None else f" in {execution.duration:.2f} s"
        self._print(self._clip(step.observation.text, "  ▸ "))
        self._print(
            f"  [{status}{took}; model {step.model_duration:.2f} s, {step.usage.total_tokens} tokens]"
        )

    def plan_made(self, plan: Plan) -> None:
        rule = "── plan " if plan.kind == "initial" else "── updated plan "
        self._print(rule + "─" * max(self.width - len(rule), 3))
        self._print(self._clip(plan.text, "  "))

    def run_finished(self, result: RunResult) -> None:
        self._print("─" * self.width)
        tokens = result.usage.total_tokens
        cost = f", ${result.usage.cost:.4f}" if result.usage.cost else ""
        where = f"; notebook: {result.notebook_path}" if result.notebook_path else ""
        self._print(
            f"{result.status} after {len(result.steps)} steps, {result.duration:.1f} s, "
            f"{tokens} tokens{cost}{where}"
        )
        if result.error:
            self._print(f"error: {result.error}")


def _slug(question: str) -> str:
    words = re.findall(r"[a-z0-9]+", question.lower())[:6]
    return "-".join(words) or "nbagent-run"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbagent",
        description="A code-first agent: every step is a cell in a real IPython kernel, "
        "and every run is a notebook that re-runs.",
    )
    parser.add_argument("--version", action="version", version=f"nbagent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="answer a question with a notebook",
        description="Answer QUESTION by running code in a kernel; the whole run is saved as a notebook.",
    )
    run.add_argument("question", help="the question; '-' reads it from standard input")
    run.add_argument(
        "-d",
        "--data",
        action="append",
        default=[],
        metavar="FILE",
        help="a data file to work on (repeatable); copied into the notebook's folder",
    )
    run.add_argument(
        "-o",
        "--output",
        metavar="NOTEBOOK",
        help="where to write the notebook (default: a name made from the question)",
    )
    run.add_argument(
        "-m",
        "--model",
        help="litellm model string, 'hf:MODEL_ID' or 'scripted:FILE.json' (default: $NBAGENT_MODEL)",
    )
    run.add_argument("--api-base", metavar="URL", help="base URL of an OpenAI-compatible server or endpoint")
    run.add_argument(
        "--max-steps",
        type=int,
        default=10,
        metavar="N",
        help="steps before a final answer is demanded (default 10)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="time limit of one step (default 60)",
    )
    run.add_argument(
        "--kernel",
        default=DEFAULT_KERNEL,
        metavar="NAME",
        help=f"kernel spec to run the code in (default: {DEFAULT_KERNEL}; 'nbagent kernels' lists them)",
    )
    add_sandbox_arguments(run)
    budget = run.add_mutually_exclusive_group()
    budget.add_argument(
        "--observation-chars",
        type=int,
        metavar="N",
        help="budget of what the model is shown after each step, in characters (default 6000)",
    )
    budget.add_argument(
        "--observation-tokens",
        type=int,
        metavar="N",
        help="the same budget in (estimated) tokens instead of characters",
    )
    run.add_argument(
        "--vision",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send figures to the model as images (default: if litellm says the model takes images)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace the output notebook if it exists")
    _add_tool_arguments(run)
    run.add_argument("-q", "--quiet", action="store_true", help="no step log on stderr, only the answer")
    run.add_argument(
        "--verify",
        action="store_true",
        help="re-run the finished notebook in a fresh kernel, compare, and record the result in it",
    )

    resume = sub.add_parser(
        "resume",
        help="go on with a run that stopped (a crash, a kill, a step limit)",
        description="Go on with the last question of NOTEBOOK: the kernel's state is restored by "
        "re-running the notebook's successful cells, the model's memory is rebuilt from the "
        "notebook's metadata, and the run continues in the same notebook.",
    )
    resume.add_argument("notebook", metavar="NOTEBOOK", help="a notebook written by 'nbagent run'")
    resume.add_argument(
        "-m",
        "--model",
        help="model to go on with (default: $NBAGENT_MODEL, else the model the notebook records)",
    )
    resume.add_argument("--api-base", metavar="URL", help="base URL of an OpenAI-compatible server")
    resume.add_argument(
        "--max-steps",
        type=int,
        default=10,
        metavar="N",
        help="steps for the question, counting those already taken (default 10)",
    )
    resume.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="time limit of one step (default 60)"
    )
    resume.add_argument(
        "--kernel", default=DEFAULT_KERNEL, metavar="NAME", help=f"kernel spec (default: {DEFAULT_KERNEL})"
    )
    resume.add_argument(
        "--workdir",
        metavar="DIR",
        help="the kernel's working directory, holding the run's data files (default: the notebook's folder)",
    )
    add_sandbox_arguments(resume)
    _add_tool_arguments(resume)
    resume.add_argument("-q", "--quiet", action="store_true", help="no step log on stderr, only the answer")

    sub.add_parser("kernels", help="list the kernels nbagent can run code in")
    _add_verify_parser(sub)
    _add_export_parser(sub)
    _add_batch_parser(sub)
    return parser


def _add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="SOURCE",
        help="a saved tool: a folder or a Hugging Face Hub repo id (repeatable; needs --trust-tools)",
    )
    parser.add_argument(
        "--trust-tools",
        action="store_true",
        help="allow loading the --tool tools: their code runs here and in the kernel",
    )
    parser.add_argument("--web-search", action="store_true", help="add the web_search tool (needs network)")
    parser.add_argument(
        "--no-default-tools",
        action="store_true",
        help="leave out list_files, read_file and inspect_data",
    )
    parser.add_argument(
        "--planning-interval",
        type=int,
        metavar="N",
        help="plan before the first step and every N steps (default: no planning)",
    )


def _size(text: str) -> int:
    try:
        return parse_size(text) or 0
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds cannot be negative")
    return value


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's flags (limits, network, environment allow-list) to a command."""
    group = parser.add_argument_group(
        "sandbox", "limits of the sandboxed kernel (nbagent-sandbox); other kernels ignore them"
    )
    group.add_argument(
        "--memory-limit",
        type=_size,
        default=DEFAULT_MEMORY,
        metavar="SIZE",
        help=f"address-space limit, e.g. 2G or 512M; 0 for none (default {format_size(DEFAULT_MEMORY)})",
    )
    group.add_argument(
        "--cpu-limit",
        type=_seconds,
        default=DEFAULT_CPU_TIME,
        metavar="SECONDS",
        help=f"CPU seconds the kernel may use in all; 0 for none (default {DEFAULT_CPU_TIME})",
    )
    group.add_argument(
        "--file-size-limit",
        type=_size,
        default=DEFAULT_FILE_SIZE,
        metavar="SIZE",
        help=f"largest file the kernel may write; 0 for none (default {format_size(DEFAULT_FILE_SIZE)})",
    )
    group.add_argument(
        "--allow-network", action="store_true", help="let the kernel use the network (default: none)"
    )
    group.add_argument(
        "--allow-env",
        action="append",
        default=[],
        metavar="NAME",
        help="pass this secret-looking environment variable to the kernel anyway (repeatable)",
    )
    group.add_argument(
        "--max-restarts",
        type=int,
        default=3,
        metavar="N",
        help="kernel restarts (deaths, ignored interrupts) a run survives (default 3)",
    )


def sandbox_from_args(args: argparse.Namespace) -> Sandbox:
    """The :class:`~nbagent.Sandbox` the flags of :func:`add_sandbox_arguments` describe."""
    if args.max_restarts < 0:
        raise UsageError(f"--max-restarts cannot be negative ({args.max_restarts})")
    return Sandbox(
        memory=args.memory_limit or None,
        cpu_time=args.cpu_limit or None,
        file_size=args.file_size_limit or None,
        network=args.allow_network,
        allow_env=tuple(args.allow_env),
    )


def _add_verify_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = sub.add_parser(
        "verify",
        help="re-run a notebook in a fresh kernel and check it gives the same results",
        description="Re-run NOTEBOOK in a fresh kernel and compare every cell's outputs with the stored "
        "ones (after normalising addresses, timings, ids; images by content). Exit 0 when the answer and "
        "every cell reproduce, 1 otherwise.",
    )
    verify.add_argument("notebook", metavar="NOTEBOOK", help="the notebook to verify")
    verify.add_argument(
        "-d",
        "--data",
        action="append",
        default=[],
        metavar="FILE",
        help="a data file to use instead of the one beside the notebook (repeatable; matched by name)",
    )
    verify.add_argument(
        "--kernel", metavar="NAME", help="kernel spec to run in (default: the run's, else nbagent)"
    )
    verify.add_argument(
        "--timeout", type=float, default=600.0, metavar="SECONDS", help="time limit of one cell (default 600)"
    )
    verify.add_argument(
        "--record",
        action="store_true",
        help="store the result in the notebook's metadata (nbagent.verification)",
    )
    verify.add_argument(
        "-q", "--quiet", action="store_true", help="list only the cells that did not reproduce"
    )


def _add_export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = sub.add_parser(
        "export",
        help="write a tidy notebook (--tidy) or an HTML report (--html) of a run",
        description="--tidy: the same analysis without failed cells and cells whose results nothing later "
        "uses; it is verified before it is written. --html: a standalone HTML report, figures embedded. "
        "Both: an HTML report of the tidy notebook.",
    )
    export.add_argument("notebook", metavar="NOTEBOOK", help="the notebook a run wrote")
    export.add_argument("--tidy", action="store_true", help="drop the dead ends (writes a notebook)")
    export.add_argument("--html", action="store_true", help="write an HTML report")
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write (default: NOTEBOOK's name with .tidy.ipynb, .html or .tidy.html)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    export.add_argument(
        "-d",
        "--data",
        action="append",
        default=[],
        metavar="FILE",
        help="with --tidy: a data file to verify with instead of the one beside the notebook (repeatable)",
    )
    export.add_argument("--kernel", metavar="NAME", help="with --tidy: kernel spec to verify in")
    export.add_argument(
        "--timeout", type=float, default=600.0, metavar="SECONDS", help="with --tidy: time limit of one cell"
    )
    export.add_argument(
        "--no-verify", action="store_true", help="with --tidy: write the tidy notebook without verifying it"
    )


def _add_batch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .kernel import DEFAULT_KERNEL

    batch = sub.add_parser(
        "batch",
        help="run many tasks from a JSONL/YAML file, one notebook each",
        description="Run every task of TASKS (a .jsonl or .yaml file), each in its own kernel, "
        "writing OUT/<id>/<id>.ipynb and one line per finished task to OUT/status.jsonl. "
        "Exit codes: 0 every task ok, 1 some task not ok, 2 bad input, 130 interrupted.",
    )
    batch.add_argument("tasks", metavar="TASKS", help="task file: .jsonl (one JSON object a line) or .yaml")
    batch.add_argument(
        "-o", "--out", default="runs", metavar="DIR", help="folder for notebooks and status.jsonl"
    )
    batch.add_argument(
        "-j", "--jobs", type=int, metavar="N", help="tasks run at once, and kernels kept warm (default 1)"
    )
    batch.add_argument("-m", "--model", help="model for tasks that name none (default: $NBAGENT_MODEL)")
    batch.add_argument(
        "--api-base", metavar="URL", help="base URL of an OpenAI-compatible server or endpoint"
    )
    batch.add_argument(
        "--max-steps", type=int, default=10, metavar="N", help="step limit of a task (default 10)"
    )
    batch.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="time limit of one step (default 60)"
    )
    batch.add_argument(
        "--task-timeout", type=float, metavar="SECONDS", help="time limit of a whole task (default: none)"
    )
    batch.add_argument("--kernel", default=DEFAULT_KERNEL, metavar="NAME", help="kernel spec to run code in")
    batch.add_argument(
        "--no-fork",
        action="store_true",
        help="start every kernel as a fresh process instead of forking it from a pre-imported one",
    )
    batch.add_argument(
        "--resume",
        action="store_true",
        help="finish an earlier batch in OUT: run only tasks without a status",
    )
    batch.add_argument(
        "--cluster", metavar="ADDRESS", help="Dask scheduler address (tcp://host:8786); needs nbagent[dask]"
    )
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr, only the summary")


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import BatchSettings, run_batch
    from .batch_report import progress_for, summary
    from .kernel import available_kernels
    from .tasks import load_tasks

    if args.cluster is not None:
        if args.jobs is not None:
            raise UsageError(
                "--jobs sets local concurrency; with --cluster each worker runs as many tasks as it has "
                "threads (dask worker --nthreads N)"
            )
        from .cluster import import_distributed

        import_distributed()
    elif args.kernel not in available_kernels():
        raise UsageError(
            f"unknown kernel {args.kernel!r}; available kernels: {', '.join(available_kernels())}"
        )
    tasks = load_tasks(args.tasks)
    settings = BatchSettings(
        out=Path(args.out),
        model=args.model,
        api_base=args.api_base,
        max_steps=args.max_steps,
        timeout=args.timeout,
        task_timeout=args.task_timeout,
        kernel=args.kernel,
        jobs=args.jobs if args.jobs is not None else 1,
        fork=not args.no_fork,
    )
    outcome = asyncio.run(
        run_batch(
            tasks,
            settings,
            resume=args.resume,
            cluster=args.cluster,
            listener=progress_for(sys.stderr, quiet=args.quiet),
        )
    )
    print(summary(outcome, tasks, args.out))
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.all_ok else EXIT_NO_ANSWER


def _read_question(arg: str) -> str:
    question = sys.stdin.read() if arg == "-" else arg
    if not question.strip():
        raise UsageError("the question is empty: pass it as an argument, or '-' to read it from stdin")
    return question.strip()


def _cmd_run(args: argparse.Namespace) -> int:
    from .agent import Agent, check_data_files, check_notebook_path
    from .kernel import available_kernels
    from .models import LiteLLMModel, resolve_model

    question = _read_question(args.question)
    if args.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, not {args.max_steps}")
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    observer = _observer(args)
    check_data_files(args.data)
    output = Path(args.output or f"{_slug(question)}.ipynb")
    output.parent.mkdir(parents=True, exist_ok=True)
    check_notebook_path(output, args.overwrite)
    if args.kernel not in available_kernels():
        raise UsageError(
            f"unknown kernel {args.kernel!r}; available kernels: {', '.join(available_kernels())}"
        )
    model_kwargs = {"api_base": args.api_base} if args.api_base else {}
    model = resolve_model(args.model, **model_kwargs)
    if isinstance(model, LiteLLMModel):
        model.check()
    if args.vision is not None:
        model.supports_images = args.vision  # an explicit choice wins over asking litellm

    tools = _load_tools(args)
    listeners = [] if args.quiet else [StepLog()]
    agent = Agent(
        model,
        max_steps=args.max_steps,
        timeout=args.timeout,
        kernel=args.kernel,
        observer=observer,
        listeners=listeners,
        sandbox=sandbox_from_args(args),
        max_restarts=args.max_restarts,
        tools=tools,
        default_tools=not args.no_default_tools,
        planning_interval=args.planning_interval,
    )

    async def go() -> int:
        try:
            result = await agent.arun(question, files=args.data, notebook=output, overwrite=args.overwrite)
        finally:
            await agent.aclose()
        if result.answered:
            print(result.answer_text)
            if args.verify:
                return await _verify_after_run(output, args)
            return EXIT_OK
        if args.verify:
            print("nbagent run: not verified: the run gave no answer to reproduce", file=sys.stderr)
        return EXIT_NO_ANSWER

    return asyncio.run(go())


def _cmd_resume(args: argparse.Namespace) -> int:
    from .agent import Agent
    from .kernel import available_kernels
    from .models import MODEL_ENV, LiteLLMModel, resolve_model
    from .restore import read_notebook

    if args.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, not {args.max_steps}")
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    if args.kernel not in available_kernels():
        raise UsageError(
            f"unknown kernel {args.kernel!r}; available kernels: {', '.join(available_kernels())}"
        )
    if args.workdir is not None and not Path(args.workdir).is_dir():
        raise UsageError(f"--workdir {args.workdir!r} is not a folder")
    nb = read_notebook(args.notebook)
    spec = args.model or os.environ.get(MODEL_ENV) or nb.metadata["nbagent"]["runs"][-1].get("model")
    model_kwargs = {"api_base": args.api_base} if args.api_base else {}
    try:
        model = resolve_model(spec, **model_kwargs)
    except UsageError as exc:
        if args.model:
            raise
        raise UsageError(f"{exc} (the model the notebook records); pass --model") from None
    if isinstance(model, LiteLLMModel):
        model.check()
    agent = Agent(
        model,
        max_steps=args.max_steps,
        timeout=args.timeout,
        kernel=args.kernel,
        listeners=[] if args.quiet else [StepLog()],
        sandbox=sandbox_from_args(args),
        max_restarts=args.max_restarts,
        tools=_load_tools(args),
        default_tools=not args.no_default_tools,
        planning_interval=args.planning_interval,
    )

    async def go() -> int:
        try:
            result = await agent.aresume(args.notebook, workdir=args.workdir)
        finally:
            await agent.aclose()
        if result.answered:
            print(result.answer_text)
            return EXIT_OK
        return EXIT_NO_ANSWER

    return asyncio.run(go())


def _observer(args: argparse.Namespace) -> Observer:
    if args.observation_chars is not None:
        if args.observation_chars < 200:
            raise UsageError(f"--observation-chars must be at least 200, not {args.observation_chars}")
        return Observer(max_chars=args.observation_chars)
    if args.observation_tokens is not None:
        if args.observation_tokens < 50:
            raise UsageError(f"--observation-tokens must be at least 50, not {args.observation_tokens}")
        return Observer(max_tokens=args.observation_tokens)
    return Observer()


async def _verify_after_run(notebook: Path, args: argparse.Namespace) -> int:
    from .verify import averify_notebook

    report = await averify_notebook(
        notebook, kernel=args.kernel, timeout=max(2 * args.timeout, 60.0), record=True
    )
    if not args.quiet or not report.ok:
        print(report.summary(all_cells=not args.quiet), file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_NO_ANSWER


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify_notebook

    report = verify_notebook(
        args.notebook, data=args.data, kernel=args.kernel, timeout=args.timeout, record=args.record
    )
    print(report.summary(all_cells=not args.quiet))
    if args.record:
        print(f"recorded in {args.notebook} (metadata.nbagent.verification)", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_NO_ANSWER


def _cmd_export(args: argparse.Namespace) -> int:
    from .exceptions import NotReproducedError
    from .export import export_html, export_tidy

    if not args.tidy and not args.html:
        raise UsageError("say what to export: --tidy (a notebook), --html (a report), or both")
    if not args.tidy and (args.data or args.kernel or args.no_verify):
        raise UsageError("--data, --kernel and --no-verify apply to --tidy only")
    source = Path(args.notebook)
    suffix = {(True, False): ".tidy.ipynb", (False, True): ".html", (True, True): ".tidy.html"}
    output = (
        Path(args.output) if args.output else source.with_name(source.stem + suffix[args.tidy, args.html])
    )
    if not args.html:
        try:
            result = export_tidy(
                source,
                output,
                data=args.data,
                kernel=args.kernel,
                verify=not args.no_verify,
                overwrite=args.overwrite,
                timeout=args.timeout,
            )
        except NotReproducedError as exc:
            print(exc.report.summary(all_cells=False), file=sys.stderr)
            raise
        kept = ", ".join(map(str, sorted(set(result.kept_steps)))) or "none"
        print(
            f"{output}: {result.cells_after} cells (was {result.cells_before}); steps kept: {kept}; "
            f"left out: {'; '.join(d.describe() for d in result.dropped) or 'nothing'}"
            + ("; verified" if result.verification else "; not verified")
        )
        return EXIT_OK
    notebook: Path | NotebookNode = source
    if args.tidy:
        from .export import check_output_path

        check_output_path(output, source, args.overwrite)  # fail before the slow verification
        try:
            result = export_tidy(
                source,
                None,
                data=args.data,
                kernel=args.kernel,
                verify=not args.no_verify,
                timeout=args.timeout,
            )
        except NotReproducedError as exc:
            print(exc.report.summary(all_cells=False), file=sys.stderr)
            raise
        notebook = result.notebook
    written = export_html(notebook, output, overwrite=args.overwrite)
    print(f"{written}: HTML report")
    return EXIT_OK


def _load_tools(args: argparse.Namespace) -> list[Tool]:
    from .default_tools import WebSearchTool
    from .tool_sharing import load_tool

    if args.tool and not args.trust_tools:
        raise UsageError(
            f"--tool {args.tool[0]} runs that tool's code here and in the kernel; "
            "read its tool.py, then add --trust-tools"
        )
    tools: list[Tool] = [load_tool(source, trust_remote_code=True) for source in args.tool]
    if args.web_search:
        tools.append(WebSearchTool())
    return tools


def _cmd_kernels(args: argparse.Namespace) -> int:
    from .kernel import available_kernels, kernel_spec_manager

    ksm = kernel_spec_manager()
    for name in available_kernels():
        spec = ksm.get_kernel_spec(name)
        print(f"{name:20} {spec.display_name}  ({spec.resource_dir})")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbagent`` command; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    commands = {
        "run": _cmd_run,
        "resume": _cmd_resume,
        "kernels": _cmd_kernels,
        "verify": _cmd_verify,
        "export": _cmd_export,
        "batch": _cmd_batch,
    }
    try:
        return commands[args.command](args)
    except UsageError as exc:
        print(f"nbagent {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NbagentError as exc:
        print(f"nbagent {args.command}: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except KeyboardInterrupt:
        print(f"nbagent {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
