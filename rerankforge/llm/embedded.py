"""llama.cpp in-process (the ``xllamacpp`` wheel) on a GGUF file: no server, no network."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from rerankforge.errors import LLMError, MissingDependencyError
from rerankforge.llm.base import LLMProvider, LLMReply, Message, TransientLLMError, token_alternatives
from rerankforge.llm.packaged import DEFAULT_EMBEDDED_MODEL, PACKAGED_MODELS, packaged_gguf_path, rerankforge_home

logger = logging.getLogger(__name__)
REPACK_RECORD = "llama_repack.json"
_PROBE = """
import sys, xllamacpp
params = xllamacpp.CommonParams()
params.model.path = sys.argv[1]
params.n_ctx = 256
params.warmup = False
params.verbosity = -1
params.no_extra_bufts = False
reply = xllamacpp.Server(params).handle_completions({"prompt": "1, 2, 3,", "n_predict": 4, "temperature": 0.0})
sys.exit(0 if (reply.get("usage") or {}).get("completion_tokens") else 3)
"""


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


def _cpu_identity() -> str:
    """The CPU's model name and feature flags (Linux), else what ``platform`` says."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        wanted = [line for line in info if line.split(":")[0].strip() in ("model name", "flags", "Features")]
        return "\n".join(dict.fromkeys(wanted))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def repack_runs_here(gguf: Path) -> bool:
    """Whether llama.cpp's CPU weight repacking loads and generates on this machine with this model.

    The repacked layouts decode faster (28 against 22 tokens/s for the packaged 1.5B on 2 AVX2 cores), but the
    AMX repack path crashed the process on some x86 CPUs. So it is tried once per CPU, llama.cpp build and
    model, in a child process where a crash costs nothing, and the outcome is kept in
    ``$RERANKFORGE_HOME/llama_repack.json``; delete that file to try again.
    """
    import xllamacpp

    material = [xllamacpp.get_system_info(), _cpu_identity(), gguf.name, gguf.stat().st_size]
    key = hashlib.sha256(json.dumps(material).encode("utf-8")).hexdigest()[:24]
    record_file = rerankforge_home() / REPACK_RECORD
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if isinstance(record.get(key), bool):
        return record[key]
    try:
        child = subprocess.run(
            [sys.executable, "-c", _PROBE, str(gguf)], capture_output=True, timeout=600, check=False
        )  # fmt: skip
        works = child.returncode == 0
    except subprocess.TimeoutExpired:
        works = False
    if not works:
        logger.warning("llama.cpp's weight repacking failed on this CPU with %s: it stays off", gguf.name)
    record[key] = works
    try:
        record_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = record_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        tmp.replace(record_file)
    except OSError:  # a read-only home: probe again next time
        pass
    return works


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
        repack: bool | None = None,
        ram_cache_mib: int | None = None,
        swa_full: bool = False,
        parallel: int = 1,
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
        # parallel sequences: llama.cpp decodes them in one batch (decoding is memory-bound, so a second sequence
        # costs far less than a second call); each slot keeps the whole num_ctx
        self.parallel = max(1, int(parallel))
        params.n_ctx = num_ctx * self.parallel
        params.n_parallel = self.parallel
        params.cache_prompt = True  # calls share a prefix (instructions, then a passage): reuse its KV cache
        # A sliding-window model (Gemma 3) reuses a cached prefix only with a full-size cache. Off by default: the
        # planner's calibration does not yet model prefix reuse, and its estimate for such models assumes none.
        params.swa_full = swa_full
        # llama.cpp's host-RAM prompt cache (default 8 GiB; the process grows by a prompt's KV state a call) stays
        # on: without it grading calls read 68% of their prompt from cache instead of 82% (2.0 s a call, not 1.4)
        if ram_cache_mib is not None:
            params.cache_ram_mib = ram_cache_mib
        self.repack = repack_runs_here(path) if repack is None else repack
        params.no_extra_bufts = not self.repack
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
        self._slots = threading.Semaphore(self.parallel)  # calls beyond the slots wait here, not in llama.cpp

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
        with self._slots:
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
            cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
        )

    def close(self) -> None:
        self._server = None
