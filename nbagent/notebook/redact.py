"""Redaction: the values of the host's secret variables never reach a notebook or a model.

A secret is the value of an environment variable whose name matches
:data:`~nbagent.execution.sandbox.SECRET_PATTERNS` (``*_API_KEY``, ``*_TOKEN``, ``*PASSWORD*``, ...), plus any
value given explicitly (a model's ``api_key``). Values shorter than :data:`MIN_SECRET_LENGTH` and
values that name an existing file or folder (``AWS_CA_BUNDLE=/etc/ssl/...``) are left alone:
replacing them everywhere would damage ordinary text. Each occurrence becomes
``[redacted $NAME]``.

The sandbox keeps secrets out of the kernel in the first place; redaction is the second line,
for kernels run without the sandbox, variables let in with ``--allow-env``, and secrets a step
finds some other way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..execution.sandbox import is_secret_name

MIN_SECRET_LENGTH = 8
"""Shorter values are not redacted (a password of ``1234`` would blank out every ``1234``)."""


def _worth_hiding(value: str) -> bool:
    if len(value) < MIN_SECRET_LENGTH:
        return False
    try:
        return not os.path.exists(value)
    except (OSError, ValueError):  # not a usable path at all (too long, NUL byte)
        return True


class Redactor:
    """Replaces known secret values in text and in JSON-like data.

    Args:
        secrets: secret value -> the name shown in its place.
    """

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = dict(sorted(secrets.items(), key=lambda kv: -len(kv[0])))
        self._escaped = [json.dumps(v, ensure_ascii=False)[1:-1] for v in self.secrets]

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str] | None = None, extra: Iterable[str | None] = ()
    ) -> Redactor:
        """A redactor for the secret variables of ``env`` (default: this process's environment)."""
        env = os.environ if env is None else env
        secrets = {v: f"${k}" for k, v in env.items() if is_secret_name(k) and _worth_hiding(v)}
        for value in extra:
            if value and _worth_hiding(value):
                secrets.setdefault(value, "secret")
        return cls(secrets)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for value, name in self.secrets.items():
            if value in text:
                text = text.replace(value, f"[redacted {name}]")
        return text

    def found_in_json(self, text: str) -> bool:
        """True if serialized JSON ``text`` may hold a secret (a cheap test before :meth:`data`)."""
        return any(e in text for e in self._escaped)

    def data(self, obj: Any) -> Any:
        """A copy of JSON-like ``obj`` (dicts, lists, strings) with secrets replaced in every string."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return type(obj)((k, self.data(v)) for k, v in obj.items())
        if isinstance(obj, list):
            return [self.data(v) for v in obj]
        return obj

    def redact_json(self, text: str) -> str:
        """Serialized JSON ``text`` with secrets replaced inside its strings (same formatting)."""
        if not self.found_in_json(text):
            return text
        data: Any = self.data(json.loads(text))
        return json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
