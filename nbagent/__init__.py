"""nbagent: a code-first agent whose every step is a cell run in a real IPython kernel.

from nbagent import Agent
result = Agent(model="openai/gpt-4o-mini").run("question", files=["data.csv"], notebook="run.ipynb")
"""

from ._version import __version__
from .agent import Agent, Executor, RunListener, RunResult
from .exceptions import (
    KernelDiedError,
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
from .sandbox import Sandbox

__all__ = [
    "Agent",
    "ErrorInfo",
    "Execution",
    "Executor",
    "HFInferenceModel",
    "Kernel",
    "KernelDiedError",
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
    "Sandbox",
    "ScriptExhaustedError",
    "ScriptedModel",
    "Step",
    "Task",
    "Usage",
    "UsageError",
    "__version__",
]
