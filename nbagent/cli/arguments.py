"""What the commands share beyond the settings' flags: the checks made before anything is created.

Every flag that is a setting (model, loop, budget, sandbox, tools) is declared once, in
:mod:`nbagent.agent.config` (:func:`~nbagent.agent.config.add_setting_arguments`), and read back
with :func:`~nbagent.agent.config.settings_from_args`.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from ..agent.config import (
    AgentConfig,
    add_setting_arguments,
    setting,
    settings,
    settings_from_args,
)
from ..execution.kernel import check_kernel_name
from ..execution.sandbox import Sandbox


def config_from_args(args: argparse.Namespace) -> tuple[AgentConfig, dict[str, Any]]:
    """The settings the flags describe (checked; the defaults for those not given), and the given ones."""
    given = settings_from_args(args)
    return AgentConfig().replace(**given), given


def check_kernel(name: str) -> None:
    """Refuse a kernel spec that is not installed, listing those that are."""
    check_kernel_name(name)


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


# -- commands that re-run a notebook (verify, export --tidy) ------------------------------------


def add_rerun_arguments(parser: argparse.ArgumentParser, *, only: str = "") -> None:
    """The sandbox settings' flags and ``--timeout`` (of one cell) of a command that re-runs a
    notebook. A limit left out is the notebook's where tighter than the default; the kernel, sandbox
    level, network and environment are never the notebook's. ``only``: e.g. ``"with --tidy"``."""
    from ..repro.verify import DEFAULT_CELL_TIMEOUT, MIN_CELL_TIMEOUT

    prefix = f"{only}: " if only else ""
    kernel = setting("kernel").default_text()
    texts = {
        "kernel": f"{prefix}kernel spec to re-run in (default {kernel}; never the notebook's)",
        "sandbox": f"{prefix}{setting('sandbox').help} (default jail; never the notebook's)",
    }
    for spec in settings():
        if spec.group == "sandbox" and spec.name not in texts:
            texts[spec.name] = prefix + spec.help
            if spec.from_notebook == "tighten":
                texts[spec.name] += f" (default: the notebook's if tighter, else {spec.default_text()})"
    add_setting_arguments(parser, ["sandbox"], help=texts)
    parser.add_argument(
        "--timeout",
        dest="cell_timeout",  # not the ``timeout`` setting: that one bounds a step of a run
        type=_cell_seconds,
        metavar="SECONDS",
        help=f"{prefix}time limit of one cell (default: twice the run's step time limit, at least "
        f"{MIN_CELL_TIMEOUT:g}; {DEFAULT_CELL_TIMEOUT:g} if the notebook records none)",
    )


def _cell_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):  # "nan" and "inf" parse as floats
        raise argparse.ArgumentTypeError(f"--timeout must be a positive number of seconds, not {text!r}")
    return value


def rerun_sandbox(notebook: str | os.PathLike[str], args: argparse.Namespace) -> Sandbox:
    """The sandbox to re-run ``notebook`` in: the flags of :func:`add_rerun_arguments` given, else
    the notebook's limits where tighter, else the defaults (:func:`~nbagent.repro.verify.rerun_config`)."""
    from ..notebook.reader import read_notebook_file
    from ..repro.verify import rerun_config

    return rerun_config(read_notebook_file(notebook), settings_from_args(args)).sandbox_spec()
