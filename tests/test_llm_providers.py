"""The LLM providers against real runtimes: llama.cpp in-process, an Ollama-API server backed by llama.cpp,
and llama.cpp's own OpenAI-compatible HTTP server. The model is the tiny packaged Gemma 3 270M; the schemas
are tight (an enum, a short string) so its grammar-constrained answers stay short and fast."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rerankforge.config import LLMConfig
from rerankforge.errors import LLMError
from rerankforge.llm import extract_json, make_provider, resolve_llm
from rerankforge.llm.embedded import EmbeddedProvider
from rerankforge.llm.ollama import LOGPROBS_SINCE, OllamaProvider, list_ollama_models, ollama_host
from rerankforge.llm.openai_compat import OpenAIProvider
from rerankforge.llm.packaged import packaged_gguf_path
from tests.ollama_api_server import OllamaAPIServer

SERVED = "gemma3:270m"
CAPITAL_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["Paris", "London", "Rome", "Berlin"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
SHORT_ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 30}},
    "required": ["answer"],
    "additionalProperties": False,
}
QUESTION = [{"role": "user", "content": 'What is the capital of France? Reply in JSON like {"answer": "..."}'}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dead_url() -> str:
    """A loopback URL with nothing listening: connections are refused at once."""
    return f"http://127.0.0.1:{_free_port()}"


@pytest.fixture
def ollama_server(gemma_provider: EmbeddedProvider) -> Iterator[OllamaAPIServer]:
    with OllamaAPIServer(gemma_provider, models=[SERVED], max_lifetime_s=120) as server:
        yield server
    assert not server.running


def _assert_capital_answer(text: str) -> None:
    value = extract_json(text)
    assert set(value) == {"answer"}
    assert value["answer"] in CAPITAL_SCHEMA["properties"]["answer"]["enum"]


# --- embedded llama.cpp ----------------------------------------------------------------------------


@pytest.mark.slow  # real generation: ~1 s alone, far longer when the 2 cores are shared
def test_embedded_chat_json_follows_the_schema(gemma_provider: EmbeddedProvider) -> None:
    reply = gemma_provider.chat_json(QUESTION, SHORT_ANSWER_SCHEMA, max_tokens=48)

    value = extract_json(reply.text)
    assert set(value) == {"answer"}
    assert isinstance(value["answer"], str) and 0 < len(value["answer"]) <= 30
    assert reply.output_tokens > 0
    # The chat template must put the messages into the prompt: the question alone is more than 15 tokens.
    assert reply.prompt_tokens > 15


def _sharing_a_prefix(question: str) -> list[dict[str, str]]:
    facts = " ".join(f"Fact {i}: the city number {i} is not a capital." for i in range(12))
    return [
        {"role": "system", "content": f"You answer geography questions. {facts}"},
        {"role": "user", "content": question},
    ]


@pytest.mark.slow  # real generation, twice
def test_embedded_reports_the_prompt_tokens_its_prefix_cache_served(tmp_path: Path) -> None:
    from rerankforge.llm import CachedLLM, LLMCache

    # Gemma 3 attends in sliding windows: only with a full-size cache does llama.cpp reuse its prefix
    provider = EmbeddedProvider("gemma-3-270m-q4_k_m", num_ctx=2048, swa_full=True)
    llm = CachedLLM(provider, LLMCache(tmp_path / "llm_cache.jsonl"))
    for question in ('The capital of France? JSON {"answer": "..."}', 'The capital of Italy? JSON {"answer": "..."}'):
        answer = llm.ask(
            _sharing_a_prefix(question), CAPITAL_SCHEMA, template_hash="t", max_tokens=16, validate=str, stage="q"
        )
        assert answer is not None
    stats = llm.stats
    assert stats.calls == 2
    # The second prompt repeats the first one's system message (over 150 tokens): llama.cpp reads it from cache.
    assert 150 < stats.cached_prompt_tokens < stats.prompt_tokens


@pytest.mark.slow  # real generation: four calls
def test_embedded_parallel_slots_answer_concurrent_calls_as_one_slot_does() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from rerankforge.config import LLMConfig
    from rerankforge.llm import make_provider

    questions = [f'The capital of {c}? JSON {{"answer": "..."}}' for c in ("France", "Italy", "Spain", "Peru")]
    one = EmbeddedProvider("gemma-3-270m-q4_k_m", num_ctx=1024)
    alone = [one.chat_json(_sharing_a_prefix(q), CAPITAL_SCHEMA, max_tokens=16).text for q in questions]
    one.close()
    # llm.concurrency sizes the embedded runtime's parallel sequences; each keeps the whole context
    two = make_provider(LLMConfig(provider="embedded", model="gemma-3-270m-q4_k_m", num_ctx=1024, concurrency=2))
    assert two.parallel == 2
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda q: two.chat_json(_sharing_a_prefix(q), CAPITAL_SCHEMA, max_tokens=16),
                                questions))  # fmt: skip
    two.close()
    for reply in replies:
        assert extract_json(reply.text)["answer"] in CAPITAL_SCHEMA["properties"]["answer"]["enum"]
    # greedy decoding in a batch of two can differ from one sequence in the last bits of a logit, rarely in a token
    assert sum(r.text == a for r, a in zip(replies, alone, strict=True)) >= 3


def test_weight_repacking_is_tried_in_a_child_once_and_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from rerankforge.llm.embedded import REPACK_RECORD, repack_runs_here

    gguf = packaged_gguf_path("gemma-3-270m-q4_k_m")  # resolved before the home moves: no re-assembly
    monkeypatch.setenv("RERANKFORGE_HOME", str(tmp_path))
    works = repack_runs_here(gguf)  # a real llama.cpp load and 4 tokens, in a child process

    record = json.loads((tmp_path / REPACK_RECORD).read_text(encoding="utf-8"))
    assert list(record.values()) == [works]
    # Later calls read the record instead of probing again: flipping it flips the answer.
    (tmp_path / REPACK_RECORD).write_text(json.dumps({k: not v for k, v in record.items()}), encoding="utf-8")
    assert repack_runs_here(gguf) is (not works)
    # A model the child cannot load (or a crash there) means off, with the parent unharmed.
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(64))
    assert repack_runs_here(broken) is False
    assert len(json.loads((tmp_path / REPACK_RECORD).read_text(encoding="utf-8"))) == 2


def test_embedded_rejects_an_unknown_model() -> None:
    with pytest.raises(LLMError, match=r"neither a GGUF file nor a packaged model.*--llm-model"):
        EmbeddedProvider("no-such-model-q4")


# --- Ollama through the official client, against the Ollama-API server -----------------------------


@pytest.mark.slow  # real generation: ~1 s alone, far longer when the 2 cores are shared
def test_ollama_structured_output_through_format_schema(
    ollama_server: OllamaAPIServer, loopback_only: list[object]
) -> None:
    provider = OllamaProvider(SERVED, host=ollama_server.host, retries=0, num_ctx=2048, seed=7)

    reply = provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32)

    _assert_capital_answer(reply.text)
    assert reply.prompt_tokens > 15 and reply.output_tokens > 0
    (sent,) = ollama_server.requests_to("/api/chat")
    assert sent.answered == 200
    assert sent.body["model"] == SERVED
    assert sent.body["stream"] is False
    assert sent.body["format"] == CAPITAL_SCHEMA
    assert sent.body["keep_alive"] == "30m"
    assert sent.body["options"] == {"temperature": 0.0, "seed": 7, "num_ctx": 2048, "num_predict": 32}
    assert sent.body["messages"] == QUESTION
    assert loopback_only == []


def test_list_ollama_models_returns_the_served_names(gemma_provider: EmbeddedProvider) -> None:
    with OllamaAPIServer(gemma_provider, models=["nomic-embed-text", SERVED]) as server:
        assert list_ollama_models(server.host) == ["nomic-embed-text:latest", SERVED]


def test_list_ollama_models_is_none_when_nothing_answers(dead_url: str) -> None:
    assert list_ollama_models(dead_url) is None


def test_ollama_missing_model_says_how_to_pull_it(ollama_server: OllamaAPIServer, no_backoff: list[float]) -> None:
    provider = OllamaProvider("qwen2.5:7b-instruct", host=ollama_server.host, retries=2)

    with pytest.raises(LLMError, match=r"has no model 'qwen2.5:7b-instruct'.*ollama pull qwen2.5:7b-instruct"):
        provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32)

    # A missing model is not transient: asked once, never retried.
    assert [r.answered for r in ollama_server.requests_to("/api/chat")] == [404]
    assert no_backoff == []


def test_ollama_dead_host_says_how_to_start_it(dead_url: str, no_backoff: list[float]) -> None:
    provider = OllamaProvider(SERVED, host=dead_url, retries=2)

    with pytest.raises(LLMError, match=rf"No Ollama server answers at {dead_url}.*`ollama serve`"):
        provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32)
    assert no_backoff == []


@pytest.mark.slow  # real generation: ~1 s alone, far longer when the 2 cores are shared
def test_ollama_retries_after_a_server_error_and_a_dropped_connection(
    ollama_server: OllamaAPIServer, no_backoff: list[float]
) -> None:
    ollama_server.fail_next(1, status=500, error="llama runner process has terminated", path="/api/chat")
    ollama_server.drop_next(1, path="/api/chat")
    provider = OllamaProvider(SERVED, host=ollama_server.host, retries=2)

    reply = provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32)

    _assert_capital_answer(reply.text)
    attempts = [(r.fault, r.answered) for r in ollama_server.requests_to("/api/chat")]
    assert attempts == [("status", 500), ("drop", None), (None, 200)]
    assert len(no_backoff) == 2 and 1.0 <= no_backoff[0] <= 2.0 and 2.0 <= no_backoff[1] <= 4.0


def test_ollama_dropped_connection_is_transient(ollama_server: OllamaAPIServer, no_backoff: list[float]) -> None:
    ollama_server.drop_next(1, path="/api/chat")
    provider = OllamaProvider(SERVED, host=ollama_server.host, retries=0)

    with pytest.raises(LLMError, match=r"failed 1 times in a row \(RemoteProtocolError"):
        provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32)
    assert no_backoff == []


def test_ollama_gives_up_when_every_attempt_fails(ollama_server: OllamaAPIServer, no_backoff: list[float]) -> None:
    ollama_server.fail_next(3, status=503, error="server busy", path="/api/chat")
    provider = OllamaProvider(SERVED, host=ollama_server.host, retries=2)

    with pytest.raises(
        LLMError, match=r"ollama:gemma3:270m failed 3 times in a row \(Ollama answered 503: server busy"
    ):
        provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32)
    assert len(ollama_server.requests_to("/api/chat")) == 3
    assert len(no_backoff) == 2 and no_backoff[1] >= 2.0  # exponential backoff


def test_ollama_stalled_server_times_out(ollama_server: OllamaAPIServer, no_backoff: list[float]) -> None:
    ollama_server.stall_next(1, seconds=20, path="/api/chat")
    provider = OllamaProvider(SERVED, host=ollama_server.host, retries=0, timeout_s=0.5)

    # a read timeout, not the stalled answer: the client gave up while the server still held the reply back
    with pytest.raises(LLMError, match=r"failed 1 times in a row \(ReadTimeout"):
        provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32)
    assert len(ollama_server.requests_to("/api/chat")) == 1


def test_ollama_host_env_var_is_honoured(
    ollama_server: OllamaAPIServer, monkeypatch: pytest.MonkeyPatch, dead_url: str
) -> None:
    # The Ollama CLI's usual form: host:port without a scheme.
    env_host = f"127.0.0.1:{ollama_server.port}"
    monkeypatch.setenv("OLLAMA_HOST", env_host)

    assert ollama_host(None) == env_host
    assert ollama_host(dead_url) == dead_url  # an explicit host wins
    assert list_ollama_models() == [SERVED]
    assert OllamaProvider(SERVED).host == env_host
    assert resolve_llm(LLMConfig()).provider == "ollama"


def test_ollama_host_defaults_to_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert ollama_host(None) == "http://127.0.0.1:11434"


# --- resolving "auto" ------------------------------------------------------------------------------


def test_auto_picks_ollama_and_its_chat_model_when_a_server_answers(gemma_provider: EmbeddedProvider) -> None:
    with OllamaAPIServer(gemma_provider, models=["nomic-embed-text", SERVED]) as server:
        host = server.host
        cfg = LLMConfig(provider="auto", host=host, retries=0, num_ctx=1024)

        resolved = resolve_llm(cfg)
        provider = make_provider(cfg)

    assert (resolved.provider, resolved.model) == ("ollama", SERVED)  # the embedding model is skipped
    assert isinstance(provider, OllamaProvider)
    assert (provider.identity, provider.host, provider.retries) == (f"ollama:{SERVED}", host, 0)
    assert provider.sampling_options()["num_ctx"] == 1024


def test_auto_keeps_a_configured_model_the_server_has(gemma_provider: EmbeddedProvider) -> None:
    with OllamaAPIServer(gemma_provider, models=["llama3.2:1b", SERVED]) as server:
        resolved = resolve_llm(LLMConfig(provider="auto", host=server.host, model=SERVED))
    assert (resolved.provider, resolved.model) == ("ollama", SERVED)


def test_auto_falls_back_to_embedded_when_nothing_answers(dead_url: str) -> None:
    resolved = resolve_llm(LLMConfig(provider="auto", host=dead_url))
    assert resolved.provider == "embedded"
    assert resolved.model is None


def test_ollama_without_a_model_and_no_server_says_how_to_start_it(dead_url: str) -> None:
    with pytest.raises(LLMError, match=r"No Ollama server answers at .*`ollama serve`"):
        resolve_llm(LLMConfig(provider="ollama", host=dead_url))


def test_ollama_with_only_embedding_models_says_what_to_pull(gemma_provider: EmbeddedProvider) -> None:
    with OllamaAPIServer(gemma_provider, models=["nomic-embed-text"]) as server:
        with pytest.raises(LLMError, match=r"Ollama has no chat model.*ollama pull"):
            resolve_llm(LLMConfig(provider="ollama", host=server.host))


# --- the Ollama-API test server itself -------------------------------------------------------------


def test_ollama_api_server_speaks_ollama_and_frees_its_port(gemma_provider: EmbeddedProvider) -> None:
    server = OllamaAPIServer(gemma_provider, models=[SERVED]).start()
    port = server.port
    with httpx.Client(base_url=server.host, timeout=5) as client:
        assert client.get("/").text == "Ollama is running"
        assert client.get("/api/version").json() == {"version": LOGPROBS_SINCE}
        assert client.get("/api/nope").status_code == 404
        missing = client.post("/api/chat", json={"model": "gemma3", "messages": [], "stream": False})
        assert missing.status_code == 404 and missing.json() == {"error": "model 'gemma3' not found"}
    server.stop()
    server.stop()  # twice is fine

    assert not server.running
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))


@pytest.mark.slow  # real generation
def test_ollama_api_server_streams_ndjson_when_asked(ollama_server: OllamaAPIServer) -> None:
    import ollama

    client = ollama.Client(host=ollama_server.host, timeout=120)
    chunks = list(
        client.chat(SERVED, messages=QUESTION, format=CAPITAL_SCHEMA, stream=True, options={"num_predict": 32})
    )

    assert [c.done for c in chunks] == [False, True]
    _assert_capital_answer("".join(c.message.content or "" for c in chunks))
    assert chunks[-1].done_reason == "stop" and (chunks[-1].eval_count or 0) > 0
    assert ollama_server.requests_to("/api/chat")[0].body["stream"] is True


def test_ollama_api_server_stops_itself_after_its_lifetime(gemma_provider: EmbeddedProvider) -> None:
    server = OllamaAPIServer(gemma_provider, max_lifetime_s=0.2).start()
    deadline = time.monotonic() + 5
    while server.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.running


# --- OpenAI-compatible: llama.cpp's own HTTP server ------------------------------------------------


@pytest.fixture(scope="module")
def llama_server_url() -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server, in-process, on the tiny Gemma, bound to 127.0.0.1."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(packaged_gguf_path("gemma-3-270m-q4_k_m"))
    params.n_ctx = 2048
    params.n_parallel = 1
    params.no_extra_bufts = True
    params.swa_full = True  # Gemma 3 attends in sliding windows: without a full cache no prefix is reused
    params.warmup = False
    params.verbosity = -1
    params.chat_template = "gemma"
    params.use_jinja = False  # with jinja on, "gemma" would be taken as the template text, not a built-in name
    params.port = _free_port()
    params.hostnames = ["127.0.0.1"]
    server = xllamacpp.Server(params)
    url = str(server.listening_address)
    yield url
    del server


@pytest.mark.slow  # real generation: ~1 s alone, far longer when the 2 cores are shared
def test_openai_structured_output_through_json_schema(llama_server_url: str, loopback_only: list[object]) -> None:
    provider = OpenAIProvider("gemma-3-270m", host=f"{llama_server_url}/v1", retries=0, timeout_s=60)

    reply = provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32)

    _assert_capital_answer(reply.text)
    assert reply.prompt_tokens > 15 and reply.output_tokens > 0
    assert loopback_only == []


@pytest.mark.slow  # real generation, twice
def test_openai_reports_the_prompt_tokens_the_server_cached(llama_server_url: str) -> None:
    provider = OpenAIProvider("gemma-3-270m", host=f"{llama_server_url}/v1", retries=0, timeout_s=60)

    first = provider.chat_json(_sharing_a_prefix("The capital of France?"), CAPITAL_SCHEMA, max_tokens=16)
    second = provider.chat_json(_sharing_a_prefix("The capital of Italy?"), CAPITAL_SCHEMA, max_tokens=16)

    assert 150 < second.cached_tokens < second.prompt_tokens
    assert first.cached_tokens < second.cached_tokens


def test_openai_base_url_env_var_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    assert OpenAIProvider("gemma-3-270m").host == "http://127.0.0.1:8080/v1"
    assert OpenAIProvider("gemma-3-270m", host="http://127.0.0.1:9/v1").host == "http://127.0.0.1:9/v1"


def test_openai_wrong_host_fails_after_retries(dead_url: str, no_backoff: list[float]) -> None:
    provider = OpenAIProvider("gemma-3-270m", host=f"{dead_url}/v1", retries=2, timeout_s=5)

    with pytest.raises(LLMError, match=rf"openai:gemma-3-270m failed 3 times in a row \(cannot reach {dead_url}/v1"):
        provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32)
    assert len(no_backoff) == 2


def test_openai_without_a_url_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match=r"needs a server URL: pass --llm-host"):
        OpenAIProvider("gemma-3-270m")


def test_openai_without_a_model_says_what_to_pass() -> None:
    with pytest.raises(LLMError, match=r"openai provider needs a model name: pass --llm-model"):
        resolve_llm(LLMConfig(provider="openai", host="http://127.0.0.1:1/v1"))


# --- log-probabilities: an expected grade from each provider -------------------------------------


@pytest.mark.slow  # three real generations
def test_every_provider_returns_logprobs_for_an_expected_grade(
    gemma_provider: EmbeddedProvider, ollama_server: OllamaAPIServer, llama_server_url: str
) -> None:
    from rerankforge.stages.grade import GRADE_SCHEMA, TOP_LOGPROBS, expected_grade, parse_grade
    from rerankforge.templates import load_template

    messages = load_template("grade.jinja").render(
        query="how long does the battery last", passage="A full charge lasts nine hours.", title=None, source="a.md"
    )
    providers = [
        gemma_provider,
        OllamaProvider(SERVED, host=ollama_server.host, retries=0),
        OpenAIProvider("gemma-3-270m", host=f"{llama_server_url}/v1", retries=0, timeout_s=60),
    ]
    for provider in providers:
        reply = provider.chat_json(messages, GRADE_SCHEMA, max_tokens=24, top_logprobs=TOP_LOGPROBS)

        grade = parse_grade(extract_json(reply.text))
        assert reply.logprobs, provider.identity
        digit = next(t for t in reply.logprobs if t["token"].strip() == str(grade))
        assert len(digit["top"]) >= 2  # alternatives, not only the chosen token
        score = expected_grade(reply.logprobs)
        assert score is not None and 0.0 <= score <= 3.0
    sent = ollama_server.requests_to("/api/chat")[-1].body
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, TOP_LOGPROBS)


@pytest.mark.slow  # one real generation
def test_a_sample_sends_its_own_seed_and_temperature(ollama_server: OllamaAPIServer) -> None:
    provider = OllamaProvider(SERVED, host=ollama_server.host, retries=0, seed=7)

    reply = provider.chat_json(QUESTION, CAPITAL_SCHEMA, max_tokens=32, seed=9, temperature=0.7)

    _assert_capital_answer(reply.text)
    assert reply.logprobs is None  # not asked for
    (sent,) = ollama_server.requests_to("/api/chat")
    assert (sent.body["options"]["seed"], sent.body["options"]["temperature"]) == (9, 0.7)
    assert not sent.body.get("logprobs")
