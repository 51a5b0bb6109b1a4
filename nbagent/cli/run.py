"""``nbagent run`` (answer a question in a new notebook) and ``nbagent resume`` (go on with one)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..agent.observe import Observer, escape_controls
from ..exceptions import UsageError
from ..models.litellm_model import close_http_clients
from ..notebook.safe_files import creation_problem
from .approval import TerminalApproval
from .arguments import (
    add_agent_arguments,
    add_budget_arguments,
    add_sandbox_arguments,
    add_tool_arguments,
    budget_from_args,
    check_kernel,
    check_sandbox,
    check_step_limits,
    load_tools,
    model_options,
    sandbox_from_args,
)
from .exit_codes import EXIT_NO_ANSWER, EXIT_OK
from .steplog import StepLog

if TYPE_CHECKING:
    from ..agent.agent import RunResult


def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` command."""
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
    add_agent_arguments(
        run,
        model_help="litellm model string, 'hf:MODEL_ID' or 'scripted:FILE.json' (default: $NBAGENT_MODEL)",
        max_steps_help="steps before a final answer is demanded",
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
    add_budget_arguments(run)
    run.add_argument(
        "--approve",
        action="store_true",
        help="before each step runs, ask on the terminal: run it, edit it in $EDITOR, skip it, or stop",
    )
    add_tool_arguments(run)
    run.add_argument("-q", "--quiet", action="store_true", help="no step log on stderr, only the answer")
    _add_json_argument(run)
    run.add_argument(
        "--verify",
        action="store_true",
        help="re-run the finished notebook in a fresh kernel, compare, and record the result in it",
    )


def add_resume_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``resume`` command."""
    resume = sub.add_parser(
        "resume",
        help="go on with a run that stopped (a crash, a kill, a step limit)",
        description="Go on with the last question of NOTEBOOK: the kernel's state is restored by "
        "re-running the notebook's successful cells, the model's memory is rebuilt from the "
        "notebook's metadata, and the run continues in the same notebook.",
    )
    resume.add_argument("notebook", metavar="NOTEBOOK", help="a notebook written by 'nbagent run'")
    add_agent_arguments(
        resume,
        model_help="model to go on with (default: $NBAGENT_MODEL; never the one the notebook records)",
        max_steps_help="steps for the question, counting those already taken",
    )
    resume.add_argument(
        "--workdir",
        metavar="DIR",
        help="the kernel's working directory, holding the run's data files (default: the notebook's folder)",
    )
    add_sandbox_arguments(resume)
    add_budget_arguments(resume)
    add_tool_arguments(resume)
    resume.add_argument("-q", "--quiet", action="store_true", help="no step log on stderr, only the answer")
    _add_json_argument(resume)


def _add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the answer and the run's status as one JSON object (tables as "
        '{"columns", "index", "data"}) instead of the answer\'s text',
    )


def run_command(args: argparse.Namespace) -> int:
    """``nbagent run``: answer the question, write the notebook, print the answer."""
    from ..agent.agent import Agent, check_data_files, check_notebook_path
    from ..models import LiteLLMModel, resolve_model

    question = _read_question(args.question)
    check_step_limits(args)
    options = model_options(args)
    observer = _observer(args)
    check_data_files(args.data)
    check_kernel(args.kernel)
    sandbox = sandbox_from_args(args)
    check_sandbox(args.kernel, sandbox)  # fail closed before anything is created
    output = Path(args.output or f"{_slug(question)}.ipynb")
    _check_output_folder(output)
    if output.parent.is_dir():
        check_notebook_path(output, args.overwrite)
    max_total_tokens, max_cost = budget_from_args(args)
    if args.approve:
        TerminalApproval.check_terminal()
    model = resolve_model(args.model, **options.kwargs())
    if isinstance(model, LiteLLMModel):
        model.check()
    if args.vision is not None:
        model.supports_images = args.vision  # an explicit choice wins over asking litellm

    tools = load_tools(args)
    # Made only now that every input has been checked: a refused run leaves nothing on disk.
    output.parent.mkdir(parents=True, exist_ok=True)
    check_notebook_path(output, args.overwrite)
    listeners = [] if args.quiet else [StepLog()]
    agent = Agent(
        model,
        max_steps=args.max_steps,
        timeout=args.timeout,
        kernel=args.kernel,
        observer=observer,
        listeners=listeners,
        sandbox=sandbox,
        max_restarts=args.max_restarts,
        tools=tools,
        default_tools=not args.no_default_tools,
        planning_interval=args.planning_interval,
        approve=TerminalApproval() if args.approve else None,
        max_total_tokens=max_total_tokens,
        max_cost=max_cost,
    )

    async def go() -> int:
        try:
            result = await agent.arun(question, files=args.data, notebook=output, overwrite=args.overwrite)
        finally:
            await agent.aclose()
            await close_http_clients()
        _print_result(result, args.json)
        if result.answered:
            if args.verify:
                return await _verify_after_run(output, args)
            return EXIT_OK
        if args.quiet and result.error:
            # No step log said it; the error may quote a server or the kernel, so it is escaped.
            print(escape_controls(f"nbagent run: {result.status}: {result.error}"), file=sys.stderr)
        if args.verify:
            print("nbagent run: not verified: the run gave no answer to reproduce", file=sys.stderr)
        return EXIT_NO_ANSWER

    return asyncio.run(go())


def resume_command(args: argparse.Namespace) -> int:
    """``nbagent resume``: restore the notebook's run and go on with its last question."""
    from ..agent.agent import Agent
    from ..agent.restore import read_notebook
    from ..models import MODEL_ENV, LiteLLMModel, resolve_model

    check_step_limits(args)
    options = model_options(args)
    check_kernel(args.kernel)
    max_total_tokens, max_cost = budget_from_args(args)
    sandbox = sandbox_from_args(args)
    check_sandbox(args.kernel, sandbox)
    if args.workdir is not None and not Path(args.workdir).is_dir():
        raise UsageError(f"--workdir {args.workdir!r} is not a folder")
    nb = read_notebook(args.notebook)
    spec = args.model or os.environ.get(MODEL_ENV)
    if not spec:
        # The notebook is not trusted to pick the model: a recorded endpoint would receive the
        # user's API key (say, HF_TOKEN for hf:http://...) and drive the run.
        recorded = nb.metadata["nbagent"]["runs"][-1].get("model") or "none"
        raise UsageError(
            f"say which model to go on with: the notebook records {recorded!r}, which nbagent does "
            f"not use on the notebook's word; pass --model {recorded} (or set ${MODEL_ENV}) if you trust it"
        )
    model = resolve_model(spec, **options.kwargs())
    if isinstance(model, LiteLLMModel):
        model.check()
    agent = Agent(
        model,
        max_steps=args.max_steps,
        timeout=args.timeout,
        kernel=args.kernel,
        listeners=[] if args.quiet else [StepLog()],
        sandbox=sandbox,
        max_restarts=args.max_restarts,
        tools=load_tools(args),
        default_tools=not args.no_default_tools,
        planning_interval=args.planning_interval,
        max_total_tokens=max_total_tokens,
        max_cost=max_cost,
    )

    async def go() -> int:
        try:
            result = await agent.aresume(args.notebook, workdir=args.workdir)
        finally:
            await agent.aclose()
            await close_http_clients()
        _print_result(result, args.json)
        if result.answered:
            return EXIT_OK
        if args.quiet and result.error:
            print(escape_controls(f"nbagent resume: {result.status}: {result.error}"), file=sys.stderr)
        return EXIT_NO_ANSWER

    return asyncio.run(go())


def _check_output_folder(output: Path) -> None:
    """Refuse an ``-o`` whose folders could not be made, without making any of them."""
    problem = creation_problem(output.parent)
    if problem is not None:
        raise UsageError(f"cannot write output {str(output)!r}: {problem}; choose a writable folder")


def _print_result(result: RunResult, as_json: bool) -> None:
    """The answer on stdout: its readable text, or with ``as_json`` one JSON object."""
    from ..agent.answers import json_friendly

    if as_json:
        record = {
            "status": result.status,
            "answer": json_friendly(result.answer) if result.answered else None,
            "answer_text": result.answer_text,
            "answer_note": result.answer_note,
            "notebook": None if result.notebook_path is None else str(result.notebook_path),
            "steps": len(result.steps),
            "error": result.error,
        }
        # ASCII only: every control character the model's code put in the answer stays escaped.
        print(json.dumps(record, ensure_ascii=True, allow_nan=False))
        return
    if result.answered:
        print(escape_controls(result.answer_text or ""))
    if result.answer_note:
        print(f"nbagent: note: {escape_controls(result.answer_note)}", file=sys.stderr)


def _read_question(arg: str) -> str:
    question = sys.stdin.read() if arg == "-" else arg
    if not question.strip():
        raise UsageError("the question is empty: pass it as an argument, or '-' to read it from stdin")
    return question.strip()


def _slug(question: str) -> str:
    words = re.findall(r"[a-z0-9]+", question.lower())[:6]
    return "-".join(words) or "nbagent-run"


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
    from ..repro.verify import averify_notebook

    report = await averify_notebook(
        notebook,
        kernel=args.kernel,
        timeout=max(2 * args.timeout, 60.0),
        record=True,
        sandbox=sandbox_from_args(args),
    )
    if not args.quiet or not report.ok:
        print(escape_controls(report.summary(all_cells=not args.quiet)), file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_NO_ANSWER
