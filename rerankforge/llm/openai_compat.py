"""Any OpenAI-compatible chat endpoint: vLLM, llama.cpp server, LM Studio, ..."""

from __future__ import annotations

import os
from typing import Any

from rerankforge.errors import LLMError, MissingDependencyError
from rerankforge.llm.base import LLMProvider, LLMReply, Message, TransientLLMError


class OpenAIProvider(LLMProvider):
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        host: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        try:
            import openai
        except ImportError as exc:
            raise MissingDependencyError("openai", "build", "The OpenAI-compatible provider") from exc
        self.host = host or os.environ.get("OPENAI_BASE_URL")
        if not self.host:
            raise LLMError("The openai provider needs a server URL: pass --llm-host http://HOST:PORT/v1.")
        self._client = openai.OpenAI(
            base_url=self.host,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            timeout=timeout_s,
            max_retries=0,  # retries are ours, with backoff and jitter
        )
        self._json_schema_supported = True

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int) -> LLMReply:
        import openai

        response_format: dict[str, Any] | None = None
        if self._json_schema_supported:
            response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
        kwargs: dict[str, Any] = {"response_format": response_format} if response_format else {}
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=self.temperature,
                seed=self.seed,
                **kwargs,
            )
        except openai.BadRequestError as exc:
            if response_format and "response_format" in str(exc):
                # Servers without JSON-schema support: fall back to tolerant parsing of plain output.
                self._json_schema_supported = False
                return self._chat(messages, schema, max_tokens)
            raise LLMError(f"{self.host} refused the request: {exc}") from exc
        except openai.NotFoundError as exc:
            raise LLMError(f"{self.host} does not serve model '{self.model}' ({exc}). Check --llm-model.") from exc
        except openai.AuthenticationError as exc:
            raise LLMError(f"{self.host} rejected the API key. Set OPENAI_API_KEY or llm.api_key.") from exc
        except (openai.APITimeoutError, openai.InternalServerError, openai.RateLimitError) as exc:
            raise TransientLLMError(f"{type(exc).__name__}: {exc}") from exc
        except openai.APIConnectionError as exc:
            raise TransientLLMError(f"cannot reach {self.host}: {exc}") from exc
        usage = response.usage
        return LLMReply(
            text=response.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        )
