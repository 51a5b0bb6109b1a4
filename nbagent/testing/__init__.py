"""Test helpers: a loopback OpenAI-compatible server and a loopback Hugging Face Hub."""

from .hub import LoopbackHub
from .openai_server import OpenAICompatibleServer

__all__ = ["LoopbackHub", "OpenAICompatibleServer"]
