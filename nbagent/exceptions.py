"""Exceptions raised by nbagent.

Every exception nbagent raises on purpose derives from :class:`NbagentError`::

    NbagentError
    ├── UsageError            bad input from the user: a flag, a file, a model string
    │   ├── UnknownSettingError    a setting name nbagent does not know (also a TypeError)
    │   ├── ToolDefinitionError    a tool's code cannot be used (no docstring, untyped, not self-contained)
    │   ├── ToolRequirementError   a package a tool declares is missing where the tool runs
    │   └── UntrustedToolError     loading a shared tool (it runs code) without trust_remote_code=True
    ├── ModelError            the model could not give a reply (after retries)
    │   └── ScriptExhaustedError   a scripted model has no replies left
    ├── KernelError           the kernel could not be started or talked to
    │   ├── NoSuchKernelError      the kernel name is not in kernels/ or Jupyter's kernel specs
    │   ├── KernelStartError       the kernel process did not come up
    │   ├── SandboxUnavailableError  the jail cannot be built here (also a UsageError: exit 2)
    │   └── KernelDiedError        the kernel died (or hung) more often than a run allows
    ├── NotReproducedError    a notebook made from another (tidy export) does not reproduce it
    └── StopRun               raised by an approval callback to end the run (status "stopped")

What happens *inside* a step (an exception, a timeout, the kernel dying) is not raised: it is
reported in the step's :class:`~nbagent.Execution` and shown to the model as an observation.
"""

from __future__ import annotations

from typing import Any


class NbagentError(Exception):
    """Base class of every error nbagent raises on purpose."""


class UsageError(NbagentError):
    """Raised when an input given by the user is wrong; the message says which and what to do."""


class UnknownSettingError(UsageError, TypeError):
    """Raised for a setting name that is not one of :class:`~nbagent.AgentConfig`'s; the message
    names the nearest valid one. A ``TypeError`` too, like any unknown keyword argument."""


class ModelError(NbagentError):
    """Raised when the model fails to reply, after retrying transient failures."""


class ScriptExhaustedError(ModelError):
    """Raised when a scripted model is asked for more replies than its script holds."""


class KernelError(NbagentError):
    """Raised when a kernel cannot be started, restarted or reached."""


class NoSuchKernelError(KernelError, UsageError):
    """Raised when a kernel name is neither in ``kernels/`` nor among Jupyter's kernel specs."""


class KernelStartError(KernelError):
    """Raised when the kernel process does not become ready in time."""


class SandboxUnavailableError(KernelError, UsageError):
    """Raised before a jailed kernel starts when this machine cannot build the jail (no bubblewrap,
    no namespaces, not Linux); the message says what is missing and how to get it or opt out."""


class KernelDiedError(KernelError):
    """Raised when a run's kernel had to be restarted more than ``max_restarts`` times.

    :meth:`Agent.run <nbagent.Agent.run>` catches it and ends the run with status ``"kernel_died"``.
    """


class NotReproducedError(NbagentError):
    """Raised when a tidy export does not reproduce its source notebook; nothing is written.

    ``report`` is the :class:`~nbagent.repro.verify.VerifyReport` saying which cells differ.
    """

    # ``Any``, not VerifyReport: this module is the bottom layer and imports nothing of nbagent.
    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class ToolDefinitionError(UsageError):
    """Raised when a tool cannot be built from its code; the message says what to change."""


class ToolRequirementError(UsageError):
    """Raised at start when a package a tool declares is not installed where the tool runs."""


class UntrustedToolError(UsageError):
    """Raised when a shared tool is loaded without ``trust_remote_code=True`` (loading runs its code)."""


class StopRun(NbagentError):
    """Raise it from an ``approve`` callback to end the run: its status becomes ``"stopped"``."""
