"""LLM providers behind one protocol: ``ollama``, ``openai`` (compatible servers) and ``embedded`` llama.cpp."""

from __future__ import annotations

import logging

from rerankforge.config import LLMConfig
from rerankforge.errors import LLMError
from rerankforge.llm.base import LLMProvider, LLMReply, extract_json
from rerankforge.llm.cache import CachedLLM, LLMCache

logger = logging.getLogger(__name__)

__all__ = [
    "CachedLLM",
    "LLMCache",
    "LLMProvider",
    "LLMReply",
    "concurrency_for",
    "extract_json",
    "make_provider",
    "resolve_llm",
]


def concurrency_for(cfg: LLMConfig, provider: LLMProvider) -> int:
    """Calls in flight: ``llm.concurrency`` when set, else the provider's default for its hosts."""
    from rerankforge.llm.hosts import default_concurrency

    return cfg.concurrency or default_concurrency(provider.name, len(cfg.server_urls()))


def _pick_ollama_model(models: list[str]) -> str | None:
    """A chat model from an Ollama server's list: embedding-only models cannot write or grade."""
    chat = [m for m in models if "embed" not in m.lower()]
    return chat[0] if chat else None


def resolve_llm(cfg: LLMConfig) -> LLMConfig:
    """Settle ``provider="auto"`` (and a missing Ollama model) into a concrete choice.

    Ollama wins when a server answers at the configured host / ``$OLLAMA_HOST`` and has a chat model;
    otherwise the embedded llama.cpp runtime with the packaged GGUF.
    """
    if cfg.hosts and not cfg.host:
        cfg = cfg.model_copy(update={"host": cfg.hosts[0]})  # the first host answers for all of them
    if cfg.provider == "auto":
        from rerankforge.llm.ollama import list_ollama_models

        models = list_ollama_models(cfg.host)
        model = cfg.model if cfg.model and models and cfg.model in models else None
        model = model or (None if cfg.model else _pick_ollama_model(models or []))
        if models is not None and model:
            return cfg.model_copy(update={"provider": "ollama", "model": model})
        return cfg.model_copy(update={"provider": "embedded"})
    if cfg.provider == "ollama" and not cfg.model:
        from rerankforge.llm.ollama import list_ollama_models, ollama_host

        models = list_ollama_models(cfg.host)
        if models is None:
            raise LLMError(f"No Ollama server answers at {ollama_host(cfg.host)}. Start it with `ollama serve`.")
        model = _pick_ollama_model(models)
        if model is None:
            raise LLMError("Ollama has no chat model. Pull one, e.g.: ollama pull qwen2.5:7b-instruct")
        return cfg.model_copy(update={"model": model})
    if cfg.provider == "openai" and not cfg.model:
        raise LLMError("The openai provider needs a model name: pass --llm-model NAME.")
    return cfg


def make_provider(cfg: LLMConfig) -> LLMProvider:
    """Build the provider a (resolved) config names; several hosts make one provider that spreads calls."""
    cfg = resolve_llm(cfg)
    urls = cfg.server_urls()
    if len(urls) > 1 and cfg.provider != "embedded":
        from rerankforge.llm.hosts import MultiHostProvider

        single = cfg.model_copy(update={"hosts": []})
        return MultiHostProvider([_make_one(single.model_copy(update={"host": u})) for u in urls], retries=cfg.retries)
    return _make_one(cfg.model_copy(update={"host": urls[0]}))


def _make_one(cfg: LLMConfig) -> LLMProvider:
    common = {"seed": cfg.seed, "temperature": cfg.temperature, "retries": cfg.retries}
    if cfg.provider == "ollama":
        from rerankforge.llm.ollama import OllamaProvider

        assert cfg.model is not None
        return OllamaProvider(
            cfg.model,
            host=cfg.host,
            timeout_s=cfg.timeout_s,
            num_ctx=cfg.num_ctx,
            keep_alive=cfg.keep_alive,
            **common,
        )
    if cfg.provider == "openai":
        from rerankforge.llm.openai_compat import OpenAIProvider

        assert cfg.model is not None
        return OpenAIProvider(cfg.model, host=cfg.host, api_key=cfg.api_key, timeout_s=cfg.timeout_s, **common)
    from rerankforge.llm.embedded import EmbeddedProvider

    return EmbeddedProvider(
        cfg.model, num_ctx=cfg.num_ctx, threads=cfg.threads, chat_template=cfg.chat_template,
        parallel=cfg.concurrency or 1, **common,
    )  # fmt: skip
