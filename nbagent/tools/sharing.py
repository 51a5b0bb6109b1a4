"""Loading shared tools: a tool saved to a folder or pushed to the Hugging Face Hub, back as a Tool.

The saved format is :mod:`nbagent.tools.saving`'s. Loading runs ``tool.py`` (here, and in the kernel
of every agent given the tool), so it needs ``trust_remote_code=True``, asked before anything is
read or downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from ..exceptions import ToolDefinitionError, UntrustedToolError, UsageError
from .saving import FORMAT, REPO_ID, push_tool_to_hub, save_tool
from .tool import FunctionTool, Tool, _check_name

__all__ = ["load_tool", "push_tool_to_hub", "save_tool"]


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
    if not is_folder and not REPO_ID.match(str(source)):
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
