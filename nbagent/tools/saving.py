"""Saving tools: write a tool to a folder, or commit that folder to a Hugging Face Hub repo.

A saved tool is a folder (the same files go to a Hub repo)::

    tool.py            the tool's source with the imports and constants it uses; runs on its own
    tool.json          name, kind (function or class), host or kernel, requirements, signature
    requirements.txt   the declared requirements, one per line
    README.md          what it does and its signature (with the Hub's metadata header)
    index.html         the same, for a static Hub Space

Loading it back is :mod:`nbagent.tools.sharing`. This module reads a tool only through
:class:`SavableTool`, so :class:`~nbagent.Tool`'s ``save`` and ``push_to_hub`` can use it without an
import cycle.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .._version import __version__
from ..exceptions import UsageError

FORMAT = "nbagent-tool/1"
"""The ``format`` field of ``tool.json``."""

TOOL_FILES = ("tool.py", "tool.json", "requirements.txt", "README.md", "index.html")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""A Hugging Face Hub repo id, ``owner/name``."""


class SavableTool(Protocol):
    """What saving needs of a tool (every :class:`~nbagent.Tool` has it)."""

    @property
    def spec(self) -> Any: ...
    @property
    def host(self) -> bool: ...
    @property
    def requirements(self) -> Sequence[str]: ...

    def implementation(self) -> Any: ...


def save_tool(tool: SavableTool, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``tool`` to ``folder`` (created if needed); returns the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"cannot save tool to {str(folder)!r}: it is a file, not a folder")
    existing = [name for name in TOOL_FILES if (folder / name).exists()]
    if existing and not overwrite:
        raise UsageError(
            f"folder {str(folder)!r} already holds a saved tool ({', '.join(existing)}); "
            "choose another folder or pass overwrite=True"
        )
    spec = tool.spec
    code = tool.implementation()
    # A function tool wraps a plain function; a class tool is an instance of a Tool subclass.
    kind = "function" if callable(getattr(tool, "function", None)) else "class"
    obj = (
        getattr(getattr(tool, "function", None), "__name__", None)
        if kind == "function"
        else type(tool).__name__
    )
    imports = list(code.imports)
    if kind == "class":
        imports.insert(0, "from nbagent import Tool  # the kernel gets a minimal Tool base instead")
    body = code.code
    if kind == "function" and obj != spec.name:
        obj = spec.name  # implementation() already renamed the def
    header = (
        f'"""nbagent tool {spec.name!r}, saved by nbagent {__version__}.\n\n'
        f"Load it with nbagent.load_tool(<this folder or Hub repo>, trust_remote_code=True).\n"
        '"""\n'
    )
    tool_py = header + ("\n".join(imports) + "\n\n\n" if imports else "\n") + body.rstrip() + "\n"
    meta: dict[str, Any] = {
        "format": FORMAT,
        "name": spec.name,
        "kind": kind,
        "object": obj,
        "host": bool(tool.host),
        "requirements": list(tool.requirements),
        "spec": spec.to_dict(),
        "nbagent_version": __version__,
    }
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "tool.py": tool_py,
        "tool.json": json.dumps(meta, indent=2) + "\n",
        "requirements.txt": "".join(f"{r}\n" for r in tool.requirements),
        "README.md": _readme(tool),
        "index.html": _index_html(tool),
    }
    for name, text in files.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)
    return folder


def push_tool_to_hub(
    tool: SavableTool,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    endpoint: str | None = None,
    repo_type: str = "space",
    commit_message: str | None = None,
) -> str:
    """Create (if needed) the Hub repo ``repo_id`` and commit the saved tool to it; returns its URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not REPO_ID.match(repo_id):
        raise UsageError(f"Hub repo id {repo_id!r} is not of the form 'owner/name'")
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="nbagent-tool-") as tmp:
        folder = save_tool(tool, Path(tmp) / "tool")
        try:
            url = api.create_repo(
                repo_id,
                repo_type=repo_type,
                private=private,
                exist_ok=True,
                space_sdk="static" if repo_type == "space" else None,
            )
            operations = [
                CommitOperationAdd(path_in_repo=name, path_or_fileobj=(folder / name).read_bytes())
                for name in TOOL_FILES
            ]
            api.create_commit(
                repo_id,
                operations,
                commit_message=commit_message or f"Upload nbagent tool {tool.spec.name}",
                repo_type=repo_type,
            )
        except HfHubHTTPError as exc:
            raise UsageError(f"pushing tool {tool.spec.name!r} to {repo_id!r} failed: {exc}") from None
    return str(url)


def _readme(tool: SavableTool) -> str:
    spec = tool.spec
    where = "on the agent's host (a host tool)" if tool.host else "inside the agent's kernel"
    requirements = ", ".join(f"`{r}`" for r in tool.requirements) or "none"
    return (
        "---\n"
        f"title: {spec.name}\n"
        "emoji: 🛠️\n"
        "colorFrom: blue\n"
        "colorTo: gray\n"
        "sdk: static\n"
        "tags:\n- nbagent\n- tool\n"
        "---\n\n"
        f"# {spec.name}\n\n"
        f"{spec.description}\n\n"
        f"An [nbagent](https://github.com/nbagent/nbagent) tool; it runs {where}. "
        f"Requirements: {requirements}.\n\n"
        f"```python\n{spec.signature()}\n```\n\n"
        "Use it (loading runs `tool.py`, so read it first):\n\n"
        "```python\n"
        "from nbagent import Agent, load_tool\n\n"
        f'{spec.name} = load_tool("<this repo or folder>", trust_remote_code=True)\n'
        f"agent = Agent(model=..., tools=[{spec.name}])\n"
        "```\n"
    )


def _index_html(tool: SavableTool) -> str:
    spec = tool.spec
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(spec.name)} (nbagent tool)</title></head>\n<body>\n"
        f"<h1>{html.escape(spec.name)}</h1>\n<p>{html.escape(spec.description)}</p>\n"
        f"<pre>{html.escape(spec.signature())}</pre>\n"
        "<p>Load with <code>nbagent.load_tool(repo_id, trust_remote_code=True)</code>.</p>\n"
        "</body></html>\n"
    )
