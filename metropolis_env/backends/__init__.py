"""LLM backends: the embedded simulated server, OpenAI-compatible servers, and a replay cache."""

from .base import Backend, BackendError, LLMRequest, LLMResponse

__all__ = ["Backend", "BackendError", "LLMRequest", "LLMResponse"]
