"""Shared fixtures: one real kernel for tests where isolation is not the point."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# litellm must never try to fetch its cost map from the internet during tests.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from nbagent import Kernel, ScriptedModel

REPO = Path(__file__).resolve().parents[1]
PENGUINS = REPO / "examples" / "data" / "penguins.csv"


@pytest.fixture(scope="session")
def kernel() -> Iterator[Kernel]:
    """A real kernel shared by the tests of a session; tests must not rely on a fresh state."""
    k = Kernel()
    k.start()
    yield k
    k.shutdown()


def code(source: str, thought: str = "Next step.") -> str:
    """A model reply holding ``thought`` and one python block."""
    return f"Thought: {thought}\n```python\n{source}\n```"


def scripted(*replies: str) -> ScriptedModel:
    """A scripted model replying with ``replies`` in order."""
    return ScriptedModel(list(replies))
