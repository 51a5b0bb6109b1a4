"""The ``nbagent`` command. It parses arguments and reports; the agent logic lives in Agent.

Exit codes: 0 the question was answered; 1 the run ended without an answer (step limit, model or
kernel failure, a kernel that kept dying); 2 bad input (the message says which input and what to
do); 130 interrupted. ``verify`` (and ``run --verify``, ``export --tidy``) exit 1 when the notebook
does not reproduce.

This module assembles the parser and turns errors into exit codes; each command has its own module
(``run`` holds run and resume); the flags that are settings come from :mod:`nbagent.agent.config`,
and the checks several commands share are in ``arguments``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .._version import __version__
from ..agent.observe import escape_controls
from ..exceptions import NbagentError, UsageError
from .batch import add_batch_parser, batch_command
from .exit_codes import EXIT_INTERRUPTED, EXIT_NO_ANSWER, EXIT_OK, EXIT_USAGE
from .export import add_export_parser, export_command
from .kernels import add_kernels_parser, kernels_command
from .mcp import add_mcp_parser, mcp_command
from .run import add_resume_parser, add_run_parser, resume_command, run_command
from .steplog import StepLog
from .verify import add_verify_parser, verify_command

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NO_ANSWER",
    "EXIT_OK",
    "EXIT_USAGE",
    "StepLog",
    "main",
]

# Every command: how to add its parser, and the function that runs it (in the order --help lists them).
_COMMANDS: dict[
    str,
    tuple[
        Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None],
        Callable[[argparse.Namespace], int],
    ],
] = {
    "run": (add_run_parser, run_command),
    "resume": (add_resume_parser, resume_command),
    "kernels": (add_kernels_parser, kernels_command),
    "verify": (add_verify_parser, verify_command),
    "export": (add_export_parser, export_command),
    "batch": (add_batch_parser, batch_command),
    "mcp": (add_mcp_parser, mcp_command),
}


class _Parser(argparse.ArgumentParser):
    """argparse with nbagent's error line: one line, ``nbagent run: error: ...``, exit 2.

    A flag's wrong value reads as the sentence the setting wrote (``--max-steps must be ...``),
    not ``argument --max-steps: --max-steps must be ...``; the usage is left to ``--help``. Flags
    are not abbreviated: ``--max-step`` is a mistake (did you mean ``--max-steps``?), and a new flag
    never changes what an old abbreviation meant.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        found = re.fullmatch(r"argument (\S+): (.*)", message, re.S)
        if found and any(found.group(2).startswith(n) for n in found.group(1).split("/")):
            message = found.group(2)
        elif "did you mean" not in message:
            message += f"; see {self.prog} --help"
        self.exit(2, escape_controls(f"{self.prog}: error: {message}") + "\n")


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser: argparse.ArgumentParser = _Parser(
        prog="nbagent",
        description="A code-first agent: every step is a cell in a real IPython kernel, "
        "and every run is a notebook that re-runs.",
    )
    parser.add_argument("--version", action="version", version=f"nbagent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser, _ in _COMMANDS.values():
        add_parser(sub)
    return parser, dict(sub.choices)


def _unrecognized(command: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments: --max-step 3; did you mean --max-steps?``"""
    message = "unrecognized arguments: " + " ".join(extras)
    flags = [f for f in command._option_string_actions if f.startswith("--")]
    for extra in extras:
        if extra.startswith("--"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], flags, n=1, cutoff=0.6)
            if close:
                return f"{message}; did you mean {close[0]}?"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbagent`` command; returns the exit code (argparse's too: 2 for a
    wrong flag or value, 0 after ``--help``)."""
    parser, commands = _build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            commands.get(args.command, parser).error(
                _unrecognized(commands.get(args.command, parser), extras)
            )
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _, command = _COMMANDS[args.command]
    try:
        return command(args)
    except UsageError as exc:
        print(escape_controls(f"nbagent {args.command}: error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except NbagentError as exc:
        print(escape_controls(f"nbagent {args.command}: {exc}"), file=sys.stderr)
        return EXIT_NO_ANSWER
    except KeyboardInterrupt:
        print(f"nbagent {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
