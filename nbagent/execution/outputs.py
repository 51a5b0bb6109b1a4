"""What one run of a cell produced, and how kernel messages become notebook outputs.

:class:`Execution` is the record every executor returns. :class:`OutputCollector` turns the
kernel's iopub messages into nbformat outputs with the semantics JupyterLab and nbclient use:
consecutive stream messages of the same name are merged (with ``\\r`` and ``\\b`` applied),
``clear_output(wait=True)`` clears just before the next output, and ``update_display_data``
rewrites every earlier output that carries the same ``display_id`` -- including outputs of earlier
cells, which is why one collector lives as long as the kernel session.

Every message is checked before it is applied (:func:`message_problem`): the kernel runs model
code, which can send anything on iopub (``get_ipython().kernel.session.send(...)``). A message of
the wrong shape -- content that is not an object, a stream without a valid name, display data
that is not a mime bundle, an error whose traceback is not a list of strings -- becomes a note on
the cell's stderr saying what was left out, and never an exception in the host.

A cell's output is bounded, because a step that prints in a loop must not fill the host's memory
or the notebook: a stream keeps its first and last ``max_stream_chars / 2`` characters with the cut
marked, and rich outputs beyond ``max_outputs`` or ``max_data_chars`` are left out, counted in
one note output. Errors are always kept.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from nbformat import NotebookNode, ValidationError
from nbformat.v4 import output_from_msg
from nbformat.validator import validate as validate_schema

Status = Literal["ok", "error", "timeout", "died", "interrupted"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BACKSPACE = re.compile(r"[^\n]\x08")
_CARRIAGE_RETURN = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)

ANSWER_MIME = "application/vnd.nbagent.answer+json"
"""Mime type under which the kernel's ``final_answer`` hands its value to the host."""


MAX_ERROR_CHARS = 200_000
"""Characters an error output keeps (name, message and traceback together); the rest is cut."""

_APPLIED = ("stream", "display_data", "execute_result", "error", "clear_output", "update_display_data")


def _bundle_problem(content: dict[str, Any]) -> str | None:
    data = content.get("data")
    if not isinstance(data, dict):
        return "its data is not a mime bundle (an object of type -> value)"
    for mime, value in data.items():
        if not isinstance(mime, str) or "/" not in mime:
            return f"{str(mime)[:40]!r} is not a mime type"
        json_like = mime.endswith("json")
        if not json_like and not isinstance(value, str):
            return f"its {mime[:60]} value is a {type(value).__name__}, not text"
    if not isinstance(content.get("metadata", {}), dict):
        return "its metadata is not an object"
    transient = content.get("transient", {})
    if not isinstance(transient, dict) or not isinstance(transient.get("display_id", ""), str):
        return "its transient display_id is not a string"
    return None


def message_problem(msg: Any) -> str | None:
    """Why an iopub message cannot be applied to a cell's outputs, or ``None`` when it can.

    Message types nbagent does not apply (``status``, ``comm_msg``, unknown ones) have no problem:
    they are ignored.
    """
    if not isinstance(msg, dict):
        return "the message is not an object"
    header, content = msg.get("header"), msg.get("content")
    if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
        return "its header has no message type"
    msg_type = header["msg_type"]
    if msg_type not in _APPLIED:
        return None
    if not isinstance(content, dict):
        return "its content is not an object"
    if msg_type == "stream":
        if content.get("name") not in ("stdout", "stderr"):
            return "its stream name is neither stdout nor stderr"
        if not isinstance(content.get("text", ""), str):
            return "its text is not a string"
    elif msg_type in ("display_data", "execute_result", "update_display_data"):
        problem = _bundle_problem(content)
        if problem:
            return problem
        count = content.get("execution_count")
        if msg_type == "execute_result" and not (count is None or (isinstance(count, int) and count >= 0)):
            return "its execution_count is not a whole number"
    elif msg_type == "error":
        if not isinstance(content.get("ename", ""), str) or not isinstance(content.get("evalue", ""), str):
            return "its ename or evalue is not a string"
        traceback = content.get("traceback", [])
        if not isinstance(traceback, list) or not all(isinstance(line, str) for line in traceback):
            return "its traceback is not a list of strings"
    return None


def _bounded_error(out: NotebookNode) -> None:
    budget = MAX_ERROR_CHARS
    for key in ("ename", "evalue"):
        out[key] = str(out.get(key, ""))[: budget // 4]
        budget -= len(out[key])
    lines: list[str] = []
    for line in out.get("traceback", []):
        if budget <= 0:
            lines.append("[nbagent: the rest of this traceback was left out]")
            break
        lines.append(strip_ansi(line)[:budget])
        budget -= len(lines[-1])
    out["traceback"] = lines


def strip_ansi(text: str) -> str:
    """Remove ANSI colour and cursor sequences."""
    return _ANSI.sub("", text)


def apply_terminal_controls(text: str) -> str:
    """Apply ``\\b`` and ``\\r`` the way a terminal (and JupyterLab) would show the text."""
    previous = None
    while previous != text:
        previous = text
        text = _BACKSPACE.sub("", text)
    return _CARRIAGE_RETURN.sub("", text)


@dataclass
class ErrorInfo:
    """An exception raised by a cell: its class name, message and plain-text traceback."""

    name: str
    value: str
    traceback: str

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


@dataclass
class Execution:
    """The result of running one piece of code in a kernel (or in the user's own shell).

    ``outputs`` are nbformat output nodes exactly as a notebook stores them. ``status`` is
    ``"ok"``, ``"error"`` (the code raised), ``"timeout"`` (interrupted after ``timeout`` seconds),
    ``"died"`` (the kernel process went away) or ``"interrupted"`` (the run was cancelled, e.g. by
    Ctrl-C, while the code ran). ``restarted`` says the kernel was restarted
    while handling a timeout or a death, so the state of earlier steps was lost unless restored.
    """

    code: str
    outputs: list[NotebookNode] = field(default_factory=list)
    status: Status = "ok"
    execution_count: int | None = None
    error: ErrorInfo | None = None
    started: float = 0.0
    duration: float = 0.0
    restarted: bool = False
    note: str = ""
    limits: list[str] = field(default_factory=list)
    """Whole-run limits of the jail this step ran into (disk, processes), each said in one sentence."""
    expressions: dict[str, str] = field(default_factory=dict)
    """The ``text/plain`` values of the ``user_expressions`` asked for with the code (a kernel
    evaluates them right after code that succeeded, in the same request)."""

    @property
    def ok(self) -> bool:
        """True when the code ran to the end without raising."""
        return self.status == "ok"

    def answer_bundle(self, key: str | None = None) -> dict[str, Any] | None:
        """The payload of the last ``final_answer(...)`` call in this execution, if any.

        ``key``: the run's answer key; a payload without it (displayed by hand, say) is ignored.
        """
        found = None
        for out in self.outputs:
            if out.get("output_type") in ("display_data", "execute_result"):
                data = out.get("data", {})
                payload = data.get(ANSWER_MIME)
                if isinstance(payload, dict) and (key is None or payload.get("key") == key):
                    found = dict(payload)
                    if payload.get("value_in"):  # an image answer is stored once, as the shown image
                        found["value"] = data.get(payload["value_in"])
        return found

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (outputs excluded) for logs and metadata."""
        return {
            "status": self.status,
            "execution_count": self.execution_count,
            "error": None if self.error is None else {"name": self.error.name, "value": self.error.value},
            "duration": round(self.duration, 6),
            "restarted": self.restarted,
        }


class _StreamText:
    """The text of one stream output, built from any number of messages in linear time.

    ``\\r`` and ``\\b`` act within a line, so only the unfinished last line is ever re-read; a
    line longer than ``LONG_LINE`` is taken as final. Past ``limit`` characters the first half is
    kept, then the last half, with the cut marked. The output's ``text`` is refreshed at once
    while it is small, else at most every ``REFRESH`` seconds and on :meth:`flush`.
    """

    LONG_LINE = 1 << 16
    SMALL = 1 << 16
    REFRESH = 0.2

    def __init__(self, out: NotebookNode, limit: int) -> None:
        self.out = out
        self.half = max(limit // 2, 1)
        self.head: list[str] = []
        self.head_len = 0
        self.tail: deque[str] = deque()
        self.tail_len = 0
        self.cut = 0
        self.line = ""
        self.dirty = False
        self.rendered_at = 0.0

    def add(self, text: str) -> None:
        line = self.line + text
        if "\r" in line or "\b" in line:
            line = apply_terminal_controls(line)
        end = line.rfind("\n") + 1
        if len(line) - end > self.LONG_LINE:
            end = len(line)
        if end:
            self._keep(line[:end])
        self.line = line[end:]
        self.dirty = True
        now = time.monotonic()
        if self.head_len + self.tail_len < self.SMALL or now - self.rendered_at >= self.REFRESH:
            self.flush(now)

    def _keep(self, text: str) -> None:
        room = self.half - self.head_len
        if room > 0:
            self.head.append(text[:room])
            self.head_len += len(self.head[-1])
            text = text[room:]
        if not text:
            return
        self.tail.append(text)
        self.tail_len += len(text)
        while self.tail_len - len(self.tail[0]) >= self.half:
            self.cut += len(self.tail[0])
            self.tail_len -= len(self.tail.popleft())
        excess = self.tail_len - self.half
        if excess > 0:
            self.tail[0] = self.tail[0][excess:]
            self.tail_len -= excess
            self.cut += excess

    def flush(self, now: float | None = None) -> None:
        """Bring the output's ``text`` up to date."""
        if not self.dirty:
            return
        head = "".join(self.head)
        self.head = [head]
        tail = "".join(self.tail)
        self.tail = deque([tail] if tail else [])
        marker = f"\n… [{self.cut:,} characters of output left out by nbagent] …\n" if self.cut else ""
        self.out["text"] = head + marker + tail + self.line
        self.dirty = False
        self.rendered_at = time.monotonic() if now is None else now


def _data_size(out: NotebookNode) -> int:
    data = out.get("data") or {}
    return sum(len(v) if isinstance(v, str) else len(str(v)) for v in data.values())


_display_updates = 0


def display_updates() -> int:
    """How many recorded outputs ``update_display_data`` has changed in this process so far.

    Notebook writers compare it between saves: while it stays the same, no output of an earlier
    cell has changed, and their cached serialisations of those cells are still right.
    """
    return _display_updates


class OutputCollector:
    """Builds notebook outputs from kernel iopub messages.

    One collector per kernel session: it remembers which outputs carry which ``display_id`` so a
    later ``update_display_data`` can change them wherever they are.

    Args:
        max_stream_chars: characters one stream output keeps (head and tail); more are cut.
        max_outputs: rich outputs (displays, results) one cell keeps; later ones are left out.
        max_data_chars: characters of rich output data one cell keeps; later outputs are left out.
    """

    def __init__(
        self,
        max_stream_chars: int = 20_000_000,
        max_outputs: int = 1_000,
        max_data_chars: int = 20_000_000,
    ) -> None:
        self.max_stream_chars = max_stream_chars
        self.max_outputs = max_outputs
        self.max_data_chars = max_data_chars
        self._displays: dict[str, list[NotebookNode]] = {}
        self._outputs: list[NotebookNode] = []
        self._clear_before_next = False
        self._stream: _StreamText | None = None
        self._rich_count = 0
        self._rich_chars = 0
        self._left_out = 0
        self._left_out_chars = 0
        self._left_out_note: NotebookNode | None = None

    def begin(self) -> list[NotebookNode]:
        """Start collecting for a new cell; returns the (live) list outputs are appended to."""
        self.finish()
        self._outputs = []
        self._clear_before_next = False
        self._stream = None
        self._rich_count = self._rich_chars = self._left_out = self._left_out_chars = 0
        self._left_out_note = None
        return self._outputs

    def handle(self, msg: dict[str, Any]) -> None:
        """Apply one iopub message of the running cell; a malformed one becomes a note on stderr."""
        problem = message_problem(msg)
        if problem is not None:
            self._refuse(msg, problem)
            return
        msg_type = msg["header"]["msg_type"]
        content = msg["content"]
        transient = content.get("transient") or {}
        display_id = transient.get("display_id")

        if msg_type == "clear_output":
            if content.get("wait"):
                self._clear_before_next = True
            else:
                self._clear()
            return
        if msg_type == "update_display_data":
            if display_id:
                self._update_display(display_id, msg)
            return
        if msg_type not in ("stream", "display_data", "execute_result", "error"):
            return

        if self._clear_before_next:
            self._clear()
            self._clear_before_next = False

        if msg_type == "stream":
            self._append_stream(content["name"], content.get("text", ""))
            return
        self.finish()
        try:
            out = output_from_msg(msg)
            if msg_type == "error":
                _bounded_error(out)
            validate_schema(out, ref="output", version=4, version_minor=5)
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            self._refuse(msg, f"it does not make a valid notebook output ({str(exc).splitlines()[0][:200]})")
            return
        if msg_type != "error" and not self._within_budget(out):
            return
        if display_id:
            # A new display with a known id also updates the earlier ones (JupyterLab behaviour).
            self._update_display(display_id, msg)
            self._displays.setdefault(display_id, []).append(out)
        self._outputs.append(out)

    def _refuse(self, msg: Any, problem: str) -> None:
        header = msg.get("header") if isinstance(msg, dict) else None
        kind = header.get("msg_type") if isinstance(header, dict) else None
        kind = kind if isinstance(kind, str) else "unknown"
        self._append_stream(
            "stderr",
            f"[nbagent: the kernel sent a malformed {kind[:40]!r} message ({problem}); it was left out]\n",
        )

    def finish(self) -> None:
        """Bring the cell's outputs up to date; call when the cell is done (before reading them)."""
        if self._stream is not None:
            self._stream.flush()

    def _append_stream(self, name: str, text: str) -> None:
        last = self._outputs[-1] if self._outputs else None
        if (
            self._stream is None
            or last is not self._stream.out
            or last.get("output_type") != "stream"
            or last.get("name") != name
        ):
            self.finish()
            out = NotebookNode(output_type="stream", name=name, text="")
            self._outputs.append(out)
            self._stream = _StreamText(out, self.max_stream_chars)
        self._stream.add(text)

    def _within_budget(self, out: NotebookNode) -> bool:
        size = _data_size(out)
        if self._rich_count < self.max_outputs and self._rich_chars + size <= self.max_data_chars:
            self._rich_count += 1
            self._rich_chars += size
            return True
        self._left_out += 1
        self._left_out_chars += size
        text = (
            f"[nbagent: {self._left_out:,} more output(s) of this cell ({self._left_out_chars:,} "
            f"characters) were left out: over {self.max_outputs:,} outputs or "
            f"{self.max_data_chars:,} characters]"
        )
        # A new data dict each time, so notebook writers that cache cells see the change.
        data = NotebookNode({"text/plain": text})
        if self._left_out_note is None:
            self._left_out_note = NotebookNode(output_type="display_data", data=data, metadata={})
            self._outputs.append(self._left_out_note)
        else:
            self._left_out_note["data"] = data
        return False

    def _update_display(self, display_id: str, msg: dict[str, Any]) -> None:
        global _display_updates
        content = msg["content"]
        for out in self._displays.get(display_id, []):
            out["data"] = NotebookNode(content.get("data", {}))
            out["metadata"] = NotebookNode(content.get("metadata", {}))
            _display_updates += 1

    def _clear(self) -> None:
        cleared = {id(o) for o in self._outputs}
        for did, outs in list(self._displays.items()):
            self._displays[did] = [o for o in outs if id(o) not in cleared]
        self._outputs.clear()
        # What is cleared no longer counts: a loop that redraws one figure keeps its budget.
        self._stream = None
        self._left_out_note = None
        self._rich_count = self._rich_chars = self._left_out = self._left_out_chars = 0


def error_from_outputs(outputs: list[NotebookNode]) -> ErrorInfo | None:
    """The last error output of a cell as an :class:`ErrorInfo`, if there is one."""
    for out in reversed(outputs):
        if out.get("output_type") == "error":
            return ErrorInfo(
                name=out.get("ename", ""),
                value=out.get("evalue", ""),
                traceback=strip_ansi("\n".join(out.get("traceback", []))),
            )
    return None
