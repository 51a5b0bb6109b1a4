"""Does a re-run's output match the stored one? Normalisation and comparison of cell outputs.

Two runs of the same code legitimately differ in details that say nothing about the analysis.
Before comparing, text outputs are normalised (see :data:`NORMALISATIONS`): ANSI colour codes
removed, memory addresses (``0x7f3a…``), object and widget ids (UUIDs, pandas Styler ids),
timings (``1.2 ms``, ``3 loops each``), the kernel's temporary cell file names and execution counts
in tracebacks, numpy's ``SeedSequence(entropy=…)`` and the working directory replaced by
placeholders. Numbers in text then match when they agree to nine significant digits.

Images are compared by content, not by bytes (PNG encoders and library versions change the bytes
of the same picture): both are decoded with Pillow, flattened on white, scaled down to at most
128 pixels a side, and the share of pixels whose colour changed noticeably is measured.

What is compared in a cell: the text of each stream (stdout, stderr) as a whole, each rich output
in order with all its mime types (images as above, ``final_answer``'s payload by value), and each
error's name and message (not its traceback, whose library frames change between versions).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import io
import json
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..execution.outputs import ANSWER_MIME, strip_ansi

IMAGE_MIMES = ("image/png", "image/jpeg")

DEFAULT_IMAGE_TOLERANCE = 0.005
"""Share of pixels (after scaling down) that may change before two images count as different."""

_PIXEL_CHANGE = 0.15  # a channel moving by more than ~38/255 is a visible change, not anti-aliasing
_IMAGE_SIDE = 128

NORMALISATIONS: list[tuple[str, re.Pattern[str], str]] = [
    (
        "kernel cell files",
        re.compile(r"[^\s'\"(]*ipykernel_\d+[/\\]\d+\.py|<ipython-input-\d+-[0-9a-f]+>"),
        "<cell>",
    ),
    ("execution counts", re.compile(r"\b(Cell In|In|Out) ?\[\d+\]"), r"\1[#]"),
    ("memory addresses", re.compile(r"\b0x[0-9a-fA-F]{6,}\b"), "0x#"),
    ("UUIDs", re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    ("widget and object ids", re.compile(r"\b[0-9a-f]{32}\b"), "<id>"),
    ("pandas Styler ids", re.compile(r"\bT_[0-9a-f]{5}(?![0-9a-zA-Z])"), "T_#"),
    ("random seed entropy", re.compile(r"\bentropy=\d+"), "entropy=<seed>"),
    ("loop counts", re.compile(r"\b[\d,]+ loops? each\b|\bof \d+ runs\b"), "<loops>"),
    (
        "timings",
        re.compile(
            r"(?<![\w.])\d+(?:\.\d+)?(?:e[-+]?\d+)?\s?"
            r"(?:ns|µs|μs|us|ms|s|sec|secs|seconds?|mins?|minutes?)(?![\w])"
        ),
        "<time>",
    ),
]
"""(what, pattern, replacement) applied in order by :func:`normalize_text`."""

_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)


def normalize_text(text: str, workdirs: Iterable[str] = ()) -> str:
    """``text`` with run-specific details replaced by placeholders (see :data:`NORMALISATIONS`).

    ``workdirs``: folders the code ran in (the original's and the re-run's); shown as
    ``<workdir>``.
    """
    text = strip_ansi(text)
    for folder in sorted((w for w in workdirs if w), key=len, reverse=True):
        text = text.replace(folder, "<workdir>")
    for _, pattern, replacement in NORMALISATIONS:
        text = pattern.sub(replacement, text)
    return _TRAILING_SPACE.sub("", text).rstrip("\n")


def texts_match(a: str, b: str, rel_tol: float = 1e-9) -> bool:
    """Equal texts, except that numbers may differ in their last digits (``rel_tol``)."""
    if a == b:
        return True
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b), strict=True):
        if x == y:
            continue
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if not math.isclose(fx, fy, rel_tol=rel_tol, abs_tol=1e-12):
            return False
    return True


MAX_COMPARED_PIXELS = 40_000_000
"""Larger images are compared by their bytes only, never decoded."""


def _decode_image(data: str | bytes) -> Any:
    from PIL import Image

    raw = base64.b64decode(data) if isinstance(data, str) else data
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(raw))
    if image.size[0] * image.size[1] > MAX_COMPARED_PIXELS:
        # A decompression bomb in a stored or re-run output must not take the verifier down.
        raise ValueError(f"image of {image.size[0]}x{image.size[1]} pixels is too large to compare")
    image.load()
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def image_difference(a: str | bytes, b: str | bytes) -> float:
    """The share of pixels (0..1) that differ between two images (base64 text or bytes).

    1.0 when the shapes differ (aspect ratio off by more than 2 %) or an image cannot be decoded.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        first, second = _decode_image(a), _decode_image(b)
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        binascii.Error,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ):
        return 0.0 if a == b else 1.0
    if first.size == second.size and first.tobytes() == second.tobytes():
        return 0.0
    (wa, ha), (wb, hb) = first.size, second.size
    if abs(wa / ha - wb / hb) > 0.02 * (wa / ha):
        return 1.0
    scale = _IMAGE_SIDE / max(wa, ha)
    size = (max(1, round(wa * scale)), max(1, round(ha * scale)))
    pa = np.asarray(first.resize(size, Image.Resampling.BOX), dtype=np.float32) / 255.0
    pb = np.asarray(second.resize(size, Image.Resampling.BOX), dtype=np.float32) / 255.0
    changed = np.abs(pa - pb).max(axis=2) > _PIXEL_CHANGE
    return float(changed.mean())


def image_size(data: str | bytes) -> tuple[int, int] | None:
    """Width and height of an image, or ``None`` when it cannot be decoded."""
    try:
        size: tuple[int, int] = _decode_image(data).size
    except Exception:
        return None
    return size


@dataclass
class _Item:
    """One comparable piece of a cell's outputs: a text, or an image."""

    key: str
    text: str | None = None
    image: str | None = None

    def lines(self) -> list[str]:
        if self.image is not None:
            size = image_size(self.image)
            shape = f"{size[0]}x{size[1]}" if size else "undecodable"
            return [f"{self.key}: <{shape} image>"]
        body = (self.text or "").splitlines() or [""]
        return [f"{self.key}: {line}" for line in body]


def _answer_text(payload: dict[str, Any]) -> tuple[str, str | None]:
    """The comparable text of a ``final_answer`` payload, and its image if it is one."""
    kind = str(payload.get("kind"))
    value = payload.get("value")
    if kind == "image":
        return f"{kind} {payload.get('type')}", str(value)
    return f"{kind} {payload.get('type')} {json.dumps(value, sort_keys=True, default=str)}", None


def _items(outputs: Sequence[Any], workdirs: Sequence[str]) -> list[_Item]:
    streams: dict[str, str] = {}
    rich: list[_Item] = []
    for n, out in enumerate(outputs, 1):
        kind = out.get("output_type")
        if kind == "stream":
            streams[out.get("name", "stdout")] = streams.get(out.get("name", "stdout"), "") + str(
                out.get("text", "")
            )
        elif kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            for mime in sorted(data):
                key = f"[{n}] {mime}"
                value = data[mime]
                if mime == ANSWER_MIME and isinstance(value, dict):
                    text, image = _answer_text(value)
                    rich.append(_Item("[answer]", text=normalize_text(text, workdirs), image=None))
                    if image is not None:
                        rich.append(_Item("[answer] image", image=image))
                elif mime in IMAGE_MIMES:
                    rich.append(_Item(key, image="".join(value) if isinstance(value, list) else str(value)))
                else:
                    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                    if isinstance(value, list):
                        text = "".join(value)
                    rich.append(_Item(key, text=normalize_text(text, workdirs)))
        elif kind == "error":
            text = f"{out.get('ename', '')}: {out.get('evalue', '')}"
            rich.append(_Item("[error]", text=normalize_text(text, workdirs)))
    items = [
        _Item(f"[{name}]", text=normalize_text(text, workdirs)) for name, text in sorted(streams.items())
    ]
    return items + rich


@dataclass
class OutputDiff:
    """How a re-run's outputs of one cell differ from the stored ones (empty ``lines``: they match)."""

    lines: list[str]

    @property
    def same(self) -> bool:
        """True when the outputs match after normalisation."""
        return not self.lines

    def __str__(self) -> str:
        return "\n".join(self.lines)


def compare_outputs(
    stored: Sequence[Any],
    new: Sequence[Any],
    *,
    workdirs: Sequence[str] = (),
    image_tolerance: float = DEFAULT_IMAGE_TOLERANCE,
    max_lines: int = 12,
) -> OutputDiff:
    """Compare a cell's stored outputs with a re-run's; the result holds a short diff if they differ.

    The diff is unified-diff style (``-`` stored, ``+`` re-run), at most ``max_lines`` lines, and
    says how much of an image changed.
    """
    old_items, new_items = _items(stored, workdirs), _items(new, workdirs)
    notes: list[str] = []
    same = [i.key for i in old_items] == [i.key for i in new_items]
    if same:
        for old, fresh in zip(old_items, new_items, strict=True):
            if old.image is not None and fresh.image is not None:
                share = image_difference(old.image, fresh.image)
                if share > image_tolerance:
                    same = False
                    notes.append(f"{old.key}: the image changed ({share:.1%} of its pixels differ)")
            elif not texts_match(old.text or "", fresh.text or ""):
                same = False
    if same:
        return OutputDiff([])
    old_lines = [line for item in old_items for line in item.lines()]
    new_lines = [line for item in new_items for line in item.lines()]
    diff = [
        line
        for line in difflib.unified_diff(old_lines, new_lines, lineterm="", n=1)
        if not line.startswith(("---", "+++"))
    ]
    lines = [_clip(line) for line in diff if not line.startswith("@@")] + notes
    if not lines:
        lines = ["(the outputs differ only in numbers beyond the tolerance or in image content)"]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], f"… ({len(lines) - max_lines + 1} more diff lines)"]
    return OutputDiff(lines)


def answers_match(
    stored: dict[str, Any],
    new: dict[str, Any],
    *,
    workdirs: Sequence[str] = (),
    image_tolerance: float = DEFAULT_IMAGE_TOLERANCE,
) -> bool:
    """True when two ``final_answer`` payloads give the same answer (images by content)."""
    old_text, old_image = _answer_text(stored)
    new_text, new_image = _answer_text(new)
    if not texts_match(normalize_text(old_text, workdirs), normalize_text(new_text, workdirs)):
        return False
    if old_image is not None and new_image is not None:
        return image_difference(old_image, new_image) <= image_tolerance
    return old_image == new_image


def _clip(line: str, width: int = 160) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"
