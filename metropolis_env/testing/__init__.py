"""Helpers for testing against real LLM servers without a network or a GPU.

- `write_tiny_model`: a random-weight llama GGUF model of ~0.5 MB (needs `gguf`).
- `LlamaServer`: llama-cpp-python's OpenAI-compatible server as a subprocess on 127.0.0.1, with
  start / kill (SIGKILL) / restart on the same port; `llama_cpp_skip_reason()` for pytest.skip.
- `DelayProxy`: a TCP proxy that stalls the first connections (a slow server).
- `httpx_module()`: the HTTP library the installed `openai` client is built on, for injecting a
  mock transport (`openai.AsyncOpenAI(http_client=httpx.AsyncClient(transport=...))`).

Install with ``pip install 'metropolis-env[llamacpp]'``; nothing here is imported by the library.
"""

from __future__ import annotations

from ..backends.streaming import transport_module as httpx_module
from .llama_server import LlamaServer, ServerError, free_port, llama_cpp_skip_reason
from .proxy import DelayProxy
from .tiny_model import write_tiny_model


__all__ = ["DelayProxy", "LlamaServer", "ServerError", "free_port", "httpx_module",
           "llama_cpp_skip_reason", "write_tiny_model"]
