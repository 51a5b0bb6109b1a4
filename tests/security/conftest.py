"""Fixtures of the attack suite: unique tokens and canaries the tests create (and remove) themselves."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .attacks import needs


@pytest.fixture
def token() -> str:
    """A value unique to this test, for canaries and markers."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def module_token() -> str:
    """A value unique to this test module, for canaries shared by its module-scoped runs."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def home_canary(module_token: str) -> Iterator[tuple[Path, str]]:
    """A 0600 file in the user's home folder, as a private key or a token file would be."""
    folder = Path.home() / f".nbagent-canary-{module_token}"
    folder.mkdir(mode=0o700)
    secret = folder / "secret.txt"
    value = f"home-canary-{module_token}"
    secret.write_text(value)
    secret.chmod(0o600)
    yield secret, value
    secret.unlink(missing_ok=True)
    folder.rmdir()


@pytest.fixture(autouse=True)
def _attack_facilities() -> None:
    """The attacks are those on a root-run Linux machine with bubblewrap (this project's and CI's)."""
    needs(None if sys.platform.startswith("linux") else f"the jail is Linux's; this is {sys.platform}")
    needs(None if os.geteuid() == 0 else "the attacks shown outside the jail need root (/etc/shadow, ptrace)")
    needs(None if shutil.which("bwrap") else "bwrap is not installed (apt-get install bubblewrap)")
