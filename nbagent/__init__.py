"""nbagent: a code-first agent whose every step is a cell run in a real IPython kernel.

from nbagent import Agent
result = Agent(model="openai/gpt-4o-mini").run("question", files=["data.csv"], notebook="run.ipynb")
"""

from ._version import __version__
from .agent import Agent, Executor, RunListener, RunResult
from .exceptions import (
    KernelError,
    KernelStartError,
    ModelError,
    NbagentError,
    NoSuchKernelError,
    NotReproducedError,
    ScriptExhaustedError,
    UsageError,
)
from .execution import ErrorInfo, Execution
from .export import TidyResult, aexport_tidy, export_html, export_tidy, tidy_notebook
from .kernel import Kernel
from .memory import HistoryLimits, Step, Task
from .models import HFInferenceModel, LiteLLMModel, Model, Reply, RetryPolicy, ScriptedModel, Usage
from .observe import Observation, Observer
from .recorder import NotebookRecorder
from .verify import CellCheck, VerifyReport, averify_notebook, verify_notebook

__all__ = [
    "Agent",
    "CellCheck",
    "ErrorInfo",
    "Execution",
    "Executor",
    "HFInferenceModel",
    "HistoryLimits",
    "Kernel",
    "KernelError",
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
    "Reply",
    "RetryPolicy",
    "RunListener",
    "RunResult",
    "ScriptExhaustedError",
    "ScriptedModel",
    "Step",
    "Task",
    "TidyResult",
    "Usage",
    "UsageError",
    "VerifyReport",
    "__version__",
    "aexport_tidy",
    "averify_notebook",
    "export_html",
    "export_tidy",
    "tidy_notebook",
    "verify_notebook",
]
