"""``nbagent mcp``: serve nbagent's sessions to another agent over MCP (stdio, or streamable HTTP)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..agent.config import add_setting_arguments, settings
from ..exceptions import UsageError
from .arguments import check_kernel, check_sandbox, config_from_args

TOKEN_ENV = "NBAGENT_MCP_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_mcp_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``mcp`` command."""
    mcp = sub.add_parser(
        "mcp",
        help="serve sandboxed, recorded kernels to another agent (an MCP server)",
        description="An MCP server: tools open_session, run_code, read_notebook, verify_notebook, "
        "export_notebook, close_session and ask. Over standard input and output by default; "
        "--http HOST:PORT for streamable HTTP. Kernel, sandbox and limits come from these flags only.",
    )
    mcp.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp (a HOST off loopback needs --token)",
    )
    mcp.add_argument(
        "--token",
        help=f"bearer token every HTTP request must carry (default: ${TOKEN_ENV}); required off loopback",
    )
    mcp.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="with --http off loopback: a Host name clients use to reach the server (repeatable; "
        "default: HOST); others are refused, against DNS rebinding",
    )
    mcp.add_argument(
        "--root",
        metavar="DIR",
        default=".",
        help="the folder notebooks are written in and data files read from; clients cannot leave it "
        "(default: the current folder)",
    )
    mcp.add_argument(
        "--idle-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="close a session unused this long (default 1800)",
    )
    loop = {"timeout", "max_restarts", "observation_chars", "observation_tokens"}
    add_setting_arguments(
        mcp,
        ["model", "loop", "budget", "sandbox"],
        exclude=[s.name for s in settings() if s.group == "loop" and s.name not in loop] + ["vision"],
        help={
            "model": "model for the ask tool (litellm string, 'hf:ID', 'scripted:FILE'); optional",
            "timeout": "time limit of one run_code, and of one step of ask",
            "kernel": "kernel spec of every session ('nbagent kernels' lists them)",
            "max_total_tokens": "what one ask run may spend on --model, in tokens (estimated where the "
            "model reports none)",
            "max_cost": "the same in US dollars, priced by litellm's price map",
        },
    )


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--http {text!r} is not HOST:PORT; use e.g. --http 127.0.0.1:8765")
    return host, int(port)


def mcp_command(args: argparse.Namespace) -> int:
    """``nbagent mcp``: check the flags, then serve until the client leaves (stdio) or Ctrl-C (HTTP)."""
    try:
        import mcp  # noqa: F401  (the SDK is an optional extra)
    except ImportError:
        raise UsageError(
            "nbagent mcp needs the MCP Python SDK: pip install 'nbagent-ai[mcp]' (or pip install mcp)"
        ) from None
    from ..mcp.server import build_server, transport_security
    from ..mcp.sessions import SessionSettings
    from ..models import LiteLLMModel, Model, resolve_model

    if not args.idle_timeout > 0:
        raise UsageError(f"--idle-timeout must be a positive number of seconds, not {args.idle_timeout:g}")
    root = Path(args.root).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"--root {args.root!r} is not a folder")
    config, _ = config_from_args(args)
    if config.timeout is None:
        raise UsageError("--timeout: a session needs a time limit for run_code; give a number of seconds")
    check_kernel(config.kernel)
    check_sandbox(config.kernel, config.sandbox_spec())
    options = config.model_options()
    settings = SessionSettings(
        root=root,
        kernel=config.kernel,
        sandbox=config.sandbox_spec(),
        timeout=config.timeout,
        max_restarts=config.max_restarts,
        idle_timeout=args.idle_timeout,
        observer=config.observer(),
        max_total_tokens=config.max_total_tokens,
        max_cost=config.max_cost,
    )
    make_model = None
    if config.model:
        spec = config.model
        first = resolve_model(spec, **options.kwargs())  # refuse a bad model string now, not at ask
        if isinstance(first, LiteLLMModel):
            first.check()

        def make_model() -> Model:
            # A scripted model's replies are used up by one run: each ask gets a fresh one.
            return resolve_model(spec, **options.kwargs())

    token = args.token or os.environ.get(TOKEN_ENV) or None
    sweep = min(5.0, args.idle_timeout / 2)  # how often idle sessions are looked for
    if args.http is None:
        if args.token or args.allowed_host:
            raise UsageError("--token and --allowed-host apply to --http only")
        server, _ = build_server(settings, make_model, sweep_every=sweep, after_close=_exit_if_terminated)
        with _sigterm_as_interrupt():
            try:
                server.run("stdio")
            except KeyboardInterrupt:
                pass
        return 0

    host, port = _host_port(args.http)
    if host not in LOOPBACK and not token:
        raise UsageError(
            f"--http {args.http} is reachable from other machines: give a bearer token with --token "
            f"or ${TOKEN_ENV} (clients send 'Authorization: Bearer TOKEN')"
        )
    server, _ = build_server(
        settings,
        make_model,
        token=token,
        base_url=f"http://{args.http}",
        sweep_every=sweep,
        after_close=_exit_if_terminated,
    )
    security = None if host in LOOPBACK else transport_security(host, args.allowed_host)
    print(f"nbagent mcp: serving http://{args.http}/mcp (Ctrl-C stops)", file=sys.stderr, flush=True)
    with _sigterm_as_interrupt():
        try:
            server.run("streamable-http", host=host, port=port, transport_security=security)
        except KeyboardInterrupt:
            pass
    return 0


_terminated: list[int] = []


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    # A client or a service manager stops the server with SIGTERM: treated as Ctrl-C, so that the
    # sessions are closed (kernels shut down, notebooks marked closed) before the process ends.
    def interrupt(signum: int, frame: Any) -> None:
        _terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_if_terminated() -> None:
    # After SIGTERM the sessions are closed, but the SDK's stdio reader thread stays blocked on the
    # client's pipe and would keep the process alive: nothing is left to do, so end it here.
    if _terminated:
        sys.stderr.flush()
        os._exit(0)
