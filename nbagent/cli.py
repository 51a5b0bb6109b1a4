"""The ``nbagent`` command. It parses arguments and reports; the agent logic lives in Agent.

Exit codes: 0 the question was answered; 1 the run ended without an answer (step limit, model or
kernel failure, a kernel that kept dying); 2 bad input (the message says which input and what to
do); 130 interrupted.
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

from ._version import __version__
from .agent import RunListener, RunResult
from .exceptions import NbagentError, UsageError
from .kernel import DEFAULT_KERNEL
from .memory import Step, Task
from .sandbox import DEFAULT_CPU_TIME, DEFAULT_FILE_SIZE, DEFAULT_MEMORY, Sandbox, format_size, parse_size

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
    run.add_argument("--overwrite", action="store_true", help="replace the output notebook if it exists")
    run.add_argument("-q", "--quiet", action="store_true", help="no step log on stderr, only the answer")

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
    resume.add_argument("-q", "--quiet", action="store_true", help="no step log on stderr, only the answer")

    sub.add_parser("kernels", help="list the kernels nbagent can run code in")
    return parser


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

    listeners = [] if args.quiet else [StepLog()]
    agent = Agent(
        model,
        max_steps=args.max_steps,
        timeout=args.timeout,
        kernel=args.kernel,
        listeners=listeners,
        sandbox=sandbox_from_args(args),
        max_restarts=args.max_restarts,
    )

    async def go() -> int:
        try:
            result = await agent.arun(question, files=args.data, notebook=output, overwrite=args.overwrite)
        finally:
            await agent.aclose()
        if result.answered:
            print(result.answer_text)
            return EXIT_OK
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
    commands = {"run": _cmd_run, "resume": _cmd_resume, "kernels": _cmd_kernels}
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
