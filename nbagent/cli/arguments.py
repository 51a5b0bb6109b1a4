"""Flags shared by several commands (model and limits, tools, sandbox) and the checks that read them."""

from __future__ import annotations

import argparse
import math

from ..exceptions import UsageError
from ..execution.kernel import DEFAULT_KERNEL, available_kernels
from ..execution.sandbox import (
    DEFAULT_CPU_TIME,
    DEFAULT_DISK,
    DEFAULT_FILE_SIZE,
    DEFAULT_MAX_PROCESSES,
    DEFAULT_MEMORY,
    LEVELS,
    MIN_SIZE,
    Sandbox,
    format_size,
    parse_size,
)
from ..models.options import API_BASE_ENV, API_KEY_ENV, DEFAULT_REQUEST_TIMEOUT, ModelOptions
from ..models.retry import RetryPolicy
from ..tools.tool import Tool


def add_model_arguments(parser: argparse.ArgumentParser, *, model_help: str) -> None:
    """Add the flags that choose the model and how it is reached: ``-m``, ``--api-base``,
    ``--api-key``, ``--request-timeout``, ``--temperature``, ``--max-tokens``, ``--max-retries``."""
    parser.add_argument("-m", "--model", help=model_help)
    group = parser.add_argument_group("model", "how the model is reached and how it replies")
    group.add_argument(
        "--api-base",
        metavar="URL",
        help="base URL of an OpenAI-compatible server or endpoint, e.g. http://localhost:8000/v1 "
        f"(default: ${API_BASE_ENV}); no key is needed for it unless you pass one",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"key to send to the model's server (default: ${API_KEY_ENV}, else the provider's own "
        "variable such as OPENAI_API_KEY; never sent to an --api-base unless given here)",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="SECONDS",
        help=f"time limit of one model request (default {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    group.add_argument(
        "--temperature", type=float, metavar="T", help="sampling temperature (default: the model's)"
    )
    group.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help="longest reply of the model, in tokens (default: the model's)",
    )
    group.add_argument(
        "--max-retries",
        type=int,
        default=RetryPolicy.max_attempts - 1,
        metavar="N",
        help="retries of a request refused for a rate limit (429) or a server error (5xx), honouring "
        f"Retry-After (default {RetryPolicy.max_attempts - 1}); other failures are not retried",
    )


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The checked :class:`~nbagent.models.ModelOptions` of :func:`add_model_arguments`'s flags."""
    if args.max_retries < 0:
        raise UsageError(f"--max-retries cannot be negative ({args.max_retries})")
    return ModelOptions(
        api_base=args.api_base,
        api_key=args.api_key,
        request_timeout=args.request_timeout,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        retry=RetryPolicy(max_attempts=args.max_retries + 1),
    ).check()


def add_agent_arguments(parser: argparse.ArgumentParser, *, model_help: str, max_steps_help: str) -> None:
    """Add the flags that choose the model and kernel and bound each step: the model's flags
    (:func:`add_model_arguments`), ``--max-steps``, ``--timeout``, ``--kernel``. Only the help of
    ``-m`` and ``--max-steps`` differs between commands."""
    add_model_arguments(parser, model_help=model_help)
    parser.add_argument(
        "--max-steps", type=int, default=10, metavar="N", help=f"{max_steps_help} (default 10)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="time limit of one step (default 60)"
    )
    parser.add_argument(
        "--kernel",
        default=DEFAULT_KERNEL,
        metavar="NAME",
        help=f"kernel spec to run the code in (default: {DEFAULT_KERNEL}; 'nbagent kernels' lists them)",
    )


def check_step_limits(args: argparse.Namespace) -> None:
    """Refuse a ``--max-steps`` or ``--timeout`` (of :func:`add_agent_arguments`) that cannot work."""
    if args.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, not {args.max_steps}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):  # "nan" and "inf" parse as floats
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")


def check_kernel(name: str) -> None:
    """Refuse a kernel spec that is not installed, listing those that are."""
    kernels = available_kernels()
    if name not in kernels:
        raise UsageError(f"unknown kernel {name!r}; available kernels: {', '.join(kernels)}")


def add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags that choose an agent's tools and planning."""
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


def load_tools(args: argparse.Namespace) -> list[Tool]:
    """The extra tools the flags of :func:`add_tool_arguments` ask for (the default tools aside)."""
    from ..tools.defaults import WebSearchTool
    from ..tools.sharing import load_tool

    if args.tool and not args.trust_tools:
        raise UsageError(
            f"--tool {args.tool[0]} runs that tool's code here and in the kernel; "
            "read its tool.py, then add --trust-tools"
        )
    tools: list[Tool] = [load_tool(source, trust_remote_code=True) for source in args.tool]
    if args.web_search:
        tools.append(WebSearchTool())
    return tools


def _size(text: str) -> int:
    try:
        value = parse_size(text) or 0
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if 0 < value < MIN_SIZE:
        # "0.1" or "512" is a slip (bytes, or a fraction of one), not a limit anyone wants.
        raise argparse.ArgumentTypeError(
            f"{text!r} is {value} bytes, below the smallest limit of {format_size(MIN_SIZE)}; "
            "give a unit (512M, 2G), or 0 for no limit"
        )
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a count cannot be negative; 0 means no limit")
    return value


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
        "sandbox", "the sandboxed kernel (nbagent-sandbox) and its limits; other kernels ignore them"
    )
    add_sandbox_level_argument(group)
    group.add_argument(
        "--memory-limit",
        type=_size,
        default=DEFAULT_MEMORY,
        metavar="SIZE",
        help="memory of the kernel and all its children together, e.g. 2G or 512M; 0 for none "
        f"(default {format_size(DEFAULT_MEMORY)})",
    )
    group.add_argument(
        "--cpu-limit",
        type=_seconds,
        default=DEFAULT_CPU_TIME,
        metavar="SECONDS",
        help=f"CPU seconds the kernel and its children may use; 0 for none (default {DEFAULT_CPU_TIME})",
    )
    group.add_argument(
        "--max-processes",
        type=_count,
        default=DEFAULT_MAX_PROCESSES,
        metavar="N",
        help=f"processes and threads the run may have at once; 0 for none (default {DEFAULT_MAX_PROCESSES})",
    )
    group.add_argument(
        "--disk-limit",
        type=_size,
        default=DEFAULT_DISK,
        metavar="SIZE",
        help="what the run may keep in its working folder (measured during and after each step, so "
        f"approximate); 0 for none (default {format_size(DEFAULT_DISK)})",
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


def add_sandbox_level_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--sandbox=LEVEL`` (for commands that run code but take no other sandbox flag)."""
    parser.add_argument(
        "--sandbox",
        choices=LEVELS,
        default="jail",
        metavar="LEVEL",
        help="jail (default: bubblewrap; read-only system, one writable folder, own processes, no "
        "network) or limits (rlimits and no network only); --kernel NAME picks any other kernel",
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
        level=args.sandbox,
        max_processes=args.max_processes or None,
        disk=args.disk_limit or None,
    )


def add_budget_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--max-total-tokens`` and ``--max-cost``: what one question may spend on the model."""
    parser.add_argument(
        "--max-total-tokens",
        type=int,
        metavar="N",
        help="stop (status 'budget') before a model call once the question has used N tokens, "
        "estimated where the model reports none; resume with a larger budget to go on",
    )
    parser.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="the same in US dollars, priced by litellm's price map (models it has no price for count 0)",
    )


def budget_from_args(args: argparse.Namespace) -> tuple[int | None, float | None]:
    """``max_total_tokens`` and ``max_cost`` for :class:`~nbagent.Agent`, refusing values that cannot work."""
    if args.max_total_tokens is not None and args.max_total_tokens < 1:
        raise UsageError(f"--max-total-tokens must be at least 1, not {args.max_total_tokens}")
    if args.max_cost is not None and not args.max_cost > 0:
        raise UsageError(f"--max-cost must be a positive number of US dollars, not {args.max_cost:g}")
    return args.max_total_tokens, args.max_cost


def check_sandbox(kernel: str, sandbox: Sandbox | str) -> None:
    """Fail closed before anything is created: the jail is asked for and cannot be built here."""
    from ..exceptions import SandboxUnavailableError
    from ..execution.jail import jail_unavailable
    from ..execution.kernel import is_sandboxed_spec

    level = sandbox if isinstance(sandbox, str) else sandbox.level
    if level == "jail" and is_sandboxed_spec(kernel):
        reason = jail_unavailable()
        if reason is not None:
            raise SandboxUnavailableError(reason)
