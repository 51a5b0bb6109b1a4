"""What a re-run needs to know about the kernel a notebook was made in.

After the setup cell, the agent asks the kernel (silently: nothing is added to the notebook and
the execution count does not move) for its Python and package versions and for the random seed
policy the setup cell applied, and records the answer in ``metadata.nbagent.environment``.
``nbagent verify`` asks its own kernel the same question and reports version changes next to its
verdict, so a difference can be traced to an upgrade rather than to the analysis.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from ..execution.executor import Executor
from ..kernel_code import kernel_source

PROBE_PREFIX = "nbagent-environment: "
"""Start of the line the probe prints; the JSON follows it."""


@cache
def probe_code() -> str:
    """The kernel-side code that prints the environment as one JSON line."""
    return kernel_source("environment_probe.py")


def parse_probe_output(text: str) -> dict[str, Any] | None:
    """The environment printed by :func:`probe_code`, or ``None`` if ``text`` does not hold it."""
    for line in reversed(text.splitlines()):
        if line.startswith(PROBE_PREFIX):
            try:
                value = json.loads(line[len(PROBE_PREFIX) :])
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


async def probe_environment(executor: Executor, kernel_name: str | None) -> dict[str, Any]:
    """Ask a running kernel for its environment (see the module docstring).

    A probe that fails is recorded as such (``{"error": ...}``) rather than stopping the run:
    the notebook is still valid, only less informative.
    """
    code = probe_code()
    execution = await executor.aexecute(code, timeout=60, silent=True)
    text = "".join(
        str(out.get("text", "")) for out in execution.outputs if out.get("output_type") == "stream"
    )
    found = parse_probe_output(text)
    environment: dict[str, Any] = (
        found if found is not None else {"error": f"the kernel did not report it ({execution.status})"}
    )
    environment["kernel"] = kernel_name
    return environment


def version_changes(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Versions that differ between two environments: name -> (recorded, current).

    Python itself is listed as ``"python"``; a package missing on one side shows as ``"-"``.
    """
    changes: dict[str, tuple[str, str]] = {}
    if recorded.get("python") and current.get("python") and recorded["python"] != current["python"]:
        changes["python"] = (str(recorded["python"]), str(current["python"]))
    old: dict[str, str] = recorded.get("packages") or {}
    new: dict[str, str] = current.get("packages") or {}
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            changes[name] = (old.get(name, "-"), new.get(name, "-"))
    return changes
