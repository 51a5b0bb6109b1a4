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
    add_setting_argument,
    add_setting_arguments,
    setting,
    settings,
    settings_from_args,
)
from ..exceptions import UsageError
from ..execution.kernel import available_kernels
from ..execution.sandbox import Sandbox
from ..models.options import ModelOptions


def config_from_args(args: argparse.Namespace) -> tuple[AgentConfig, dict[str, Any]]:
    """The settings the flags describe (checked; the defaults for those not given), and the given ones."""
    given = settings_from_args(args)
    return AgentConfig().replace(**given), given


def check_kernel(name: str) -> None:
    """Refuse a kernel spec that is not installed, listing those that are."""
    kernels = available_kernels()
    if name not in kernels:
        raise UsageError(f"unknown kernel {name!r}; available kernels: {', '.join(kernels)}")


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


# -- for ``nbagent batch`` until it declares its flags with add_setting_arguments -------------------
# The same declarations (config.py's), with their defaults in the namespace as batch reads them.
# Delete these once nbagent/cli/batch.py no longer imports them.

_SANDBOX_FLAGS = (
    *(s.name for s in settings() if s.group == "sandbox" and s.name != "kernel"),
    "max_restarts",
)


def _add_with_defaults(
    container: argparse.ArgumentParser | argparse._ArgumentGroup, names: tuple[str, ...], **help: str
) -> None:
    for name in names:
        spec = setting(name)
        action = add_setting_argument(container, spec, help.get(name))
        action.default = list(spec.default) if spec.kind == "names" else spec.default


def add_model_arguments(parser: argparse.ArgumentParser, *, model_help: str) -> None:
    """The model group's flags (but ``--vision``), with their defaults (for ``batch``)."""
    group = parser.add_argument_group("model", "how the model is reached and how it replies")
    names = tuple(s.name for s in settings() if s.group == "model" and s.name != "vision")
    _add_with_defaults(group, names, model=model_help)


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox group's flags (but ``--kernel``) and ``--max-restarts``, with their defaults."""
    group = parser.add_argument_group("sandbox", "the sandboxed kernel (nbagent-sandbox) and its limits")
    _add_with_defaults(group, _SANDBOX_FLAGS)


def add_budget_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--max-total-tokens`` and ``--max-cost``, with their defaults."""
    _add_with_defaults(parser, ("max_total_tokens", "max_cost"))


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The :class:`~nbagent.models.ModelOptions` of :func:`add_model_arguments`'s flags."""
    return config_from_args(args)[0].model_options()


def sandbox_from_args(args: argparse.Namespace) -> Sandbox:
    """The :class:`~nbagent.Sandbox` of :func:`add_sandbox_arguments`'s flags."""
    return config_from_args(args)[0].sandbox_spec()


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
    from ..repro.verify import read_notebook, rerun_config

    return rerun_config(read_notebook(notebook), settings_from_args(args)).sandbox_spec()
