"""nbagent: a code-first agent whose every step is a cell run in a real IPython kernel.

from nbagent import Agent
result = Agent(model="openai/gpt-4o-mini").run("question", files=["data.csv"], notebook="run.ipynb")

In Jupyter: ``%load_ext nbagent``, then ask in a ``%%agent`` cell (see :mod:`nbagent.magic`).
"""

from typing import Any

from ._version import __version__
from .agent import Agent, Executor, RunListener, RunResult
from .exceptions import (
    KernelError,
    KernelStartError,
    ModelError,
    NbagentError,
    NoSuchKernelError,
    ScriptExhaustedError,
    UsageError,
)
from .execution import ErrorInfo, Execution
from .kernel import Kernel
from .memory import Step, Task
from .models import HFInferenceModel, LiteLLMModel, Model, Reply, RetryPolicy, ScriptedModel, Usage
from .observe import Observation, Observer
from .recorder import NotebookRecorder
from .shell import ShellExecutor


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext nbagent``: register the ``%agent`` line magic and ``%%agent`` cell magic."""
    # Imported here so that ``import nbagent`` stays light.
    from .magic import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext nbagent``: remove the magics."""
    from .magic import unload_ipython_extension as unload

    unload(shell)


__all__ = [
    "Agent",
    "ErrorInfo",
    "Execution",
    "Executor",
    "HFInferenceModel",
    "Kernel",
    "KernelError",
    "KernelStartError",
    "LiteLLMModel",
    "Model",
    "ModelError",
    "NbagentError",
    "NoSuchKernelError",
    "NotebookRecorder",
    "Observation",
    "Observer",
    "Reply",
    "RetryPolicy",
    "RunListener",
    "RunResult",
    "ScriptExhaustedError",
    "ScriptedModel",
    "ShellExecutor",
    "Step",
    "Task",
    "Usage",
    "UsageError",
    "__version__",
    "load_ipython_extension",
    "unload_ipython_extension",
]
