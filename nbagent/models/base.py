"""The model interface: messages in, a reply (text and token usage) out."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from jupyter_core.utils import run_sync

Message = dict[str, Any]
"""An OpenAI-style chat message: ``{"role": ..., "content": str | list of parts}``."""


@dataclass
class Usage:
    """Tokens used by one or more model calls, and their cost in USD when known."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        cost = None if self.cost is None and other.cost is None else (self.cost or 0) + (other.cost or 0)
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            cost,
            self.estimated or other.estimated,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as written into notebook metadata."""
        return asdict(self)


@dataclass
class Reply:
    """What a model answered: its text, what it cost, and why it ended.

    ``finish_reason`` is the server's (``"stop"``, ``"length"`` when the reply hit the token limit,
    ...), or ``None`` when the model does not say.
    """

    text: str
    usage: Usage
    finish_reason: str | None = None


TextCallback = Callable[[str], None]
"""Called with each piece of a reply's text as it arrives (streaming)."""


class Model(ABC):
    """A chat model. Subclasses implement :meth:`acomplete`; :meth:`complete` blocks on it.

    ``supports_images`` says whether observations may include images (figures) for this model.
    """

    name: str = "model"
    supports_images: bool = False
    supports_stop: bool = True

    @abstractmethod
    async def acomplete(self, messages: Sequence[Message], stop: Sequence[str] = ()) -> Reply:
        """Ask the model for the next reply to ``messages``."""

    def complete(self, messages: Sequence[Message], stop: Sequence[str] = ()) -> Reply:
        """Blocking form of :meth:`acomplete`."""
        return run_sync(self.acomplete)(messages, stop)

    async def astream(
        self, messages: Sequence[Message], stop: Sequence[str] = (), on_text: TextCallback | None = None
    ) -> Reply:
        """Like :meth:`acomplete`, calling ``on_text`` with the reply's text as it arrives.

        Models that cannot stream (the default) call it once, with the whole text.
        """
        reply = await self.acomplete(messages, stop)
        if on_text is not None and reply.text:
            on_text(reply.text)
        return reply

    async def acheck(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Make sure the model answers (a tiny request); raise :class:`~nbagent.ModelError` if not.

        Used before a batch starts, so a wrong key or URL costs one request, not one per task.
        Models that need no server (the scripted one) do nothing.
        """

    def resume(self, replies: Sequence[str]) -> None:  # noqa: B027  (optional hook, not abstract)
        """Told, when a run is resumed from its notebook, the replies this model gave before.

        Models that answer from the messages alone ignore it; a :class:`ScriptedModel` moves past
        that many replies of its script.
        """

    async def aclose(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Release connections the model holds (nothing by default)."""

    def close(self) -> None:
        """Blocking form of :meth:`aclose`."""
        run_sync(self.aclose)()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


_TOKEN_PIECES = re.compile(r"[A-Za-z]{1,8}|\d{1,3}|[^\sA-Za-z\d]{1,2}|\n| {2,}")


def estimate_tokens(text: str) -> int:
    """A cheap token estimate close to GPT-style BPE tokenizers (within about ±25%), for models
    that report no usage and for observation budgets in tokens.

    Counts words in pieces of up to eight letters, digits in groups of three, punctuation in
    pairs, newlines and runs of spaces: numbers and tables cost more tokens per character than
    prose, which a plain ``len(text) / 4`` misses by a factor of two.
    """
    return len(_TOKEN_PIECES.findall(text))


def message_text(message: Message) -> str:
    """The text parts of a message, joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
