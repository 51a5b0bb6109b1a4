"""NotebookRecorder: writes a run into an nbformat notebook as it happens.

Layout: a header markdown cell (question, model, date, data files), the setup code cell (the
kernel-side definitions, so the notebook re-runs without nbagent), then per step a markdown cell
with the thought and a code cell with the code, its outputs and ``execution_count``, and finally
an answer cell. Per-cell facts live under ``metadata.nbagent``; cells that raised are tagged
``raises-exception`` and cells that timed out or killed the kernel also ``skip-execution``, so
``jupyter nbconvert --execute`` (nbclient) re-runs the notebook top to bottom.

Every save writes a temporary file beside the target and renames it over the target, so the file
on disk is always a complete, valid notebook, whatever happens to the process. Saving is
incremental: each cell is validated and serialised once (again only when it changes), so the cost
of a save does not grow with the length of the run. What is written has the values of the host's
secret variables redacted (see :mod:`nbagent.notebook.redact`).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import textwrap
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nbformat import NotebookNode
from nbformat.v4 import new_notebook
from nbformat.v4.rwbase import split_lines
from nbformat.validator import validate as validate_schema

from .._version import __version__
from ..execution.outputs import ANSWER_MIME, Execution, display_updates
from ..records import Step, Task
from .redact import Redactor
from .safe_files import write_atomic
from .schema import KEY
from .signing import SigningKey, load_key

log = logging.getLogger("nbagent")

RAISES = "raises-exception"
SKIP = "skip-execution"

FAILED_STEP_MARK = "# nbagent: failed during the run"
"""First line of a recorded step that raised. The setup cell makes a re-run print such a step's
error rather than raise it, so Run All, nbconvert and papermill go on (papermill fails on any
error output, whatever the cell's tags). The same text is in ``kernel_code/rerun.py``."""

ANSWER_SOURCE = (
    "# The answer: the value given to final_answer() above (a re-run shows the one it computes)\n"
    "from IPython.display import Markdown\n\n"
    'Markdown(f"**Answer:** {final_answer.value}") if isinstance(final_answer.value, str) '
    "else final_answer.value"
)
"""The answer cell: it shows the answer the notebook computes, so a re-run with new parameters
(papermill -p) never leaves the old answer on the page."""


def step_code(source: str) -> str:
    """The code the model wrote, from a recorded step cell's source (without the failure mark)."""
    if source.startswith(FAILED_STEP_MARK):
        return source.split("\n", 1)[1] if "\n" in source else ""
    return source


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def answer_in(outputs: Iterable[Any]) -> Any:
    """The ``final_answer`` payload among a cell's outputs (the last one), or ``None``."""
    found = None
    for out in outputs:
        if out.get("output_type") in ("display_data", "execute_result"):
            payload = (out.get("data") or {}).get(ANSWER_MIME)
            if isinstance(payload, dict):
                found = payload
    return found


def _cell_id() -> str:
    return uuid.uuid4().hex[:8]


# Cells are built directly rather than with nbformat.v4.new_*_cell, which validates each new cell
# against the schema: the recorder validates every cell once, when it is first written.
def _markdown_cell(source: str) -> NotebookNode:
    return NotebookNode(cell_type="markdown", id=_cell_id(), metadata=NotebookNode(), source=source)


def _code_cell_of(source: str) -> NotebookNode:
    return NotebookNode(
        cell_type="code",
        id=_cell_id(),
        metadata=NotebookNode(),
        source=source,
        outputs=[],
        execution_count=None,
    )


def atomic_write_text(path: Path, text: str, errors: str = "strict") -> None:
    """Write ``text`` to ``path`` all at once, never through a symlink planted there or beside it.

    ``errors`` is the UTF-8 encoder's error handler, as for :func:`open`. See
    :func:`nbagent.notebook.safe_files.write_atomic`.
    """
    write_atomic(path, text, errors=errors)


class NotebookRecorder:
    """Builds the run's notebook and saves it atomically after every change.

    Args:
        path: where to save; ``None`` keeps the notebook in memory only.
        validate: check the notebook against the nbformat schema before each save.
        secrets: values to redact besides those of the host's secret environment variables.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        validate: bool = True,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.validate = validate
        self.secrets = [s for s in secrets if s]
        self._redactor: Redactor | None = None
        self._key: SigningKey | None = None
        self._key_failed = False  # signing failed once: do not retry (nor warn) at every save
        self._own: set[str] = set()  # ids of the cells this recorder made: only those are signed
        self._validated_head = ""
        self._seen_updates = display_updates()
        self._fragments: dict[str, tuple[tuple[Any, ...], str]] = {}
        self._ids: set[str] = set()
        self.nb: NotebookNode = new_notebook(
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python", "version": platform.python_version()},
                KEY: {"version": __version__, "runs": []},
            }
        )

    @classmethod
    def from_notebook(
        cls, nb: NotebookNode, path: str | os.PathLike[str] | None, **kwargs: Any
    ) -> NotebookRecorder:
        """A recorder that goes on with ``nb`` (a notebook nbagent wrote), saving to ``path``."""
        recorder = cls(path, **kwargs)
        recorder.nb = nb
        recorder._ids = {cell.get("id", "") for cell in nb.cells}
        return recorder

    @property
    def runs(self) -> list[dict[str, Any]]:
        """The ``metadata.nbagent.runs`` list: one entry per question asked."""
        runs: list[dict[str, Any]] = self.nb.metadata[KEY]["runs"]
        return runs

    def start_task(
        self,
        task: Task,
        model: str,
        files: dict[str, str],
        follow_up: bool,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Add the header cell of a question (``files``: name -> sha256; ``settings``: the run's
        settings, secrets left out, recorded as ``runs[i].settings``)."""
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        title = "## Follow-up: " if follow_up else "# "
        lines = [
            f"{title}{task.question}",
            "",
            f"*nbagent {__version__} · model `{model}` · {when.isoformat()}*",
        ]
        if files:
            lines += ["", "Data files (in the notebook's folder):", ""]
            lines += [f"- `{name}` (sha256 `{digest[:12]}…`)" for name, digest in files.items()]
        self._add(_markdown_cell("\n".join(lines)), role="task")
        self.runs.append(
            {
                "question": task.question,
                "model": model,
                "started": when.isoformat(),
                "files": [{"name": n, "sha256": d} for n, d in files.items()],
                "status": "running",
            }
        )
        if settings is not None:
            self.runs[-1]["settings"] = dict(settings)

    def add_setup(self, execution: Execution, tools: bool = False) -> None:
        """Add the setup cell (``final_answer``, the seed), or with ``tools`` the tools' cell after it.

        The setup cell is short enough to read and stays open; the tools' cell (long definitions a
        reader rarely needs, role ``tools``) is collapsed in the notebook UIs. Both are tagged
        ``nbagent-setup``.
        """
        cell = self._code_cell(execution)
        if tools:
            cell.metadata["jupyter"] = {"source_hidden": True}
        cell.metadata["tags"] = ["nbagent-setup"]
        self._add(cell, role="tools" if tools else "setup")

    def add_parameters(self, execution: Execution, parameters: dict[str, Any]) -> None:
        """Add the cell that sets the task's parameters, tagged ``parameters`` (papermill's tag)."""
        cell = self._code_cell(execution)
        cell.metadata["tags"] = ["parameters", *cell.metadata.get("tags", [])]
        self._add(cell, role="parameters")
        if self.runs:
            self.runs[-1]["parameters"] = dict(parameters)

    def set_environment(self, environment: dict[str, Any]) -> None:
        """Record the kernel's environment (versions, random seed policy) for re-runs."""
        self.nb.metadata[KEY]["environment"] = environment

    def add_step(self, step: Step, model: str) -> None:
        """Add a step: its thought as markdown, then its code cell (if it had code)."""
        meta = {
            "step": step.number,
            "kind": step.kind,
            "model": model,
            "reply": step.reply,
            "observation": step.observation.text,
            "observation_images": len(step.observation.images),
            "usage": step.usage.to_dict(),
            "model_duration": round(step.model_duration, 6),
        }
        label = "Final step" if step.kind == "final" else f"Step {step.number}"
        thought = step.thought or "*(no thought given)*"
        if step.execution is None:
            meta["status"] = "no-code"
            self._add(
                _markdown_cell(f"**{label}.** {thought}\n\n*(the reply had no code to run)*"),
                role="thought",
                **meta,
            )
            return
        self._add(_markdown_cell(f"**{label}.** {thought}"), role="thought", step=step.number)
        cell = self._code_cell(step.execution)
        error = step.execution.error
        if step.execution.status == "error" and step.execution.execution_count is not None and error:
            # It ran and raised: the recorded error stays below it; a re-run prints it and goes on.
            mark = f"{FAILED_STEP_MARK} ({error.name}); a re-run prints its error and goes on"
            cell.source = f"{mark}\n{cell.source}"
        self._add(cell, role="step", **meta, **step.execution.to_dict())

    def annotate_last(self, **meta: Any) -> None:
        """Add facts to the ``metadata.nbagent`` of the last cell (e.g. the code a user edited)."""
        self.nb.cells[-1].metadata[KEY].update(meta)
        self.invalidate(self.nb.cells[-1])

    def add_answer(self, text: str, execution: Execution | None = None) -> None:
        """Add the closing answer cell: with ``execution`` (of :data:`ANSWER_SOURCE`) a code cell
        that shows the answer the notebook computes, else a markdown cell stating ``text``."""
        if execution is not None:
            self._add(self._code_cell(execution), role="answer")
            return
        body = (
            f"**Answer:** {text}" if "\n" not in text.strip() else f"**Answer:**\n\n```\n{text.strip()}\n```"
        )
        self._add(_markdown_cell(body), role="answer")

    def add_marker(self, text: str) -> None:
        """Add a markdown cell reporting how a run ended abnormally (papermill's error marker)."""
        self._add(
            _markdown_cell(f'<div class="alert alert-warning">\n\n**nbagent:** {text}\n\n</div>'),
            role="marker",
        )

    def add_note(self, markdown: str, role: str, **meta: Any) -> None:
        """Add a markdown cell (a plan, the host calls of a step...) with ``metadata.nbagent.role``."""
        self._add(_markdown_cell(markdown), role=role, **meta)

    def add_cell(self, cell: NotebookNode, role: str, **meta: Any) -> None:
        """Add a prepared cell with ``metadata.nbagent.role`` (it stays live: later edits are saved)."""
        self._add(cell, role=role, **meta)

    def finish_task(self, **facts: Any) -> None:
        """Record the outcome of the current question in the notebook metadata."""
        if self.runs:
            self.runs[-1].update(facts)

    def save(self) -> None:
        """Write the notebook atomically (no-op without a path)."""
        if self.path is None:
            return
        # A lone surrogate (from a model reply or a kernel output) cannot be encoded as UTF-8;
        # written as a \uXXXX escape it reads back as the same JSON string.
        atomic_write_text(self.path, self.to_json(), errors="backslashreplace")

    def to_json(self) -> str:
        """The notebook as nbformat writes it (lines split, keys sorted, one-space indent).

        The values of the host's secret variables (and of ``secrets``) are redacted.
        """
        if self._redactor is None:
            # Secrets are those of the environment when the notebook is first written.
            self._redactor = Redactor.from_environment(extra=self.secrets)
        text = self._unredacted_json()
        return self._redactor.redact_json(text)

    def _unredacted_json(self) -> str:
        top = {k: v for k, v in self.nb.items() if k != "cells"}
        head = json.dumps({**top, "cells": []}, indent=1, sort_keys=True, ensure_ascii=False)
        if self.validate and head != self._validated_head:
            validate_schema({**top, "cells": []}, version=4, version_minor=5)
            self._validated_head = head
        # Unless some display was updated since the last save, a cached cell only needs a cheap
        # check; otherwise every cell's outputs are compared too.
        updates = display_updates()
        thorough, self._seen_updates = updates != self._seen_updates, updates
        cells = ",\n".join(self._fragment(cell, thorough) for cell in self.nb.cells)
        body = f'"cells": [\n{cells}\n ]' if cells else '"cells": []'
        # "cells" sorts first among the top-level keys, so its placeholder is the first match.
        return head.replace('"cells": []', body, 1) + "\n"

    def invalidate(self, cell: NotebookNode | None = None) -> None:
        """Forget the serialised form of ``cell`` (or of every cell) after changing it in place.

        Changes to sources, outputs and execution counts are noticed without this; edits to a
        recorded cell's metadata are not.
        """
        if cell is None:
            self._fragments.clear()
        else:
            self._fragments.pop(cell.get("id", ""), None)

    def _fragment(self, cell: NotebookNode, thorough: bool = True) -> str:
        outputs = cell.get("outputs") or ()
        cached = self._fragments.get(cell.id)
        quick = (cell.get("source"), cell.get("execution_count"), len(outputs))
        if cached is not None and not thorough:
            source, count, n = cached[0][:3]
            # Sources are immutable strings: a changed source is a different object.
            if source is quick[0] and count == quick[1] and n == quick[2]:
                return cached[1]
        # update_display_data replaces an output's data dict, so its id changes with it.
        signature = (*quick, tuple((id(o.get("data")), len(o.get("text", ""))) for o in outputs))
        if cached is not None and cached[0] == signature:
            return cached[1]
        if cell.cell_type == "code" and cell.id in self._own:
            self._sign(cell)
        if self.validate:
            validate_schema(cell, ref=f"{cell.cell_type}_cell", version=4, version_minor=5)
        single = split_lines(NotebookNode(cells=[copy.deepcopy(cell)]))
        text = textwrap.indent(
            json.dumps(single.cells[0], indent=1, sort_keys=True, ensure_ascii=False), "  "
        )
        self._fragments[cell.id] = (signature, text)
        return text

    def _signing_key(self) -> SigningKey | None:
        if self._key is None and not self._key_failed:
            try:
                self._key = load_key()
            except OSError as exc:
                # Unsigned is still a good notebook; verify will say "not signed here".
                log.warning("nbagent: notebooks are not signed (%s)", exc)
                self._key_failed = True
        return self._key

    def _sign(self, cell: NotebookNode) -> None:
        """Record the keyed digests of a code cell as it will be on disk (secrets redacted)."""
        key = self._signing_key()
        if key is None:
            return
        redactor = self._redactor or Redactor({})
        meta = cell.metadata.setdefault(KEY, {})
        meta["digest"] = key.code_digest(redactor.text(cell.source))
        payload = answer_in(cell.get("outputs") or ())
        if payload is not None:
            meta["answer_digest"] = key.answer_digest(redactor.data(payload))
        else:
            meta.pop("answer_digest", None)

    def _code_cell(self, execution: Execution) -> NotebookNode:
        cell = _code_cell_of(execution.code)
        # The cell keeps the very same output objects, so a later update_display_data reaches it.
        cell.outputs = execution.outputs
        cell.execution_count = execution.execution_count
        tags = []
        if execution.status != "ok":
            tags.append(RAISES)
        # A cell that never ran (no execution count: refused, e.g. for redefining final_answer)
        # must not run on a re-run either.
        if execution.status in ("timeout", "died", "interrupted") or (
            execution.status != "ok" and execution.execution_count is None
        ):
            tags.append(SKIP)
        if tags:
            cell.metadata["tags"] = tags
        return cell

    def _add(self, cell: NotebookNode, role: str, **meta: Any) -> None:
        cell.metadata[KEY] = {"role": role, **meta}
        while cell.id in self._ids:
            cell.id = _cell_id()  # ids must be unique in a notebook
        self._ids.add(cell.id)
        self._own.add(cell.id)
        self.nb.cells.append(cell)
