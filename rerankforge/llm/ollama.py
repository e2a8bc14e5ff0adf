"""Ollama through the official ``ollama`` client; structured output via ``format=<JSON schema>``."""

from __future__ import annotations

import os
from typing import Any

from rerankforge.errors import LLMError, MissingDependencyError
from rerankforge.llm.base import LLMProvider, LLMReply, Message, TransientLLMError, token_alternatives

DEFAULT_HOST = "http://127.0.0.1:11434"


def ollama_host(host: str | None) -> str:
    """The configured host, else ``$OLLAMA_HOST`` (as the Ollama CLI reads it), else localhost."""
    return host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST


def _client(host: str, timeout: float) -> Any:
    try:
        import ollama
    except ImportError as exc:
        raise MissingDependencyError("ollama", "build", "The Ollama provider") from exc
    return ollama.Client(host=host, timeout=timeout)


def list_ollama_models(host: str | None = None, timeout: float = 2.0) -> list[str] | None:
    """Names of the models an Ollama server has pulled, or ``None`` when no server answers."""
    try:
        response = _client(ollama_host(host), timeout).list()
    except MissingDependencyError:
        raise
    except Exception:  # any connection failure means "no server here"
        return None
    return [m.model for m in response.models if m.model]


LOGPROBS_SINCE = "0.12.11"  # the first Ollama that returns token log-probabilities from /api/chat


class OllamaProvider(LLMProvider):
    name = "ollama"
    supports_logprobs = True  # from Ollama LOGPROBS_SINCE on; older servers leave them out, grades use the argmax

    def __init__(
        self,
        model: str,
        *,
        host: str | None = None,
        timeout_s: float = 300.0,
        num_ctx: int = 4096,
        keep_alive: str = "30m",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.host = ollama_host(host)
        self.num_ctx = num_ctx
        self.keep_alive = keep_alive
        self._client = _client(self.host, timeout_s)
        self._answered = False  # once the server has answered, a refused connection is a restart: retried

    def sampling_options(self) -> dict[str, Any]:
        return {**super().sampling_options(), "num_ctx": self.num_ctx}

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        import httpx
        import ollama

        temperature, seed = self.sampling(request)
        options = {**self.sampling_options(), "temperature": temperature, "seed": seed, "num_predict": max_tokens}
        extra: dict[str, Any] = {}
        if request.get("top_logprobs"):
            extra = {"logprobs": True, "top_logprobs": request["top_logprobs"]}
        try:
            response = self._client.chat(
                model=self.model,
                messages=messages,
                format=schema,
                keep_alive=self.keep_alive,
                options=options,
                **extra,
            )
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise LLMError(
                    f"Ollama at {self.host} has no model '{self.model}'. Pull it with: ollama pull {self.model}"
                ) from exc
            if exc.status_code >= 500 or exc.status_code == 429:
                raise TransientLLMError(f"Ollama answered {exc.status_code}: {exc.error}") from exc
            raise LLMError(f"Ollama at {self.host} refused the request ({exc.status_code}): {exc.error}") from exc
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise TransientLLMError(f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a reply that is not the JSON Ollama sends: cut short, or another server
            raise TransientLLMError(f"unreadable reply from {self.host}: {exc}") from exc
        except (ConnectionError, httpx.ConnectError) as exc:
            message = (
                f"No Ollama server answers at {self.host}. Start it with `ollama serve`, or set OLLAMA_HOST / "
                "--llm-host to where it runs."
            )
            if self._answered:
                raise TransientLLMError(message) from exc
            raise LLMError(message) from exc
        self._answered = True
        return LLMReply(
            text=response.message.content or "",
            prompt_tokens=response.prompt_eval_count or 0,
            output_tokens=response.eval_count or 0,
            logprobs=token_alternatives(response.logprobs) if response.logprobs else None,
        )
