"""From an :class:`~nbagent.Execution` to the :class:`Observation` the model reads.

The notebook keeps every output in full; the observation is a bounded text (and, for models that
take them, images) made from those outputs in order:

- DataFrames, Series and figures are read from the compact summary the kernel-side formatters
  attach to them (``text/x-nbagent-summary``: shape, columns, first and last rows; plot kind,
  title, axes, legend), computed from the real object rather than re-parsed from HTML;
- other rich outputs give their best text form (Markdown, HTML with tables reduced to text,
  JSON); PNG and JPEG images are kept for vision models and described in the text;
- errors give their name, message, the offending line of the step's code and the last frames of a
  plain traceback, without the library internals in between;
- the text fits a budget in characters or (estimated) tokens: long text keeps its head and tail
  and says how much was cut, and several outputs share the budget so one flood cannot hide the
  others.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from ..exceptions import UsageError
from ..execution.outputs import ANSWER_MIME, Execution, strip_ansi
from ..models.base import estimate_tokens
from ..records import Observation

SUMMARY_MIME = "text/x-nbagent-summary"
"""Mime type of the compact summaries the kernel-side formatters attach to tables and figures."""

_DEFAULT_REPR = re.compile(r"^<[\w.]+( object)? at 0x[0-9a-f]+>$|^<[\w.]+ object>$")


# C0 controls but newline and tab, DEL, C1 controls (U+009B is a one-character CSI to many
# terminals) and lone surrogates.
MAX_DECODED_PIXELS = 40_000_000
"""Images with more pixels are described to the model but not decoded (or shown) on the host."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def escape_controls(text: str) -> str:
    """Show control characters (and lone surrogates) as ``\\xNN`` / ``\\uNNNN`` escapes.

    Models and their APIs take them badly (a NUL can make a request fail), and they carry no
    meaning a reader needs; newlines and tabs stay as they are. It is also the one filter for
    everything nbagent prints on a terminal (answers, errors, reports): text a kernel made could
    otherwise clear the screen, retitle the window or write the clipboard (OSC 52).
    """
    text = text.replace("\r\n", "\n")

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(escape, text)


def truncate_middle(text: str, limit: int) -> str:
    """Keep the head and tail of ``text`` within about ``limit`` characters, marking the cut.

    The cut falls on line boundaries when that loses little, and the marker says how many
    characters (and whole lines) were dropped.
    """
    if len(text) <= limit:
        return text
    keep = max(limit - 60, 0)  # room for the marker
    head_end = keep * 2 // 3
    tail_start = len(text) - (keep - head_end)
    newline = text.rfind("\n", 0, head_end)
    if newline > head_end * 3 // 4:
        head_end = newline + 1
    newline = text.find("\n", tail_start)
    if newline != -1 and newline - tail_start < (len(text) - tail_start) // 4:
        tail_start = newline + 1
    head, tail = text[:head_end], text[tail_start:]
    cut = text[head_end:tail_start]
    lines = cut.count("\n")
    what = f"{lines:,} lines ({len(cut):,} characters)" if lines > 1 else f"{len(cut):,} characters"
    return f"{head.rstrip(chr(10))}\n… [{what} cut] …\n{tail}"


def share_budget(pieces: list[str], budget: int, floor: int = 200) -> list[str]:
    """Fit ``pieces`` into ``budget`` characters: small pieces stay whole, big ones share the rest.

    When there are more pieces than the budget can show at ``floor`` characters each, the
    first and last ones are kept and the middle ones are replaced by a count.
    """
    if sum(len(p) for p in pieces) <= budget:
        return pieces
    most = max(budget // floor, 2)
    if len(pieces) > most:
        first = most // 2
        last = most - first - 1
        dropped = len(pieces) - first - last
        pieces = [*pieces[:first], f"… [{dropped:,} outputs not shown] …", *pieces[len(pieces) - last :]]
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
        max_chars: the budget of one observation's text, in characters.
        max_tokens: the budget in tokens instead (counted with ``count_tokens``); when set, it
            replaces ``max_chars``.
        count_tokens: how tokens are counted for ``max_tokens`` (default
            :func:`~nbagent.models.base.estimate_tokens`; pass a real tokenizer's
            ``len(encode(text))`` to be exact).
        max_traceback_lines: the lines an error keeps when its traceback cannot be parsed.
        library_frames: how many of the innermost library frames (outside the notebook's own
            code) an error's traceback keeps.
        max_image_side: larger images are scaled down to this many pixels on their longer side
            before they are sent to a vision model (``None``: never).
    """

    def __init__(
        self,
        max_chars: int = 6000,
        max_traceback_lines: int = 12,
        *,
        max_tokens: int | None = None,
        count_tokens: Callable[[str], int] = estimate_tokens,
        library_frames: int = 2,
        max_image_side: int | None = 1568,
    ) -> None:
        if max_chars < 200:
            raise UsageError(f"max_chars must be at least 200, not {max_chars}")
        if max_tokens is not None and max_tokens < 50:
            raise UsageError(f"max_tokens must be at least 50, not {max_tokens}")
        if library_frames < 0:
            raise UsageError(f"library_frames cannot be negative ({library_frames})")
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self.max_traceback_lines = max_traceback_lines
        self.library_frames = library_frames
        self.max_image_side = max_image_side

    def observe(self, execution: Execution) -> Observation:
        """The observation of one step."""
        pieces: list[str] = []
        images: list[str] = []
        for out in execution.outputs:
            text = self._render_output(out, execution, images)
            if text:
                pieces.append(text)
        if execution.status == "timeout":
            pieces.append(f"[Timed out: {execution.note}.]")
        elif execution.status == "died":
            pieces.append(f"[Kernel died: {execution.note}.]")
        elif execution.status == "error" and execution.note:
            pieces.append(f"[{execution.note[:1].upper()}{execution.note[1:]}.]")
        for limit in execution.limits:
            pieces.append(f"[Limit: {limit}]")
        if not pieces:
            pieces.append("[The code ran without output. Use print() to see values.]")
        return Observation(text=escape_controls(self.fit(pieces)), images=images)

    def fit(self, pieces: list[str]) -> str:
        """Join ``pieces`` (one per output) within the budget."""
        if self.max_tokens is None:
            return "\n".join(share_budget(pieces, self.max_chars))
        full = "\n".join(pieces)
        tokens = self.count_tokens(full)
        if tokens <= self.max_tokens:
            return full
        # Characters per token vary with the content (tables cost more): aim, then correct.
        budget = int(len(full) * self.max_tokens / tokens)
        text = full
        for _ in range(4):
            text = "\n".join(share_budget(pieces, max(budget, 200)))
            tokens = self.count_tokens(text)
            if tokens <= self.max_tokens:
                break
            budget = int(budget * self.max_tokens / tokens * 0.95)
        return text

    # -- one output --------------------------------------------------------------------------

    def _render_output(self, out: dict[str, Any], execution: Execution, images: list[str]) -> str:
        kind = out.get("output_type")
        if kind == "stream":
            text = strip_ansi(_text(out.get("text", ""))).rstrip("\n")
            return "[stderr]\n" + text if out.get("name") == "stderr" else text
        if kind == "error":
            return self.render_error(out, execution)
        if kind not in ("display_data", "execute_result"):
            return ""
        text = self._render_data(out.get("data", {}), images)
        if kind == "execute_result" and text:
            return f"Out[{out.get('execution_count')}]: {text}"
        return text

    def _render_data(self, data: dict[str, Any], images: list[str]) -> str:
        if ANSWER_MIME in data:
            text = str(data[ANSWER_MIME].get("text", ""))
            return f"[final_answer received: {truncate_middle(text, 1000)}]"
        plain = _text(data.get("text/plain", ""))
        informative_plain = bool(plain) and not _DEFAULT_REPR.match(plain.strip())
        lines: list[str] = []
        mime = next((m for m in ("image/png", "image/jpeg") if m in data), None)
        if mime is not None:  # one image per output (PIL images offer both PNG and JPEG)
            described = self._take_image(_text(data[mime]), mime, images)
            if SUMMARY_MIME not in data:
                lines.append(described)
        if "image/svg+xml" in data and not lines:
            lines.append("[image: SVG, shown in the notebook]")
        if SUMMARY_MIME in data:
            lines.append(_text(data[SUMMARY_MIME]))
        elif "text/markdown" in data:
            lines.append(_text(data["text/markdown"]))
        elif informative_plain and not lines:
            lines.append(plain)
        elif "text/html" in data:
            lines.append(html_to_text(_text(data["text/html"])))
        elif "application/json" in data:
            lines.append(json.dumps(data["application/json"], ensure_ascii=False, default=str))
        elif "text/latex" in data:
            lines.append(_text(data["text/latex"]))
        elif informative_plain:
            lines.append(plain)
        elif not lines:
            others = ", ".join(sorted(k for k in data if k != "text/plain")) or "no text form"
            lines.append(f"[rich output ({others}), shown in the notebook] {plain}".rstrip())
        return "\n".join(line for line in lines if line)

    def _take_image(self, b64: str, mime: str, images: list[str]) -> str:
        b64 = "".join(b64.split())
        size = image_size(b64)
        label = "PNG" if mime == "image/png" else "JPEG"
        described = f"[image: {label}" + (f" {size[0]}x{size[1]} px]" if size else "]")
        png = self._as_png(b64, mime, size)
        if png:
            images.append(png)
        return described

    def _as_png(self, b64: str, mime: str, size: tuple[int, int] | None) -> str | None:
        too_big = size is not None and self.max_image_side is not None and max(size) > self.max_image_side
        if mime == "image/png" and not too_big:
            return b64
        if size is None or size[0] * size[1] > MAX_DECODED_PIXELS:
            # A decompression bomb (a few KB of PNG that decodes to gigabytes) is never decoded.
            return None
        try:  # PIL comes with matplotlib; imported only for the rare JPEG or oversized image
            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(base64.b64decode(b64)))
            if too_big and self.max_image_side is not None:
                image.thumbnail((self.max_image_side, self.max_image_side))
            buf = io.BytesIO()
            image.save(buf, format="PNG")
        except Exception:  # an image the model cannot get is still described in the text
            return None
        return base64.b64encode(buf.getvalue()).decode("ascii")

    # -- errors ------------------------------------------------------------------------------

    def render_error(self, out: dict[str, Any], execution: Execution | None = None) -> str:
        """An error output as the model reads it: name and message, where in the step's code it
        happened, and a traceback shortened to the notebook's frames and the last library frames.
        """
        name = str(out.get("ename", "Error"))
        message = truncate_middle(str(out.get("evalue", "")), 1500)
        tb = strip_ansi("\n".join(_text(line) for line in out.get("traceback", [])))
        head = f"{name}: {message}" if message else name
        parsed = None if name in _SYNTAX_ERRORS else parse_traceback(tb)
        if parsed is None or not parsed.frames:
            # Unknown shapes, and syntax errors (whose caret line matters), are kept as they are.
            lines = [line for line in tb.rstrip("\n").splitlines() if line.strip()]
            if len(lines) > self.max_traceback_lines:
                dropped = len(lines) - self.max_traceback_lines
                lines = [f"[{dropped} earlier traceback lines cut]", *lines[-self.max_traceback_lines :]]
            body = "\n".join(lines)
            return body if name in body else f"{body}\n{head}".lstrip("\n")
        parts = [head, "Traceback (most recent call last, shortened):"]
        parts += self._shorten_frames(parsed.frames, execution)
        parts += [f"(raised while handling {cause})" for cause in parsed.causes[-2:]]
        return "\n".join(parts)

    def _shorten_frames(self, frames: list[Frame], execution: Execution | None) -> list[str]:
        # Keep the notebook's own frames (capped for deep recursion) and the innermost library
        # frames; library frames between two notebook frames are counted, not shown.
        last_own = max((i for i, f in enumerate(frames) if f.own_code), default=-1)
        keep: list[Frame | str] = []
        hidden = 0
        for i, frame in enumerate(frames):
            innermost = i > last_own and i >= len(frames) - self.library_frames
            if frame.own_code or innermost:
                if hidden:
                    keep.append(f"  … {hidden} library frame{'s' if hidden > 1 else ''} not shown …")
                    hidden = 0
                keep.append(frame)
            else:
                hidden += 1
        if hidden:
            keep.append(f"  … {hidden} library frame{'s' if hidden > 1 else ''} not shown …")
        lines: list[str] = []
        repeats = 0
        for item in keep:  # recursion: one frame over and over
            line = item if isinstance(item, str) else item.render(execution)
            if lines and line == lines[-1]:
                repeats += 1
                continue
            if repeats:
                lines.append(f"  … the frame above repeats {repeats:,} more times …")
                repeats = 0
            lines.append(line)
        if repeats:
            lines.append(f"  … the frame above repeats {repeats:,} more times …")
        if len(lines) > 12:  # deep, varied recursion: the first and last frames tell the story
            lines = [*lines[:5], f"  … {len(lines) - 10} more frames not shown …", *lines[-5:]]
        return lines


# -- tracebacks --------------------------------------------------------------------------------

_SYNTAX_ERRORS = frozenset({"SyntaxError", "IndentationError", "TabError"})
_FRAME = re.compile(r"^  (Cell In\[\d+\], line \d+.*|File .+:\d+.*|Input In \[\d+\].*)$")
_CELL = re.compile(r"Cell In\[(\d+)\], line (\d+)")
_CHAIN = re.compile(
    r"^(The above exception was the direct cause of the following exception:"
    r"|During handling of the above exception, another exception occurred:)$",
    re.MULTILINE,
)
_SITE = re.compile(r"^(?:.*/(?:site-packages|dist-packages)/|/\S*/lib/python3\.\d+/)")


@dataclass
class Frame:
    """One frame of a plain IPython traceback: its location line and its code line."""

    where: str
    code: str = ""

    @property
    def in_cell(self) -> bool:
        """True for frames in notebook cells (the model's own code)."""
        return self.where.startswith(("Cell In[", "Input In ["))

    @property
    def own_code(self) -> bool:
        """True for notebook cells and for files outside installed packages and the standard
        library (a helper module next to the notebook), whose frames are always kept."""
        if self.in_cell:
            return True
        path = self.where[5:].split(":", 1)[0] if self.where.startswith("File ") else ""
        return path.startswith("/") and not _SITE.match(path)

    @property
    def cell_line(self) -> tuple[int, int] | None:
        """(execution count, line number) of a cell frame."""
        m = _CELL.match(self.where)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def render(self, execution: Execution | None = None) -> str:
        """One line: where, then the code; frames of ``execution``'s own code say "this step"
        and show its exact line."""
        where, code = _SITE.sub("", self.where.removeprefix("File ")), self.code
        located = self.cell_line
        if execution is not None and located and located[0] == execution.execution_count:
            where = _CELL.sub(f"this step, line {located[1]}", where)
            lines = execution.code.splitlines()
            if 0 < located[1] <= len(lines):
                code = lines[located[1] - 1].strip()
        return f"  {where}: {code}" if code else f"  {where}"


@dataclass
class ParsedTraceback:
    """The frames of the final exception of a plain traceback, and the exceptions it chained from."""

    frames: list[Frame]
    causes: list[str]


def parse_traceback(text: str) -> ParsedTraceback | None:
    """Parse an IPython ``xmode=Plain`` traceback; ``None`` when it has another shape."""
    sections = _CHAIN.split(text)
    blocks = [s for i, s in enumerate(sections) if i % 2 == 0]
    causes = []
    for block in blocks[:-1]:
        lines = [line for line in block.strip().splitlines() if line.strip()]
        if lines:
            causes.append(lines[-1].strip())
    frames: list[Frame] = []
    lines = blocks[-1].splitlines()
    for i, line in enumerate(lines):
        if _FRAME.match(line):
            code = ""
            if i + 1 < len(lines) and lines[i + 1].startswith("    ") and not _FRAME.match(lines[i + 1]):
                code = lines[i + 1].strip()
            frames.append(Frame(line.strip(), code))
    if not frames and "Traceback" in text:
        return None
    return ParsedTraceback(frames, causes)


# -- other output types ----------------------------------------------------------------------


class _HTMLText(HTMLParser):
    # Block elements end lines; table cells are joined with " | " so rows stay rows.
    BLOCKS = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "ul", "ol", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.line: list[str] = []
        self.cells: list[str] | None = None
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag == "tr":
            self.flush()
            self.cells = []
        elif tag in ("td", "th") and self.cells is not None:
            self.line = []
        elif tag in self.BLOCKS:
            self.flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(self.skip - 1, 0)
        elif tag in ("td", "th") and self.cells is not None:
            self.cells.append(" ".join("".join(self.line).split()))
            self.line = []
        elif tag == "tr" and self.cells is not None:
            self.lines.append(" | ".join(self.cells).strip())
            self.cells = None
        elif tag in self.BLOCKS or tag == "table":
            self.flush()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.line.append(data)

    def flush(self) -> None:
        text = " ".join("".join(self.line).split())
        if text:
            self.lines.append(text)
        self.line = []


def html_to_text(html: str) -> str:
    """The readable text of an HTML output: tables as rows of ``a | b | c``, no markup."""
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # malformed HTML: fall back to stripping tags
        return " ".join(re.sub(r"<[^>]+>", " ", html).split())
    parser.flush()
    return "\n".join(line for line in parser.lines if line)


def image_size(b64: str) -> tuple[int, int] | None:
    """Width and height of a base64 PNG or JPEG, read from its header (no image library)."""
    try:
        head = base64.b64decode(b64[:44])
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(base64.b64decode(b64[: 64 * 1024 // 3 * 4]))
    except (binascii.Error, ValueError):
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):  # start of frame: height, then width
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + length
    return None


def _text(value: Any) -> str:
    # nbformat stores multi-line strings either whole or as a list of lines.
    return "".join(value) if isinstance(value, list) else str(value)
