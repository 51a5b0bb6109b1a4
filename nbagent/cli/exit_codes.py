"""The exit codes of the ``nbagent`` command (what each means is in the package docstring)."""

from __future__ import annotations

EXIT_OK, EXIT_NO_ANSWER, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
