"""Any OpenAI-compatible chat endpoint: vLLM, llama.cpp server, LM Studio, ..."""

from __future__ import annotations

import os
from typing import Any

from rerankforge.errors import LLMError, MissingDependencyError
from rerankforge.llm.base import LLMProvider, LLMReply, Message, TransientLLMError, token_alternatives


class OpenAIProvider(LLMProvider):
    name = "openai"
    supports_logprobs = True  # vLLM and llama.cpp's server return them; a server that refuses is asked without

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

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        import openai

        temperature, seed = self.sampling(request)
        kwargs: dict[str, Any] = {}
        if self._json_schema_supported:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
        if request.get("top_logprobs") and self.supports_logprobs:
            kwargs.update(logprobs=True, top_logprobs=request["top_logprobs"])
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                **kwargs,
            )
        except openai.BadRequestError as exc:
            if "response_format" in kwargs and "response_format" in str(exc):
                # Servers without JSON-schema support: fall back to tolerant parsing of plain output.
                self._json_schema_supported = False
                return self._chat(messages, schema, max_tokens, **request)
            if "logprobs" in kwargs and "logprobs" in str(exc):
                self.supports_logprobs = False  # this server has none: grades fall back to the argmax
                return self._chat(messages, schema, max_tokens, **request)
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
        choice = response.choices[0]
        content = choice.logprobs.content if choice.logprobs else None
        return LLMReply(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            logprobs=token_alternatives(content) if content else None,
            cached_tokens=(getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0),
        )
