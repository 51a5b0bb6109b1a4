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
from typing import Any

SETUP_PARTS = ("final_answer.py",)
"""Files of ``nbagent/kernel_code`` joined, in this order, into the setup cell."""


@cache
def setup_code() -> str:
    """The source of the notebook's setup cell."""
    base = resources.files("nbagent") / "kernel_code"
    return "\n\n".join((base / part).read_text(encoding="utf-8").strip() for part in SETUP_PARTS) + "\n"


def decode_answer(payload: dict[str, Any]) -> Any:
    """Turn the payload ``final_answer`` displayed into a Python value on the host.

    JSON-able answers come back as the same value; DataFrames and Series as pandas objects;
    figures and images as ``PIL.Image.Image``; anything else as its text form.
    """
    kind = payload.get("kind")
    value = payload.get("value")
    if kind == "json":
        return value
    if kind in ("dataframe", "series", "dataframe-split", "series-split"):
        import pandas as pd

        text = io.StringIO(json.dumps(value))
        if kind.endswith("-split"):
            typ = "frame" if kind.startswith("dataframe") else "series"
            return pd.read_json(text, orient="split", typ=typ)
        frame = pd.read_json(text, orient="table")
        # pandas reads orient="table" only as a frame: a Series comes back as its one column.
        return frame if kind == "dataframe" else frame.iloc[:, 0]
    if kind == "image":
        from PIL import Image

        return Image.open(io.BytesIO(base64.b64decode(str(value))))
    return payload.get("text", "")


def answer_text(payload: dict[str, Any]) -> str:
    """A short human-readable form of an answer payload."""
    return str(payload.get("text", ""))
