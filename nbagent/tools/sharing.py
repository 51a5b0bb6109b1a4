"""Sharing tools: save a tool to a folder, push it to the Hugging Face Hub, load it back.

A saved tool is a folder (the same files go to a Hub repo)::

    tool.py            the tool's source with the imports and constants it uses; runs on its own
    tool.json          name, kind (function or class), host or kernel, requirements, signature
    requirements.txt   the declared requirements, one per line
    README.md          what it does and its signature (with the Hub's metadata header)
    index.html         the same, for a static Hub Space

Loading runs ``tool.py`` (here, and in the kernel of every agent given the tool), so it needs
``trust_remote_code=True``, asked before anything is read or downloaded.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from .._version import __version__
from ..exceptions import ToolDefinitionError, UntrustedToolError, UsageError
from .tool import FunctionTool, Tool, _check_name

FORMAT = "nbagent-tool/1"
"""The ``format`` field of ``tool.json``."""

TOOL_FILES = ("tool.py", "tool.json", "requirements.txt", "README.md", "index.html")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def save_tool(tool: Tool, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
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
    kind = "function" if isinstance(tool, FunctionTool) else "class"
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


def load_tool(
    source: str | os.PathLike[str],
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    repo_type: str = "space",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Tool:
    """Load a tool saved with :meth:`Tool.save` (a folder) or :meth:`Tool.push_to_hub` (a repo id).

    Args:
        source: a folder, or a Hub repo id such as ``"someone/weather-tool"``.
        trust_remote_code: required: loading runs the tool's code here and in agents' kernels.
        revision: Hub branch, tag or commit (default: the main branch).
        token: Hub token (default: huggingface_hub's own, e.g. ``HF_TOKEN``).
        endpoint: Hub URL (default: huggingface_hub's, e.g. ``HF_ENDPOINT``).
        repo_type: the Hub repo type the tool was pushed as.
        cache_dir: where huggingface_hub caches downloads.
    """
    local = Path(source)
    is_folder = local.is_dir()
    if not is_folder and not _REPO_ID.match(str(source)):
        raise UsageError(
            f"tool source {str(source)!r} is neither a folder nor a Hub repo id like 'owner/name'"
        )
    where = f"folder {str(local)!r}" if is_folder else f"Hub repo {str(source)!r}"
    if not trust_remote_code:
        raise UntrustedToolError(
            f"loading the tool from {where} runs its code (tool.py) on this machine and in the kernel; "
            "read tool.py first, then load it with trust_remote_code=True"
        )
    folder = local if is_folder else _download(str(source), revision, token, endpoint, repo_type, cache_dir)
    return _load_folder(folder, where)


def push_tool_to_hub(
    tool: Tool,
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

    if not _REPO_ID.match(repo_id):
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


def _download(
    repo_id: str,
    revision: str | None,
    token: str | None,
    endpoint: str | None,
    repo_type: str,
    cache_dir: str | os.PathLike[str] | None,
) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    paths = []
    for name in ("tool.json", "tool.py"):
        try:
            paths.append(
                hf_hub_download(
                    repo_id,
                    name,
                    repo_type=repo_type,
                    revision=revision,
                    token=token,
                    endpoint=endpoint,
                    cache_dir=None if cache_dir is None else Path(cache_dir),
                )
            )
        except HfHubHTTPError as exc:
            raise UsageError(f"cannot download {name} of tool repo {repo_id!r}: {exc}") from None
    return Path(paths[0]).parent


def _load_folder(folder: Path, where: str) -> Tool:
    try:
        meta = json.loads((folder / "tool.json").read_text(encoding="utf-8"))
        (folder / "tool.py").stat()
    except FileNotFoundError as exc:
        raise UsageError(
            f"{where} is not a saved nbagent tool: {Path(exc.filename).name} is missing"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{where}: tool.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"{where}: tool.json is not in the {FORMAT} format this nbagent reads")
    name, kind, obj = meta.get("name"), meta.get("kind"), meta.get("object")
    if not isinstance(name, str) or kind not in ("function", "class") or not isinstance(obj, str):
        raise UsageError(f"{where}: tool.json lacks a valid name, kind or object")
    _check_name(name, f"{where}")
    source = (folder / "tool.py").read_bytes()
    module_name = f"nbagent_tool_{name}_{hashlib.sha256(source).hexdigest()[:12]}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, folder / "tool.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # inspect.getsource() finds classes through sys.modules
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ToolDefinitionError(
                f"{where}: tool.py failed to run ({type(exc).__name__}: {exc})"
            ) from None
    if kind == "function":
        function = getattr(module, obj, None)
        if not callable(function):
            raise UsageError(f"{where}: tool.py defines no function {obj!r}")
        described = (meta.get("spec") or {}).get("description")
        return FunctionTool(
            function,
            name=name,
            description=described if isinstance(described, str) else None,
            requirements=[str(r) for r in meta.get("requirements", [])],
            host=bool(meta.get("host")),
        )
    instance = getattr(module, name, None)
    if not isinstance(instance, Tool):
        raise UsageError(f"{where}: tool.py defines no tool instance {name!r}")
    return instance


def _readme(tool: Tool) -> str:
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


def _index_html(tool: Tool) -> str:
    spec = tool.spec
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(spec.name)} (nbagent tool)</title></head>\n<body>\n"
        f"<h1>{html.escape(spec.name)}</h1>\n<p>{html.escape(spec.description)}</p>\n"
        f"<pre>{html.escape(spec.signature())}</pre>\n"
        "<p>Load with <code>nbagent.load_tool(repo_id, trust_remote_code=True)</code>.</p>\n"
        "</body></html>\n"
    )
