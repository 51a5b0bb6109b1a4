"""Models: litellm, huggingface_hub and scripted, behind one small interface."""

from __future__ import annotations

import os
from typing import Any

from ..exceptions import UsageError
from .base import Message, Model, Reply, Usage
from .hf import HFInferenceModel
from .litellm_model import LiteLLMModel
from .options import API_BASE_ENV, API_KEY_ENV, DEFAULT_REQUEST_TIMEOUT, ModelOptions, environment_defaults
from .retry import RetryPolicy
from .scripted import ScriptedModel

__all__ = [
    "API_BASE_ENV",
    "API_KEY_ENV",
    "DEFAULT_REQUEST_TIMEOUT",
    "HFInferenceModel",
    "LiteLLMModel",
    "Message",
    "Model",
    "ModelOptions",
    "Reply",
    "RetryPolicy",
    "ScriptedModel",
    "Usage",
    "resolve_model",
]

MODEL_ENV = "NBAGENT_MODEL"


def resolve_model(spec: str | Model | None, **kwargs: Any) -> Model:
    """Turn what a user typed into a :class:`Model`.

    ``scripted:PATH`` is a scripted model from a JSON file, ``hf:MODEL_ID`` a huggingface_hub
    ``InferenceClient`` model, anything else a litellm model string. ``None`` falls back to the
    ``NBAGENT_MODEL`` environment variable. ``kwargs`` (``api_base``, ``api_key``, ``timeout``,
    ``temperature``, ``max_tokens``, ``retry``...) go to the model's constructor; ``api_key`` and
    ``api_base`` default to ``NBAGENT_API_KEY`` and ``NBAGENT_API_BASE``. A scripted model takes
    none of them.
    """
    if isinstance(spec, Model):
        return spec
    spec = spec or os.environ.get(MODEL_ENV)
    if not spec:
        raise UsageError(
            f"no model given: pass --model (a litellm string such as 'openai/gpt-4o-mini', "
            f"'hf:MODEL_ID' or 'scripted:replies.json') or set {MODEL_ENV}"
        )
    if spec.startswith("scripted:"):
        return ScriptedModel.from_file(spec[len("scripted:") :])
    kwargs = environment_defaults(kwargs)
    if spec.startswith("hf:"):
        base_url = kwargs.pop("api_base", None)
        return HFInferenceModel(spec[3:] or None, base_url=base_url, **kwargs)
    return LiteLLMModel(spec, **kwargs)
