"""Tolerant JSON parsing of model output, the append-only LLM cache, CachedLLM's one re-ask, and the
provider base class's retries. The provider here is a scripted one built on the real LLMProvider base
class: these tests are about the cache and retry logic, not about a model."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from rerankforge.errors import LLMError
from rerankforge.llm import CachedLLM, LLMCache, LLMProvider, LLMReply, extract_json
from rerankforge.llm.base import Message, TransientLLMError
from rerankforge.llm.cache import entry_checksum

GRADE_SCHEMA = {"type": "object", "properties": {"grade": {"type": "integer"}}, "required": ["grade"]}
MESSAGES: list[Message] = [
    {"role": "system", "content": "Grade how well the passage answers the query, 0 to 3."},
    {"role": "user", "content": "Query: dock wiring\n<passage>\nThe dock needs a 16 A circuit.\n</passage>"},
]


class ScriptedLLM(LLMProvider):
    """Answers from a script, one entry per call; an exception in the script is raised instead."""

    name = "scripted"

    def __init__(self, *script: str | LLMReply | Exception, retries: int = 0, seed: int = 13) -> None:
        super().__init__("script-1", seed=seed, retries=retries)
        self.script = list(script)
        self.seen: list[list[Message]] = []

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        self.seen.append([dict(m) for m in messages])
        if not self.script:
            raise AssertionError("the provider was called more often than the test scripted")
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, LLMReply) else LLMReply(answer, prompt_tokens=100, output_tokens=7)


def grade(value: Any) -> int:
    result = value["grade"]
    if not isinstance(result, int) or not 0 <= result <= 3:
        raise ValueError(f"grade must be an integer 0..3, got {result!r}")
    return result


def ask(llm: CachedLLM, messages: list[Message] = MESSAGES, template_hash: str = "t1") -> int | None:
    return llm.ask(messages, GRADE_SCHEMA, template_hash=template_hash, max_tokens=16, validate=grade, stage="grade")


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "llm_cache.jsonl"


# --- extract_json ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"grade": 2}', {"grade": 2}),
        ('Sure! Here is my answer: {"grade": 2} I hope this helps.', {"grade": 2}),
        ('```json\n{"queries": ["how to mount the dock"]}\n```', {"queries": ["how to mount the dock"]}),
        ('Answer:\n```\n{"grade": 1}\n```\nDone.', {"grade": 1}),
        ('```text\nnot json\n```\n```json\n{"grade": 3}\n```', {"grade": 3}),
        ('{"queries": ["a", "b",],}', {"queries": ["a", "b"]}),
        ('```json\n{"grade": 0,\n}\n```', {"grade": 0}),
        ('["first query", "second query"]', ["first query", "second query"]),
        ('{"outer": {"inner": [1, 2, {"deep": true}]}}', {"outer": {"inner": [1, 2, {"deep": True}]}}),
        ("2", 2),
        ("  -1.5 \n", -1.5),
    ],
)
def test_extract_json_tolerates_what_models_write(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


def test_extract_json_leaves_string_values_alone() -> None:
    # Valid JSON must come back unchanged: the trailing-comma repair is for broken JSON only.
    text = '{"query": "what goes in the brackets [a, b, ]", "note": "x, }"}'
    assert extract_json(text) == {"query": "what goes in the brackets [a, b, ]", "note": "x, }"}


def test_extract_json_skips_braces_in_the_prose_before_the_answer() -> None:
    assert extract_json('Using the scale {0..3} as asked: {"grade": 2}') == {"grade": 2}


@pytest.mark.parametrize(
    "text",
    ["", "I cannot grade this passage.", "{grade: two}", "```json\n{'grade': 2\n```", "2 or 3", "NaN grade"],
)
def test_extract_json_raises_on_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="no JSON found in model output"):
        extract_json(text)


# --- LLMCache --------------------------------------------------------------------------------------


def test_cache_entries_survive_a_reload(cache_path: Path) -> None:
    cache = LLMCache(cache_path)
    cache.put("k1", '{"grade": 2}', ok=True)
    cache.put("k2", "gibberish", ok=False)
    cache.put("k1", '{"grade": 3}', ok=True)  # a later answer for the same key wins

    reloaded = LLMCache(cache_path)

    assert len(reloaded) == 2
    assert reloaded.get("k1") == {
        "key": "k1",
        "text": '{"grade": 3}',
        "ok": True,
        "sum": entry_checksum("k1", '{"grade": 3}', True),
    }
    assert reloaded.get("k2") == {
        "key": "k2",
        "text": "gibberish",
        "ok": False,
        "sum": entry_checksum("k2", "gibberish", False),
    }
    assert reloaded.get("k3") is None
    assert cache_path.parent.is_dir()


def test_cache_keeps_non_ascii_text(cache_path: Path) -> None:
    LLMCache(cache_path).put("k", '{"queries": ["Ladestation für Gäste ✓"]}', ok=True)
    assert LLMCache(cache_path).get("k")["text"] == '{"queries": ["Ladestation für Gäste ✓"]}'  # type: ignore[index]


def test_cache_ignores_a_torn_last_line(cache_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = LLMCache(cache_path)
    cache.put("k1", '{"grade": 2}', ok=True)
    with cache_path.open("a", encoding="utf-8") as handle:  # a crash in the middle of writing the next line
        handle.write('{"key": "k2", "text": "{\\"gra')

    reloaded = LLMCache(cache_path)

    assert len(reloaded) == 1
    assert reloaded.get("k1") is not None and reloaded.get("k2") is None
    assert "damaged line" in caplog.text


def test_cache_appends_after_a_torn_line_are_not_lost(cache_path: Path) -> None:
    LLMCache(cache_path).put("k1", '{"grade": 2}', ok=True)
    with cache_path.open("a", encoding="utf-8") as handle:
        handle.write('{"key": "k2", "te')

    after_crash = LLMCache(cache_path)
    after_crash.put("k3", '{"grade": 1}', ok=True)

    # The answer paid for after the crash must survive the next run's reload.
    entry = LLMCache(cache_path).get("k3")
    assert entry is not None and (entry["text"], entry["ok"]) == ('{"grade": 1}', True)


def test_cache_concurrent_puts_keep_every_line_whole(cache_path: Path) -> None:
    cache = LLMCache(cache_path)

    def writer(worker: int) -> None:
        for i in range(40):
            cache.put(f"w{worker}-{i}", json.dumps({"grade": i % 4, "pad": "x" * 200}), ok=True)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    reloaded = LLMCache(cache_path)
    assert len(reloaded) == 240
    assert all(json.loads(line)["ok"] for line in cache_path.read_text(encoding="utf-8").splitlines())


# --- CachedLLM -------------------------------------------------------------------------------------


def test_second_ask_is_a_cache_hit(cache_path: Path) -> None:
    provider = ScriptedLLM('{"grade": 2}')
    llm = CachedLLM(provider, LLMCache(cache_path))

    first = ask(llm)
    second = ask(llm)

    assert (first, second) == (2, 2)
    assert len(provider.seen) == 1
    assert (llm.stats.calls, llm.stats.cache_hits, llm.stats.invalid_outputs) == (1, 1, 0)
    assert llm.stats.by_stage == {"grade": 1}
    assert (llm.stats.prompt_tokens, llm.stats.output_tokens) == (100, 7)


def test_a_rerun_is_served_from_the_cache_file(cache_path: Path) -> None:
    assert ask(CachedLLM(ScriptedLLM('{"grade": 3}'), LLMCache(cache_path))) == 3

    rerun_provider = ScriptedLLM()  # any call would fail the test
    rerun = CachedLLM(rerun_provider, LLMCache(cache_path))

    assert ask(rerun) == 3
    assert rerun_provider.seen == []
    assert (rerun.stats.calls, rerun.stats.cache_hits) == (0, 1)


def test_a_cache_entry_changed_on_disk_is_not_trusted_and_asked_again(cache_path: Path) -> None:
    assert ask(CachedLLM(ScriptedLLM('{"grade": 3}'), LLMCache(cache_path))) == 3
    # a bit flip on disk that still parses: the grade 3 became 0
    cache_path.write_text(cache_path.read_text(encoding="utf-8").replace('\\"grade\\": 3', '\\"grade\\": 0'))
    assert '\\"grade\\": 0' in cache_path.read_text(encoding="utf-8")
    provider = ScriptedLLM('{"grade": 3}')
    cache = LLMCache(cache_path)
    rerun = CachedLLM(provider, cache)
    assert cache.damaged == 1 and len(cache) == 0
    assert ask(rerun) == 3  # the real answer again, not the damaged 0
    assert (rerun.stats.calls, rerun.stats.cache_hits) == (1, 0)
    assert LLMCache(cache_path).damaged == 1  # the damaged line stays ignored; the new line is trusted
    assert ask(CachedLLM(ScriptedLLM(), LLMCache(cache_path))) == 3


def test_entries_written_before_checksums_are_still_read(cache_path: Path) -> None:
    cache_path.parent.mkdir(parents=True)
    key = CachedLLM(ScriptedLLM(), LLMCache(cache_path)).key(MESSAGES, GRADE_SCHEMA, "t1")
    cache_path.write_text(json.dumps({"key": key, "text": '{"grade": 2}', "ok": True}) + "\n", encoding="utf-8")
    assert ask(CachedLLM(ScriptedLLM(), LLMCache(cache_path))) == 2


def test_the_key_changes_with_messages_template_and_sampling(cache_path: Path) -> None:
    cache = LLMCache(cache_path)
    llm = CachedLLM(ScriptedLLM(seed=13), cache)
    other_seed = CachedLLM(ScriptedLLM(seed=14), cache)
    base = llm.key(MESSAGES, GRADE_SCHEMA, "t1")

    assert base == llm.key([dict(m) for m in MESSAGES], dict(GRADE_SCHEMA), "t1")  # same content, same key
    assert base != llm.key(MESSAGES[:1], GRADE_SCHEMA, "t1")
    assert base != llm.key(MESSAGES, GRADE_SCHEMA, "t2")
    assert base != llm.key(MESSAGES, {**GRADE_SCHEMA, "required": []}, "t1")
    assert base != other_seed.key(MESSAGES, GRADE_SCHEMA, "t1")


def test_an_invalid_answer_triggers_exactly_one_re_ask(cache_path: Path) -> None:
    provider = ScriptedLLM("The passage is relevant, I would say two.", '{"grade": 2}')
    llm = CachedLLM(provider, LLMCache(cache_path))

    assert ask(llm) == 2

    assert len(provider.seen) == 2
    first, re_ask = provider.seen
    assert first == MESSAGES
    assert re_ask[: len(MESSAGES)] == MESSAGES
    assert re_ask[len(MESSAGES)] == {"role": "assistant", "content": "The passage is relevant, I would say two."}
    assert re_ask[-1]["role"] == "user" and "not usable" in re_ask[-1]["content"]
    assert (llm.stats.calls, llm.stats.invalid_outputs, llm.stats.failed) == (2, 1, 0)
    # The good answer is cached under the original question's key.
    assert LLMCache(cache_path).get(llm.key(MESSAGES, GRADE_SCHEMA, "t1"))["text"] == '{"grade": 2}'  # type: ignore[index]


def test_an_answer_failing_validation_is_re_asked_too(cache_path: Path) -> None:
    provider = ScriptedLLM('{"grade": 7}', '{"score": 1}')  # out of range, then the wrong field
    llm = CachedLLM(provider, LLMCache(cache_path))

    assert ask(llm) is None
    assert "grade must be an integer 0..3, got 7" in provider.seen[1][-1]["content"]
    assert llm.stats.invalid_outputs == 2


def test_two_invalid_answers_give_none_and_a_rerun_does_not_ask_again(cache_path: Path) -> None:
    provider = ScriptedLLM("no idea", "still no idea")
    llm = CachedLLM(provider, LLMCache(cache_path))

    assert ask(llm) is None
    assert len(provider.seen) == 2
    assert (llm.stats.calls, llm.stats.invalid_outputs, llm.stats.failed) == (2, 2, 1)
    entry = LLMCache(cache_path).get(llm.key(MESSAGES, GRADE_SCHEMA, "t1"))
    assert entry is not None and (entry["text"], entry["ok"]) == ("still no idea", False)

    rerun_provider = ScriptedLLM()
    rerun = CachedLLM(rerun_provider, LLMCache(cache_path))
    assert ask(rerun) is None
    assert rerun_provider.seen == []
    assert (rerun.stats.calls, rerun.stats.cache_hits) == (0, 1)


def test_a_cached_answer_that_no_longer_validates_is_asked_again(cache_path: Path) -> None:
    cache = LLMCache(cache_path)
    llm = CachedLLM(ScriptedLLM('{"grade": 1}'), cache)
    cache.put(llm.key(MESSAGES, GRADE_SCHEMA, "t1"), '{"grade": 9}', ok=True)  # written by an older validator

    assert ask(llm) == 1
    assert llm.stats.calls == 1
    assert LLMCache(cache_path).get(llm.key(MESSAGES, GRADE_SCHEMA, "t1"))["text"] == '{"grade": 1}'  # type: ignore[index]


def test_a_provider_error_is_not_cached_as_a_failed_answer(cache_path: Path) -> None:
    llm = CachedLLM(ScriptedLLM(LLMError("Ollama has no model 'x'. Pull it with: ollama pull x")), LLMCache(cache_path))

    with pytest.raises(LLMError, match="ollama pull x"):
        ask(llm)
    assert len(LLMCache(cache_path)) == 0
    assert llm.stats.failed == 0

    assert ask(CachedLLM(ScriptedLLM('{"grade": 0}'), LLMCache(cache_path))) == 0


# --- retries in LLMProvider.chat_json --------------------------------------------------------------


def test_a_transient_error_is_retried(cache_path: Path, no_backoff: list[float]) -> None:
    provider = ScriptedLLM(TransientLLMError("503 server busy"), '{"grade": 3}', retries=2)
    llm = CachedLLM(provider, LLMCache(cache_path))

    assert ask(llm) == 3

    assert len(provider.seen) == 2
    assert llm.stats.calls == 1  # one logical call, retried inside chat_json
    assert len(no_backoff) == 1 and 1.0 <= no_backoff[0] <= 2.0


def test_retries_back_off_and_then_give_up(no_backoff: list[float]) -> None:
    provider = ScriptedLLM(*(TransientLLMError("connection reset") for _ in range(3)), retries=2)

    with pytest.raises(LLMError, match=r"scripted:script-1 failed 3 times in a row \(connection reset\)"):
        provider.chat_json(MESSAGES, GRADE_SCHEMA, 16)

    assert len(provider.seen) == 3
    assert len(no_backoff) == 2
    assert 1.0 <= no_backoff[0] <= 2.0 and 2.0 <= no_backoff[1] <= 4.0


def test_a_permanent_error_is_not_retried(no_backoff: list[float]) -> None:
    provider = ScriptedLLM(LLMError("model not found"), '{"grade": 1}', retries=3)

    with pytest.raises(LLMError, match="model not found"):
        provider.chat_json(MESSAGES, GRADE_SCHEMA, 16)
    assert len(provider.seen) == 1
    assert no_backoff == []


def test_zero_retries_means_one_attempt(no_backoff: list[float]) -> None:
    provider = ScriptedLLM(TransientLLMError("timed out"), '{"grade": 1}', retries=0)

    with pytest.raises(LLMError, match=r"failed 1 times in a row \(timed out\)"):
        provider.chat_json(MESSAGES, GRADE_SCHEMA, 16)
    assert len(provider.seen) == 1 and no_backoff == []


def test_logprobs_and_a_samples_options_are_cached_under_their_own_key(cache_path: Path) -> None:
    logprobs = [{"token": "2", "top": {"2": -0.2, "3": -1.9}}]
    provider = ScriptedLLM(LLMReply('{"grade": 2}', logprobs=logprobs), '{"grade": 3}')
    llm = CachedLLM(provider, LLMCache(cache_path))
    ask_one = {"template_hash": "t1", "max_tokens": 16, "validate": grade, "stage": "grade"}

    first = llm.ask_answer(MESSAGES, GRADE_SCHEMA, request={"top_logprobs": 5}, **ask_one)
    sample = llm.ask_answer(MESSAGES, GRADE_SCHEMA, request={"top_logprobs": 5, "seed": 14}, **ask_one)
    assert (first.value, first.logprobs) == (2, logprobs) and (sample.value, sample.logprobs) == (3, None)

    again = CachedLLM(ScriptedLLM(), LLMCache(cache_path))
    assert again.ask_answer(MESSAGES, GRADE_SCHEMA, request={"top_logprobs": 5}, **ask_one) == first
    assert again.stats.cache_hits == 1 and again.stats.calls == 0
    line = json.loads(cache_path.read_text().splitlines()[0])
    line["logprobs"][0]["top"]["3"] = -0.1  # tampered with on disk: not trusted any more
    cache_path.write_text(json.dumps(line) + "\n")
    assert LLMCache(cache_path).damaged == 1


class SlowLLM(LLMProvider):
    """Answers {"grade": 1} after ``delay_s``: stands for a model's latency."""

    name = "slow"

    def __init__(self, delay_s: float) -> None:
        super().__init__("slow-1")
        self.delay_s = delay_s

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        import time

        time.sleep(self.delay_s)
        return LLMReply('{"grade": 1}', prompt_tokens=10, output_tokens=3)


def test_busy_seconds_count_calls_in_parallel_once(tmp_path: Path) -> None:
    import time

    from rerankforge.llm.hosts import map_ordered

    llm = CachedLLM(SlowLLM(0.4), LLMCache(tmp_path / "cache.jsonl"), concurrency=3)

    def ask(i: int) -> int | None:
        messages = [{"role": "user", "content": f"<passage>{i}</passage>"}]
        return llm.ask(
            messages, GRADE_SCHEMA, template_hash="t", max_tokens=8, validate=lambda v: v["grade"], stage="g"
        )

    start = time.perf_counter()
    assert list(map_ordered(ask, range(6), 3)) == [1] * 6
    wall = time.perf_counter() - start
    busy = llm.stats.busy_seconds
    # Six calls of 0.4 s are 2.4 s of call time, three at a time: busy is the wall time they filled (0.8 s).
    assert 0.8 <= busy <= wall and busy < 2.4
    before = llm.stats.busy_seconds
    assert ask(0) == 1 and llm.stats.busy_seconds == before  # answered from the run folder's cache: no LLM time
