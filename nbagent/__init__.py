"""nbagent: a code-first agent whose every step is a cell run in a real IPython kernel.

from nbagent import Agent
result = Agent(model="openai/gpt-4o-mini").run("question", files=["data.csv"], notebook="run.ipynb")
"""

from ._version import __version__
from .agent import Agent, Executor, RunListener, RunResult
from .bridge import HostCall
from .default_tools import WebSearchTool
from .exceptions import (
    KernelError,
    KernelStartError,
    ModelError,
    NbagentError,
    NoSuchKernelError,
    ScriptExhaustedError,
    ToolDefinitionError,
    ToolRequirementError,
    UntrustedToolError,
    UsageError,
)
from .execution import ErrorInfo, Execution
from .kernel import Kernel
from .memory import Plan, Step, Task
from .models import HFInferenceModel, LiteLLMModel, Model, Reply, RetryPolicy, ScriptedModel, Usage
from .observe import Observation, Observer
from .recorder import NotebookRecorder
from .tool_sharing import load_tool
from .tools import Tool, ToolParameter, ToolSpec, tool

__all__ = [
    "Agent",
    "ErrorInfo",
    "Execution",
    "Executor",
    "HFInferenceModel",
    "HostCall",
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
    "Plan",
    "Reply",
    "RetryPolicy",
    "RunListener",
    "RunResult",
    "ScriptExhaustedError",
    "ScriptedModel",
    "Step",
    "Task",
    "Tool",
    "ToolDefinitionError",
    "ToolParameter",
    "ToolRequirementError",
    "ToolSpec",
    "UntrustedToolError",
    "Usage",
    "UsageError",
    "WebSearchTool",
    "__version__",
    "load_tool",
    "tool",
]
