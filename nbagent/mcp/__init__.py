"""``nbagent mcp``: nbagent's sandboxed, recorded kernels as tools for another agent (an MCP server).

Needs the official MCP Python SDK (``pip install 'nbagent-ai[mcp]'``); this package imports it only in
:mod:`nbagent.mcp.server`, so the rest of nbagent never needs it.
"""

from __future__ import annotations

from .sessions import ClientModel, Session, SessionManager, SessionSettings

__all__ = ["ClientModel", "Session", "SessionManager", "SessionSettings"]
