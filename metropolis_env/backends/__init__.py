"""LLM backends: the embedded simulated server, OpenAI-compatible servers, and a replay cache."""

from .base import Backend, BackendError, LLMRequest, LLMResponse
from .echo import EchoBackend
from .openai_backend import OpenAIBackend
from .replay import RecordingBackend, ReplayBackend
from .simulated import SimulatedBackend, make_backend

__all__ = ["Backend", "BackendError", "LLMRequest", "LLMResponse", "EchoBackend", "OpenAIBackend",
           "RecordingBackend", "ReplayBackend", "SimulatedBackend", "make_backend"]
