"""An agent's tools and managed agents: the prompt's listing, the setup cell, the host bridge, the record.

The Agent asks its :class:`Toolbox` for the text the prompt lists (each tool as a Python ``def``
with its docstring), for the setup cell's source (the core definitions, then the tools: their
requirement check, imports and definitions), and, around each step, to record the calls the step
made to host-side tools. The Toolbox owns the :class:`~nbagent.tools.bridge.HostBridge` when any tool
runs on the host.
"""

from __future__ import annotations

import ast
import asyncio
import json
import pprint
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbformat.v4 import new_code_cell

from ..exceptions import ToolDefinitionError, ToolRequirementError
from ..execution.outputs import Execution
from ..kernel_code import kernel_source, setup_code
from ..notebook import schema
from .bridge import HostBridge, HostCall
from .managed import ManagedAgent, ManagedAgentTool, ManagerSession
from .tool import Tool, as_tool

if TYPE_CHECKING:
    from ..notebook.recorder import NotebookRecorder

REPLAY_TAG = "nbagent-host-replay"
MAX_CALLS_SHOWN = 20


class Toolbox:
    """The tools (kernel and host) and managed agents of one Agent.

    Args:
        tools: tools, or plain functions (made tools with ``@tool``).
        managed_agents: Agents with a ``name`` and a ``description``, callable as ``name(task)``.
        default_tools: include ``list_files``, ``read_file`` and ``inspect_data``; a tool of the
            same name given in ``tools`` replaces the default one.
    """

    def __init__(
        self,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        managed_agents: Sequence[ManagedAgent] = (),
        *,
        default_tools: bool = True,
        seed: int | None = 0,
    ) -> None:
        self.seed = seed
        given = [as_tool(t) for t in tools]
        managed = [ManagedAgentTool(a) for a in managed_agents]
        names = [t.spec.name for t in [*given, *managed]]
        for name in names:
            if names.count(name) > 1:
                raise ToolDefinitionError(f"two tools or managed agents are named {name!r}; rename one")
        defaults: list[Tool] = []
        if default_tools:
            from .defaults import DEFAULT_TOOLS

            defaults = [t for t in DEFAULT_TOOLS if t.spec.name not in names]
        self.tools: list[Tool] = [*defaults, *given]
        self.managed: list[ManagedAgentTool] = managed
        _check_host_requirements([t for t in self.tools if t.host])
        self._kernel_source = self._build_kernel_source()
        host = {t.spec.name: t for t in [*self.tools, *self.managed] if t.host}
        self.bridge: HostBridge | None = HostBridge(host) if host else None
        self._replay_cell: Any = None
        self._mark = 0

    # -- the prompt -----------------------------------------------------------------------------

    def prompt_section(self) -> str:
        """The tools and managed agents as the system prompt lists them ('' when there are none)."""
        parts = []
        if self.tools:
            listing = "\n\n".join(t.spec.signature() for t in self.tools)
            parts.append(
                "## Tools\n\n"
                "These functions are already defined in the kernel. Call them from your code like any "
                "Python function and use what they return (print it to see it).\n\n"
                f"```python\n{listing}\n```"
            )
        if self.managed:
            listing = "\n\n".join(t.spec.signature() for t in self.managed)
            parts.append(
                "## Managed agents\n\n"
                "These are agents you can delegate a sub-task to: call one with the task in plain words "
                "and it returns its final answer. Each call is a whole run of another agent, so give it "
                "whole sub-tasks, not single lookups.\n\n"
                f"```python\n{listing}\n```"
            )
        return "\n\n".join(parts)

    def apply_to_prompt(self, prompt: str, instructions: str) -> str:
        """Fill ``{tools}`` and ``{extra_instructions}``; the listing goes before the instructions."""
        section = self.prompt_section()
        if "{tools}" in prompt:
            prompt = prompt.replace("{tools}", section)
        elif "{extra_instructions}" in prompt:
            instructions = f"{section}\n\n{instructions}" if section else instructions
        elif section:
            prompt = f"{prompt.rstrip()}\n\n{section}\n"
        return prompt.replace("{extra_instructions}", instructions).rstrip() + "\n"

    # -- the setup cell -------------------------------------------------------------------------

    def setup_source(self) -> str:
        """The notebook's setup cell: core definitions, then the tools."""
        core = setup_code(self.seed)
        return core if not self._kernel_source else f"{core}\n\n{self._kernel_source}"

    def live_source(self) -> str:
        """What the kernel runs at start: the setup cell plus the live bridge address (not recorded)."""
        return self.setup_source() + self._connect_source()

    def tools_source(self) -> str:
        """The tools' cell (after the setup cell): their definitions ('' without tools)."""
        return self._kernel_source

    def live_tools_source(self) -> str:
        """What the kernel runs for the tools' cell: plus the live bridge address (not recorded)."""
        return self._kernel_source + self._connect_source() if self._kernel_source else ""

    def _connect_source(self) -> str:
        if self.bridge is not None and self.bridge.address is not None:
            return f"\n_nbagent_host.connect({self.bridge.address!r}, {self.bridge.token!r})\n"
        return ""

    def check_setup(self, execution: Execution) -> None:
        """Turn a failed setup cell into a clear error about the tools, when it is theirs."""
        error = execution.error
        if error is None or not self._kernel_source:
            return
        if error.name == "MissingToolRequirements":
            raise ToolRequirementError(f"a tool's requirement is missing in the kernel: {error.value}")
        raise ToolDefinitionError(
            f"the kernel could not define the tools ({error.name}: {error.value}); if a package is "
            "missing, install it in the kernel's Python or list it in the tool's requirements"
        )

    def _build_kernel_source(self) -> str:
        definitions = [t.kernel_definition() for t in [*self.tools, *self.managed]]
        if not definitions:
            return ""
        parts = []
        needs = {t.spec.name: list(t.requirements) for t in self.tools if t.requirements and not t.host}
        if needs:
            parts.append(kernel_source("tool_requirements.py").strip())
            parts.append(f"_nbagent_check_requirements({json.dumps(needs)})")
        if any(d.needs_host_bridge for d in definitions):
            parts.append(kernel_source("host_bridge.py").strip())
        if any(d.needs_tool_base for d in definitions):
            parts.append(kernel_source("tool_base.py").strip())
        imports = _merge_imports([s for d in definitions for s in d.imports])
        imports.sort(key=lambda s: not s.startswith(("import ", "from ")))  # constants after imports
        head = "# nbagent tools: defined here so that the code below can call them"
        parts.append("\n".join([head, *imports]) if imports else head)
        parts.extend(d.code for d in definitions)
        return "\n\n\n".join(parts) + "\n"

    # -- sessions and steps ---------------------------------------------------------------------

    async def start_session(
        self,
        notebook: Path | None,
        workdir: Path,
        overwrite: bool,
        bridge_folder: Path | None = None,
        run_folder: Path | None = None,
    ) -> None:
        """A new session begins: start the bridge, tell managed agents where the manager writes.

        ``bridge_folder``: where the bridge's socket goes (a jailed kernel's own bridge folder);
        ``run_folder``: the jailed kernel's writable folder, shared with managed agents.
        """
        for t in self.managed:
            t.session = ManagerSession(
                notebook=notebook, workdir=workdir, overwrite=overwrite, run_folder=run_folder
            )
            t.runs = 0
        if self.bridge is not None:
            self.bridge.calls.clear()  # a new notebook records (and replays) only its own calls
            self._mark = 0
            self.bridge.start(bridge_folder)
            self.bridge.attach(asyncio.get_running_loop())
        self._replay_cell = None

    def before_step(self) -> None:
        """Called before a step's code runs: its host calls are the ones made from now on."""
        if self.bridge is not None:
            self.bridge.attach(asyncio.get_running_loop())
            self._mark = len(self.bridge.calls)

    def add_replay_cell(self, recorder: NotebookRecorder) -> None:
        """Add the (not yet executed) cell that replays host calls when the notebook re-runs alone."""
        if self.bridge is None:
            return
        cell = new_code_cell(_replay_source([]))
        cell.metadata["tags"] = [REPLAY_TAG]
        cell.metadata["jupyter"] = {"source_hidden": True}
        recorder.add_cell(cell, role="host-replay")
        self._replay_cell = cell

    def after_step(self, recorder: NotebookRecorder) -> list[HostCall]:
        """Record the host calls the step made: on its cell, in a note below it, in the replay cell."""
        if self.bridge is None:
            return []
        calls = self.bridge.calls[self._mark :]
        self._mark = len(self.bridge.calls)
        if not calls:
            return []
        step_cell = next(
            (c for c in reversed(recorder.nb.cells) if schema.role(c) == "step"),
            None,
        )
        if step_cell is not None:
            schema.cell_meta(step_cell)["host_calls"] = [c.to_dict() for c in calls]
            recorder.invalidate(step_cell)  # a metadata edit is not noticed on its own
        lines = [f"- {_call_text(c)}" for c in calls[:MAX_CALLS_SHOWN]]
        if len(calls) > MAX_CALLS_SHOWN:
            lines.append(f"- … and {len(calls) - MAX_CALLS_SHOWN} more (all in the replay cell at the top)")
        recorder.add_note(
            "*Calls to host-side tools in this step:*\n\n" + "\n".join(lines),
            role="host-calls",
            calls=len(calls),
        )
        if self._replay_cell is not None:
            self._replay_cell.source = _replay_source(self.bridge.calls)
        return calls

    async def aclose(self) -> None:
        """Stop the bridge and the managed agents' kernels."""
        if self.bridge is not None:
            self.bridge.close()
        for t in self.managed:
            await t.agent.aclose()


def _check_host_requirements(tools: list[Tool]) -> None:
    from ..kernel_code.tool_requirements import MissingToolRequirements, _nbagent_check_requirements

    needs = {t.spec.name: list(t.requirements) for t in tools if t.requirements}
    try:
        _nbagent_check_requirements(needs)
    except MissingToolRequirements as exc:
        raise ToolRequirementError(f"a host tool's requirement is missing in this Python: {exc}") from None


def _merge_imports(statements: list[str]) -> list[str]:
    bound: dict[str, str] = {}
    merged: list[str] = []
    for statement in statements:
        if statement in merged:
            continue
        node = ast.parse(statement).body[0]
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.asname or a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        else:
            names = []
        for name in names:
            if name in bound and bound[name] != statement:
                raise ToolDefinitionError(
                    f"two tools need {name!r} to mean different things ({bound[name]!r} and {statement!r}); "
                    "rename it in one of them"
                )
            bound[name] = statement
        merged.append(statement)
    return merged


def _replay_source(calls: list[HostCall]) -> str:
    entries = pprint.pformat([c.replay_entry() for c in calls], width=100, sort_dicts=False)
    return (
        "# nbagent: the results of the calls this run made to host-side tools (tools that run in the\n"
        "# agent's process, not in this kernel). A live run calls the host; when this notebook is re-run\n"
        "# on its own, each call is answered from this list instead, and says so.\n"
        f"_nbagent_host.replay({entries})\n"
    )


def _value_text(payload: dict[str, Any] | None, limit: int = 80) -> str:
    if payload is None:
        return "None"
    kind = payload.get("kind")
    if kind == "json":
        text = json.dumps(payload.get("value"), ensure_ascii=False)
    elif kind in ("dataframe", "dataframe-split"):
        value = payload.get("value") or {}
        rows = len(value.get("data", []))
        text = f"<DataFrame, {rows} rows>"
    else:
        text = f"<{kind}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call_text(call: HostCall) -> str:
    if call.note:
        return call.note.replace("\n", " ")
    args = ", ".join(f"{k}={_value_text(v, 40)}" for k, v in call.args.items())
    outcome = f"error: {call.error}" if call.error is not None else _value_text(call.result)
    return f"`{call.tool}({args})` → `{outcome}` ({call.duration:.2f} s)"
