"""``nbagent run`` (answer a question in a new notebook) and ``nbagent resume`` (go on with one)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agent.config import AgentConfig, add_setting_arguments, settings
from ..agent.observe import escape_controls
from ..exceptions import UsageError
from ..models.litellm_model import close_http_clients
from ..notebook.safe_files import creation_problem
from .approval import TerminalApproval
from .arguments import check_kernel, check_sandbox, config_from_args
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
    add_setting_arguments(run)
    run.add_argument("--overwrite", action="store_true", help="replace the output notebook if it exists")
    run.add_argument(
        "--approve",
        action="store_true",
        help="before each step runs, ask on the terminal: run it, edit it in $EDITOR, skip it, or stop",
    )
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
        "notebook's metadata, and the run continues in the same notebook. The loop's settings "
        "(steps, step time, observation budget, history, planning, budgets) are the notebook's and its "
        "sandbox limits too where they are tighter, unless given here; the model, kernel, sandbox level, "
        "network, environment and tools are never taken from the notebook.",
    )
    resume.add_argument("notebook", metavar="NOTEBOOK", help="a notebook written by 'nbagent run'")
    resume.add_argument(
        "--workdir",
        metavar="DIR",
        help="the kernel's working directory, holding the run's data files (default: the notebook's folder)",
    )
    add_setting_arguments(resume, help=_resume_help())
    resume.add_argument("-q", "--quiet", action="store_true", help="no step log on stderr, only the answer")
    _add_json_argument(resume)


def _add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the answer and the run's status as one JSON object (tables as "
        '{"columns", "index", "data"}) instead of the answer\'s text',
    )


def _resume_help() -> dict[str, str]:
    """``resume``'s help: what a flag left out takes from the notebook."""
    texts = {
        "model": "model to go on with (default: $NBAGENT_MODEL; never the one the notebook records)",
        "max_steps": "steps for the question, counting those already taken",
    }
    for spec in settings():
        text = texts.get(spec.name, spec.help)
        if spec.from_notebook == "reuse":
            texts[spec.name] = f"{text} (default: the notebook's, else {spec.default_text()})"
        elif spec.from_notebook == "tighten":
            texts[spec.name] = f"{text} (default: the notebook's if tighter, else {spec.default_text()})"
    return texts


def _check_tools(config: AgentConfig) -> None:
    # Said in flags (the Agent's own message names the setting): refused before anything is made.
    if config.tool_sources and not config.trust_tools:
        raise UsageError(
            f"--tool {config.tool_sources[0]} runs that tool's code here and in the kernel; "
            "read its tool.py, then add --trust-tools"
        )


def run_command(args: argparse.Namespace) -> int:
    """``nbagent run``: answer the question, write the notebook, print the answer."""
    from ..agent.agent import Agent, check_data_files, check_notebook_path
    from ..models import LiteLLMModel, resolve_model

    question = _read_question(args.question)
    config, given = config_from_args(args)
    options = config.model_options()
    check_data_files(args.data)
    check_kernel(config.kernel)
    check_sandbox(config.kernel, config.sandbox_spec())  # fail closed before anything is created
    _check_tools(config)
    output = Path(args.output or f"{_slug(question)}.ipynb")
    _check_output_folder(output)
    if output.parent.is_dir():
        check_notebook_path(output, args.overwrite)
    if args.approve:
        TerminalApproval.check_terminal()
    model = resolve_model(config.model, **options.kwargs())
    if isinstance(model, LiteLLMModel):
        model.check()
    agent = Agent(
        model,
        listeners=[] if args.quiet else [StepLog()],
        approve=TerminalApproval() if args.approve else None,
        **_without_model(given),
    )
    # Made only now that every input has been checked: a refused run leaves nothing on disk.
    output.parent.mkdir(parents=True, exist_ok=True)
    check_notebook_path(output, args.overwrite)

    async def go() -> int:
        try:
            result = await agent.arun(question, files=args.data, notebook=output, overwrite=args.overwrite)
        finally:
            await agent.aclose()
            await close_http_clients()
        _print_result(result, args.json)
        if result.answered:
            if args.verify:
                return await _verify_after_run(output, args, agent.config)
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
    from ..models import MODEL_ENV, LiteLLMModel, resolve_model
    from ..notebook import schema
    from ..notebook.reader import read_run_notebook

    config, given = config_from_args(args)
    options = config.model_options()
    check_kernel(config.kernel)
    check_sandbox(config.kernel, config.sandbox_spec())
    _check_tools(config)
    if args.workdir is not None and not Path(args.workdir).is_dir():
        raise UsageError(f"--workdir {args.workdir!r} is not a folder")
    nb = read_run_notebook(args.notebook)
    last_run = schema.runs(nb)[-1]
    spec = config.model or os.environ.get(MODEL_ENV)
    if not spec:
        # The notebook is not trusted to pick the model: a recorded endpoint would receive the
        # user's API key (say, HF_TOKEN for hf:http://...) and drive the run.
        recorded = last_run.get("model") or "none"
        raise UsageError(
            f"say which model to go on with: the notebook records {recorded!r}, which nbagent does "
            f"not use on the notebook's word; pass --model {recorded} (or set ${MODEL_ENV}) if you trust it"
        )
    model = resolve_model(spec, **options.kwargs())
    if isinstance(model, LiteLLMModel):
        model.check()
    # Only the settings given here: the others are the notebook's where it may decide them.
    agent = Agent(model, listeners=[] if args.quiet else [StepLog()], **_without_model(given))
    if not args.quiet:
        recorded_settings = last_run.get("settings")
        if isinstance(recorded_settings, Mapping):
            for line in _settings_report(config, recorded_settings, given):
                print(escape_controls(line), file=sys.stderr)

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


def _without_model(given: Mapping[str, Any]) -> dict[str, Any]:
    # The model is given to Agent as the object made (and checked) here.
    return {name: value for name, value in given.items() if name != "model"}


def _settings_report(config: AgentConfig, recorded: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """What ``resume`` says about the notebook's settings: those it goes on with, and those it
    recorded but a notebook does not decide (or a looser limit), shown so the user can give them."""
    resumed = config.resumed(recorded, given)
    taken, left = [], []
    for spec in settings():
        name = spec.name
        now = getattr(resumed, name)
        if now != getattr(config, name):
            taken.append(f"{name} {spec.value_text(now)}")
        elif name in recorded and name not in given and name != "model":
            try:
                then = spec.check(recorded[name])
            except (UsageError, TypeError, ValueError):  # the notebook is untrusted: any value may be there
                left.append(f"{name} {_shown(recorded[name])} (not valid)")
                continue
            if then != now:
                left.append(f"{name} {spec.value_text(then)}")
    lines = []
    if taken:
        lines.append(f"nbagent resume: the notebook's settings: {', '.join(taken)}")
    if left:
        lines.append(
            f"nbagent resume: the notebook's run also had {', '.join(left)}; not taken from a notebook "
            "(give them as flags if you trust it)"
        )
    return lines


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


async def _verify_after_run(notebook: Path, args: argparse.Namespace, config: AgentConfig) -> int:
    from ..repro.verify import averify_notebook, cell_timeout

    # The run's own kernel, sandbox and step time (the user's flags, as the run used them).
    report = await averify_notebook(
        notebook,
        kernel=config.kernel,
        timeout=cell_timeout(config.timeout),
        record=True,
        sandbox=config.sandbox_spec(),
    )
    if not args.quiet or not report.ok:
        print(escape_controls(report.summary(all_cells=not args.quiet)), file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_NO_ANSWER
