"""Kernel-side definitions (host view): the setup code sent to every kernel, and answer decoding.

The setup code is plain Python kept as package data in ``kernel_code/``. It is run as the first
cell of every run and written into the notebook as its setup cell, so a notebook re-runs with
nothing of nbagent installed.
"""

from __future__ import annotations

import base64
import io
import json
from functools import cache
from importlib import resources
from typing import Any, Protocol

from ..exceptions import KernelError
from ..execution.outputs import ANSWER_MIME, Execution

SETUP_MARKER = "# nbagent setup"
"""Every setup cell starts with this comment (executors use it to keep the setup out of history)."""

SETUP_PARTS = ("final_answer.py", "formatters.py", "reproducibility.py")
"""Files of ``nbagent/kernel_code`` joined, in this order, into the setup cell."""


@cache
def setup_code(seed: int | None = 0) -> str:
    """The source of the notebook's setup cell.

    ``seed``: the value the global random generators are seeded with (``None``: not seeded, as in
    ``%%agent``, where the session is the user's own and keeps its random state).
    """
    base = resources.files("nbagent") / "kernel_code"
    parts = []
    for part in SETUP_PARTS:
        text = (base / part).read_text(encoding="utf-8").strip()
        if part == "reproducibility.py":
            if seed is None:
                continue
            text = text.replace('{"seed": 0,', f'{{"seed": {int(seed)},', 1)
        parts.append(text)
    return "\n\n\n".join(parts) + "\n"


FETCH_ANSWER_CODE = (
    "from IPython.display import display as _nbagent_display\n"
    f"_nbagent_display({{{ANSWER_MIME!r}: _nbagent_encode_answer(_nbagent_answer)}}, raw=True)\n"
    "del _nbagent_display"
)
"""Run in the kernel (not recorded) to fetch an answer too large to travel in the notebook."""


class AnswerExecutor(Protocol):
    """What :func:`complete_answer` needs of an executor."""

    async def aexecute(self, code: str, timeout: float | None = None) -> Execution: ...


async def complete_answer(executor: AnswerExecutor, payload: dict[str, Any]) -> dict[str, Any]:
    """The answer payload with its value: a deferred (large) value is fetched from the kernel."""
    if not payload.get("deferred"):
        return payload
    execution = await executor.aexecute(FETCH_ANSWER_CODE, timeout=120)
    fetched = execution.answer_bundle()
    if fetched is None:
        why = execution.error or "no value came back"
        raise KernelError(f"could not fetch the final answer from the kernel: {why}")
    return {**payload, **fetched, "text": payload.get("text", "")}


def decode_answer(payload: dict[str, Any]) -> Any:
    """Turn the payload ``final_answer`` displayed into a Python value on the host.

    JSON-able answers come back as the same value; DataFrames and Series as pandas objects
    (with their dtypes, index and name); figures and images as ``PIL.Image.Image``; anything
    else as its text form.
    """
    kind = str(payload.get("kind"))
    value = payload.get("value")
    if kind == "json":
        return value
    if kind in ("dataframe", "series", "dataframe-split", "series-split"):
        return _decode_pandas(kind, value, payload)
    if kind == "image":
        from PIL import Image

        image = Image.open(io.BytesIO(base64.b64decode(str(value))))
        image.load()
        return image
    return payload.get("text", "")


def _decode_pandas(kind: str, value: Any, payload: dict[str, Any]) -> Any:
    import pandas as pd

    orient = "split" if kind.endswith("-split") else "table"
    # read_json(orient="table", typ="series") does not work: Series travel as one-column tables.
    frame = pd.read_json(io.StringIO(json.dumps(value)), orient=orient, typ="frame")
    for i, dtype in enumerate(payload.get("dtypes") or []):
        if i < frame.shape[1] and str(frame.dtypes.iloc[i]) != dtype:
            try:  # e.g. datetime64[us] read back as datetime64[ns], int columns holding nulls
                frame.isetitem(i, frame.iloc[:, i].astype(dtype))
            except (TypeError, ValueError):
                pass
    if not kind.startswith("series"):
        return frame
    series = frame.iloc[:, 0]
    series.name = payload.get("name")
    return series


def answer_text(payload: dict[str, Any]) -> str:
    """A short human-readable form of an answer payload."""
    return str(payload.get("text", ""))
