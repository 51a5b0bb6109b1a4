"""Redaction: the values of the host's secret variables never reach a notebook or a model.

A secret is the value of an environment variable whose name matches
:data:`~nbagent.execution.sandbox.SECRET_PATTERNS` (``*_API_KEY``, ``*_TOKEN``, ``*PASSWORD*``, ...), plus any
value given explicitly (a model's ``api_key``). Values shorter than :data:`MIN_SECRET_LENGTH` and
values that name an existing file or folder (``AWS_CA_BUNDLE=/etc/ssl/...``) are left alone:
replacing them everywhere would damage ordinary text. Each occurrence becomes
``[redacted $NAME]``.

Besides those names, redaction treats as secrets the variables named in :data:`REDACTED_NAMES`
(``TOKEN``, ``APIKEY``, ``*_PAT``, ``BEARER``, ``*WEBHOOK*``...) and the password inside any
variable holding a URL with one (``REDIS_URL=redis://user:PASSWORD@host``, whatever its name). Each
secret is also looked for in its trivially re-encoded forms (base64, hex, URL-encoding), which a
step can produce without meaning to (``base64.b64encode(os.environ[...])``).

The sandbox keeps secrets out of the kernel in the first place; redaction is the second line,
for kernels run without the sandbox, variables let in with ``--allow-env``, and secrets a step
finds some other way. It cannot be complete (a secret can be encoded in endless ways), which is
why the sandbox's environment allow-list is the defence that counts.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from ..execution.sandbox import is_secret_name

MIN_SECRET_LENGTH = 8
"""Shorter values are not redacted (a password of ``1234`` would blank out every ``1234``)."""


REDACTED_NAMES: tuple[str, ...] = (
    "TOKEN",
    "APIKEY",
    "API_KEY",
    "BEARER",
    "SECRET",
    "PASSWORD",
    "*_PAT",
    "*WEBHOOK*",
    "*_BEARER",
    "*_SESSION",
    "*_COOKIE",
    "*_SIGNATURE",
)
"""Names redacted besides :data:`~nbagent.execution.sandbox.SECRET_PATTERNS` (matched the same way)."""


def is_redacted_name(name: str) -> bool:
    """True when the value of an environment variable of this name is redacted from notebooks."""
    upper = name.upper()
    return is_secret_name(name) or any(fnmatch.fnmatchcase(upper, p) for p in REDACTED_NAMES)


def url_password(value: str) -> str | None:
    """The password in a URL's userinfo (``scheme://user:PASSWORD@host``), if it has one."""
    if "://" not in value or "@" not in value:
        return None
    try:
        password = urlsplit(value.strip()).password
    except ValueError:
        return None
    return password or None


def encodings(value: str) -> Iterator[str]:
    """Trivially re-encoded copies of ``value``: base64 (standard and URL-safe), hex, URL-encoded."""
    raw = value.encode("utf-8", "surrogatepass")
    b64 = base64.b64encode(raw).decode()
    yield from (b64, b64.rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="))
    hexed = binascii.hexlify(raw).decode()
    yield from (hexed, hexed.upper())
    yield from (quote(value, safe=""), quote_plus(value, safe=""))


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
        secrets: dict[str, str] = {}
        for name, value in env.items():
            if is_redacted_name(name) and _worth_hiding(value):
                secrets.setdefault(value, f"${name}")
            password = url_password(value)
            if password is not None and _worth_hiding(password):
                secrets.setdefault(value, f"${name}")
                secrets.setdefault(password, f"${name} password")
        for given in extra:
            if given and _worth_hiding(given):
                secrets.setdefault(given, "secret")
        for value, shown in list(secrets.items()):
            for copy in encodings(value):
                if copy != value:
                    secrets.setdefault(copy, f"{shown}, encoded")
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
