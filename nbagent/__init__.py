"""nbagent: a code-first agent whose every step is a cell run in a real IPython kernel.

from nbagent import Agent
result = Agent(model="openai/gpt-4o-mini").run("question", files=["data.csv"], notebook="run.ipynb")

In Jupyter: ``%load_ext nbagent``, then ask in a ``%%agent`` cell (see :mod:`nbagent.magic.magics`).
"""

from typing import Any as _Any

from ._version import __version__
from .agent.agent import Agent, RunListener, RunResult
from .agent.config import AgentConfig
from .agent.memory import HistoryLimits
from .agent.observe import Observer
from .agent.session import Session
from .batch.runner import BatchListener, BatchOutcome, BatchSettings, TaskRecord, run_batch
from .batch.scoring import Score, score_answer
from .batch.tasks import BatchTask, TaskFileError, load_tasks
from .exceptions import (
    KernelDiedError,
    KernelError,
    KernelStartError,
    ModelError,
    NbagentError,
    NoSuchKernelError,
    NotReproducedError,
    SandboxUnavailableError,
    ScriptExhaustedError,
    StopRun,
    ToolDefinitionError,
    ToolRequirementError,
    UnknownSettingError,
    UntrustedToolError,
    UsageError,
)
from .execution.executor import Executor
from .execution.kernel import Kernel
from .execution.outputs import ErrorInfo, Execution
from .execution.pool import KernelPool
from .execution.sandbox import Sandbox
from .execution.shell import ShellExecutor
from .models import HFInferenceModel, LiteLLMModel, Model, Reply, RetryPolicy, ScriptedModel, Usage
from .notebook.recorder import NotebookRecorder
from .records import Observation, Plan, Step, Task
from .repro.export import TidyResult, aexport_tidy, export_html, export_tidy, tidy_notebook
from .repro.verify import CellCheck, VerifyReport, averify_notebook, verify_notebook
from .tools.bridge import HostCall
from .tools.defaults import WebSearchTool
from .tools.sharing import load_tool
from .tools.tool import Tool, ToolParameter, ToolSpec, tool


def load_ipython_extension(shell: _Any) -> None:
    """``%load_ext nbagent``: register the ``%agent`` line magic and ``%%agent`` cell magic."""
    # Imported here so that ``import nbagent`` stays light.
    from .magic.magics import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: _Any) -> None:
    """``%unload_ext nbagent``: remove the magics."""
    from .magic.magics import unload_ipython_extension as unload

    unload(shell)


__all__ = [
    "Agent",
    "AgentConfig",
    "BatchListener",
    "BatchOutcome",
    "BatchSettings",
    "BatchTask",
    "CellCheck",
    "ErrorInfo",
    "Execution",
    "Executor",
    "HFInferenceModel",
    "HistoryLimits",
    "HostCall",
    "Kernel",
    "KernelDiedError",
    "KernelError",
    "KernelPool",
    "KernelStartError",
    "LiteLLMModel",
    "Model",
    "ModelError",
    "NbagentError",
    "NoSuchKernelError",
    "NotReproducedError",
    "NotebookRecorder",
    "Observation",
    "Observer",
    "Plan",
    "Reply",
    "RetryPolicy",
    "RunListener",
    "RunResult",
    "Sandbox",
    "SandboxUnavailableError",
    "Score",
    "ScriptExhaustedError",
    "ScriptedModel",
    "Session",
    "ShellExecutor",
    "Step",
    "StopRun",
    "Task",
    "TaskFileError",
    "TaskRecord",
    "TidyResult",
    "Tool",
    "ToolDefinitionError",
    "ToolParameter",
    "ToolRequirementError",
    "ToolSpec",
    "UnknownSettingError",
    "UntrustedToolError",
    "Usage",
    "UsageError",
    "VerifyReport",
    "WebSearchTool",
    "__version__",
    "aexport_tidy",
    "averify_notebook",
    "export_html",
    "export_tidy",
    "load_ipython_extension",
    "load_tasks",
    "load_tool",
    "run_batch",
    "score_answer",
    "tidy_notebook",
    "tool",
    "unload_ipython_extension",
    "verify_notebook",
]
