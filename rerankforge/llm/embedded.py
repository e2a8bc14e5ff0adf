"""llama.cpp in-process (the ``xllamacpp`` wheel) on a GGUF file: no server, no network."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from rerankforge.errors import LLMError, MissingDependencyError
from rerankforge.llm.base import LLMProvider, LLMReply, Message, TransientLLMError, token_alternatives
from rerankforge.llm.packaged import DEFAULT_EMBEDDED_MODEL, PACKAGED_MODELS, packaged_gguf_path


def resolve_gguf(model: str | None) -> Path:
    """A packaged model name (default: the packaged Qwen2.5 1.5B) or a path to a ``.gguf`` file."""
    name = model or DEFAULT_EMBEDDED_MODEL
    if name in PACKAGED_MODELS:
        return packaged_gguf_path(name)
    path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join(PACKAGED_MODELS)
        raise LLMError(
            f"Embedded LLM '{name}' is neither a GGUF file nor a packaged model ({known}). "
            "Pass --llm-model with a path to a .gguf file."
        )
    return path


class EmbeddedProvider(LLMProvider):
    name = "embedded"
    supports_logprobs = True

    def __init__(
        self,
        model: str | None = None,
        *,
        num_ctx: int = 4096,
        threads: int | None = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        path = resolve_gguf(model)
        super().__init__(model or DEFAULT_EMBEDDED_MODEL, **kwargs)
        try:
            import xllamacpp
        except ImportError as exc:
            raise MissingDependencyError("xllamacpp", "build", "The embedded LLM provider") from exc
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = num_ctx
        params.n_parallel = 1
        params.cache_prompt = True  # grading calls share a prefix (instructions + query): reuse its KV cache
        params.no_extra_bufts = True  # the AMX weight-repack path crashes on some x86 CPUs
        params.warmup = False
        params.verbosity = -1
        threads = threads or os.cpu_count() or 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        packaged = PACKAGED_MODELS.get(model or DEFAULT_EMBEDDED_MODEL)
        chat_template = chat_template or (packaged.chat_template if packaged else None)
        if chat_template:
            params.chat_template = chat_template
            params.use_jinja = False  # a built-in template name; with jinja on it would be the template text
        try:
            self._server: Any = xllamacpp.Server(params)
        except Exception as exc:
            raise LLMError(f"llama.cpp could not load {path}: {exc}. Is it a valid GGUF file?") from exc
        self._lock = threading.Lock()

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        temperature, seed = self.sampling(request)
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        }
        if request.get("top_logprobs"):
            body.update(logprobs=True, top_logprobs=request["top_logprobs"])
        with self._lock:
            response = self._server.handle_chat_completions(body)
        if "error" in response:
            message = response["error"].get("message", response["error"])
            raise TransientLLMError(f"llama.cpp error: {message}")
        usage = response.get("usage", {})
        choice = response["choices"][0]
        content = (choice.get("logprobs") or {}).get("content")
        return LLMReply(
            text=choice["message"].get("content") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            output_tokens=usage.get("completion_tokens", 0),
            logprobs=token_alternatives(content) if content else None,
        )

    def close(self) -> None:
        self._server = None
