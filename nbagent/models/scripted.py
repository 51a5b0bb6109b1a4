"""A model that replies from a script: for tests, demos and reproducible examples.

File format (``--model scripted:PATH``): a JSON list whose items are the replies, in order.
Each item is either a string (the reply text) or an object ``{"reply": "..."}``, optionally
with ``"input_tokens"`` and ``"output_tokens"`` to report instead of estimates::

    [
      "Thought: look at the data.\\n```python\\ndf = pd.read_csv('penguins.csv')\\ndf.head()\\n```",
      "```python\\nfinal_answer(df.groupby('species').body_mass_g.mean().idxmax())\\n```"
    ]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..exceptions import ScriptExhaustedError, UsageError
from .base import Message, Model, Reply, Usage, estimate_tokens, message_text


class ScriptedModel(Model):
    """Replies with the given texts, one per call, and records the messages it was sent.

    Token usage is estimated from the text (``Usage.estimated`` is true) unless a reply gives it.
    """

    def __init__(
        self,
        replies: Sequence[str | dict[str, Any]],
        *,
        name: str = "scripted",
        vision: bool = False,
    ) -> None:
        self.name = name
        self.supports_images = vision
        self.replies = [_check_item(item, i) for i, item in enumerate(replies)]
        self.calls: list[list[Message]] = []
        self.skipped = 0
        """Replies passed over because a resumed run had already used them (see :meth:`resume`)."""

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedModel:
        """Load a script (see the module docstring for the format)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"scripted model file {str(path)!r} does not exist") from None
        except IsADirectoryError:
            raise UsageError(f"scripted model file {str(path)!r} is a directory, not a JSON file") from None
        except RecursionError:
            raise UsageError(
                f"scripted model file {str(path)!r} is nested too deeply; "
                "it must be a JSON list of reply strings"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"scripted model file {str(path)!r} is not valid JSON ({exc}); "
                "it must be a JSON list of reply strings"
            ) from None
        if not isinstance(data, list):
            raise UsageError(
                f"scripted model file {str(path)!r} holds a JSON {type(data).__name__}; "
                "it must be a JSON list of reply strings"
            )
        try:
            return cls(data, name=f"scripted:{path.name}")
        except ValueError as exc:
            raise UsageError(f"scripted model file {str(path)!r}: {exc}") from None

    @property
    def remaining(self) -> int:
        """How many replies are left."""
        return len(self.replies) - self.skipped - len(self.calls)

    def resume(self, replies: Sequence[str]) -> None:
        """Skip the first ``len(replies)`` replies of the script: the resumed run already had them."""
        self.skipped = min(len(replies), len(self.replies))

    async def acomplete(self, messages: Sequence[Message], stop: Sequence[str] = ()) -> Reply:
        index = self.skipped + len(self.calls)
        if index >= len(self.replies):
            raise ScriptExhaustedError(
                f"scripted model {self.name!r} has no reply left (it holds {len(self.replies)})"
            )
        self.calls.append(list(messages))
        item = self.replies[index]
        text = item["reply"]
        for s in stop:  # behave like a real server: stop sequences end the reply
            if s and s in text:
                text = text[: text.index(s)]
        prompt = "\n".join(message_text(m) for m in messages)
        given = "input_tokens" in item or "output_tokens" in item
        usage = Usage(
            input_tokens=int(item.get("input_tokens", estimate_tokens(prompt))),
            output_tokens=int(item.get("output_tokens", estimate_tokens(text))),
            cost=0.0,
            estimated=not given,
        )
        return Reply(text=text, usage=usage)


def _check_item(item: Any, index: int) -> dict[str, Any]:
    if isinstance(item, str):
        return {"reply": item}
    if isinstance(item, dict) and isinstance(item.get("reply"), str):
        return item
    raise ValueError(
        f"reply #{index + 1} is a {type(item).__name__}; each reply must be a string "
        'or an object with a "reply" string'
    )
