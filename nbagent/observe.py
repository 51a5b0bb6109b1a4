"""From an :class:`~nbagent.Execution` to the :class:`Observation` the model reads.

The notebook keeps every output in full; the observation is a bounded text (and, for models that
take them, images) made from those outputs in order. Long text keeps its head and tail and says how
much was cut; several outputs share the budget so one flood cannot hide the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .execution import ANSWER_MIME, Execution, strip_ansi

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def escape_controls(text: str) -> str:
    """Show control characters (and lone surrogates) as ``\\xNN`` / ``\\uNNNN`` escapes.

    Models and their APIs take them badly (a NUL can make a request fail), and they carry no
    meaning a reader needs; newlines and tabs stay as they are.
    """
    text = text.replace("\r\n", "\n")

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(escape, text)


@dataclass
class Observation:
    """What the model is shown after a step: text, plus PNG images (base64) for vision models."""

    text: str
    images: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as kept in notebook metadata (images counted, not copied)."""
        return {"text": self.text, "images": len(self.images)}


def truncate_middle(text: str, limit: int) -> str:
    """Keep the head and tail of ``text`` within ``limit`` characters, marking the cut."""
    if len(text) <= limit:
        return text
    marker_room = 60
    keep = max(limit - marker_room, 0)
    head = text[: keep * 2 // 3]
    tail = text[len(text) - (keep - len(head)) :] if keep > len(head) else ""
    cut = len(text) - len(head) - len(tail)
    return f"{head}\n… [{cut:,} characters cut] …\n{tail}"


def share_budget(pieces: list[str], budget: int, floor: int = 200) -> list[str]:
    """Fit ``pieces`` into ``budget`` characters: small pieces stay whole, big ones share the rest."""
    if sum(len(p) for p in pieces) <= budget:
        return pieces
    limits = [0] * len(pieces)
    remaining = budget
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
    for n, i in enumerate(order):
        fair = max(remaining // (len(order) - n), min(floor, len(pieces[i])))
        limits[i] = min(len(pieces[i]), fair)
        remaining = max(remaining - limits[i], 0)
    return [truncate_middle(p, lim) for p, lim in zip(pieces, limits, strict=True)]


class Observer:
    """Turns executions into observations.

    Args:
        max_chars: the character budget of one observation's text.
        max_traceback_lines: how many trailing traceback lines an error keeps.
    """

    def __init__(self, max_chars: int = 6000, max_traceback_lines: int = 12) -> None:
        self.max_chars = max_chars
        self.max_traceback_lines = max_traceback_lines

    def observe(self, execution: Execution) -> Observation:
        """The observation of one step."""
        pieces: list[str] = []
        images: list[str] = []
        for out in execution.outputs:
            text = self._render_output(out, images)
            if text:
                pieces.append(text)
        if execution.status == "timeout":
            pieces.append(f"[Timed out: {execution.note}.]")
        elif execution.status == "died":
            pieces.append(f"[Kernel died: {execution.note}.]")
        if not pieces:
            pieces.append("[The code ran without output. Use print() to see values.]")
        text = escape_controls("\n".join(share_budget(pieces, self.max_chars)))
        return Observation(text=text, images=images)

    def _render_output(self, out: dict[str, Any], images: list[str]) -> str:
        kind = out.get("output_type")
        if kind == "stream":
            text = strip_ansi(out.get("text", ""))
            return text.rstrip("\n") if out.get("name") != "stderr" else "[stderr]\n" + text.rstrip("\n")
        if kind == "error":
            return self._render_error(out)
        data = out.get("data", {})
        if ANSWER_MIME in data:
            return f"[final_answer received: {data[ANSWER_MIME].get('text', '')}]"
        if "image/png" in data:
            images.append(data["image/png"])
        text = data.get("text/plain", "")
        if isinstance(text, list):
            text = "".join(text)
        if kind == "execute_result":
            return f"Out[{out.get('execution_count')}]: {text}"
        if "image/png" in data:
            return f"[image: PNG figure] {text}".rstrip()
        return text

    def _render_error(self, out: dict[str, Any]) -> str:
        lines = strip_ansi("".join(out.get("traceback", []))).rstrip("\n").splitlines()
        if len(lines) > self.max_traceback_lines:
            dropped = len(lines) - self.max_traceback_lines
            lines = [
                f"[{dropped} earlier traceback lines cut]",
                *lines[-self.max_traceback_lines :],
            ]
        head = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
        body = "\n".join(lines)
        return body if body.endswith(head) else f"{body}\n{head}"
