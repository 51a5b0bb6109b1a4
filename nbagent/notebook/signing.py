"""Keyed digests: whether a notebook's code is the code nbagent ran, on this machine.

The attack: ``verify`` compares outputs, so code slipped into a notebook after the run (by a
process a step left behind, or by whoever handed the notebook over) that prints nothing would
pass as reproduced. The defence: when nbagent writes a code cell it records an HMAC-SHA256 of the
cell's source (and of its ``final_answer`` payload, if any) under the cell's ``metadata.nbagent``
(``digest``, ``answer_digest``). The key is 32 random bytes in the user's nbagent data folder
(:func:`key_path`, mode 0600, made on first use), which a sandboxed kernel cannot read; without it
nobody can make a digest that matches changed code.

This is not Jupyter's notebook trust signature: that one would make JupyterLab render the outputs'
scripts and HTML as trusted, the opposite of what a notebook written by model code deserves.

A digest reads ``hmac-sha256:<key id>:<hex>``; the key id (a digest of the key itself) tells a
notebook signed here from one signed on another machine (or before the key was replaced), which
:func:`check_signatures` reports as "not signed here" rather than as changed.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jupyter_core.paths import jupyter_data_dir

from .schema import cell_meta

SCHEME = "hmac-sha256"
KEY_FILE = "signing-key"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def key_path() -> Path:
    """Where the signing key is kept: ``<Jupyter data folder>/nbagent/signing-key``.

    The Jupyter data folder is ``~/.local/share/jupyter`` on Linux unless ``JUPYTER_DATA_DIR``
    says otherwise.
    """
    return Path(jupyter_data_dir()) / "nbagent" / KEY_FILE


@dataclass(frozen=True)
class SigningKey:
    """The secret that signs notebooks on this machine (see the module docstring)."""

    secret: bytes

    @property
    def key_id(self) -> str:
        """A short public name of the key (it reveals nothing about the secret)."""
        return hmac.new(self.secret, b"nbagent key id", hashlib.sha256).hexdigest()[:16]

    def _sign(self, purpose: bytes, data: bytes) -> str:
        mac = hmac.new(self.secret, purpose + b"\0" + data, hashlib.sha256).hexdigest()
        return f"{SCHEME}:{self.key_id}:{mac}"

    def code_digest(self, source: str) -> str:
        """The digest of a code cell's source."""
        return self._sign(b"code", source.encode("utf-8", "surrogatepass"))

    def answer_digest(self, payload: Any) -> str:
        """The digest of a ``final_answer`` payload (JSON-like), independent of key order."""
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
        return self._sign(b"answer", text.encode("ascii"))

    def matches(self, digest: object, expected: str) -> bool:
        """True when a recorded ``digest`` equals ``expected`` (compared in constant time)."""
        return isinstance(digest, str) and hmac.compare_digest(digest, expected)


def load_key(path: Path | None = None, *, create: bool = True) -> SigningKey | None:
    """The signing key of this user, made on first use (``None`` if absent and ``create`` is false).

    The folder is made with mode 0700 and the key file with 0600, exclusively and without
    following symlinks, so a key planted by someone else is not adopted silently.
    """
    path = path or key_path()
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        if not create:
            return None
        return _create_key(path)
    with os.fdopen(fd, "rb") as f:
        raw = f.read(4096).strip()
    try:
        secret = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) < 16:
        raise OSError(
            errno.EINVAL,
            f"nbagent's signing key {path} is damaged; delete it and a new one is made "
            "(notebooks signed with the old one then read as 'not signed here')",
        )
    return SigningKey(secret)


def _create_key(path: Path) -> SigningKey:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    # Written whole under a private name, then linked into place: a process that finds the
    # key never reads a half-written one, and of two processes making it at once one wins.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            key = load_key(path, create=False)
            assert key is not None
            return key
    finally:
        os.unlink(tmp)
    return SigningKey(secret)


Signature = Literal["signed here", "not signed here", "not signed here (signed with another key)"]
"""How a notebook's digests read; the last two are not failures on their own."""


@dataclass
class SignatureCheck:
    """What :func:`check_signatures` found: the notebook's state and the cells whose content changed."""

    state: Signature
    changed: dict[int, str] = field(default_factory=dict)
    """Cell index -> what changed (``"its code"``, ``"its answer"``)."""

    @property
    def signed_here(self) -> bool:
        """True when the notebook carries digests made with this machine's key."""
        return self.state == "signed here"


def check_signatures(
    cells: Iterable[Mapping[str, Any]], key: SigningKey | None, answer_of: Any = None
) -> SignatureCheck:
    """Compare every code cell's source (and answer) with the digests recorded when it was written.

    ``answer_of(cell)`` returns the cell's ``final_answer`` payload or ``None``. When some cell
    carries a digest made with ``key``, every code cell must carry a matching one: a code cell
    without a digest in a signed notebook was added afterwards and counts as changed.
    """
    indexed = [(i, c) for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    metas = {i: cell_meta(c) for i, c in indexed}
    digests = [str(m["digest"]) for m in metas.values() if isinstance(m.get("digest"), str)]
    if key is None or not digests:
        return SignatureCheck("not signed here")
    prefix = f"{SCHEME}:{key.key_id}:"
    if not any(d.startswith(prefix) for d in digests):
        return SignatureCheck("not signed here (signed with another key)")
    check = SignatureCheck("signed here")
    for i, cell in indexed:
        meta = metas[i]
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if not key.matches(meta.get("digest"), key.code_digest(source)):
            check.changed[i] = "its code"
            continue
        payload = answer_of(cell) if answer_of is not None else None
        recorded = meta.get("answer_digest")
        if (payload is not None or recorded is not None) and (
            payload is None or not key.matches(recorded, key.answer_digest(payload))
        ):
            check.changed[i] = "its recorded answer"
    return check


def resign_answers(cells: Iterable[Any], key: SigningKey | None, answer_of: Any) -> None:
    """Record new answer digests for code cells whose code digest is valid under ``key``.

    For a notebook whose outputs were just replaced by a verified re-run (the tidy export): the
    code is unchanged and signed here, so its new answer may be signed too. Cells whose code is
    not signed here are left alone.
    """
    if key is None:
        return
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        meta = cell_meta(cell)
        if not meta or not key.matches(meta.get("digest"), key.code_digest(cell.source)):
            continue
        payload = answer_of(cell)
        if payload is None:
            meta.pop("answer_digest", None)
        else:
            meta["answer_digest"] = key.answer_digest(payload)
