"""A deterministic LLM for testing pipeline logic, built on the real provider base class.

It writes a query from a passage's title words (never copying a sentence) and grades a (passage, query)
pair 3 when the query is the one it writes for that passage, else 0. It keeps no state between calls, so a
build killed between the queries and the grade stage grades the same after a restart, in a new process.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

from rerankforge.llm.base import LLMProvider, LLMReply, Message

_PASSAGE = re.compile(r"<passage>\n(.*?)\n</passage>", re.DOTALL)
_QUERY = re.compile(r"^Query: (.*)$", re.MULTILINE)


def query_for(passage: str) -> str:
    """The one query this fake writes for ``passage``: its four longest words, reversed."""
    words = re.findall(r"[A-Za-z][A-Za-z0-9-]{3,}", passage)
    rare = sorted(set(words), key=lambda w: (-len(w), w))[:4]
    return "where to find " + " ".join(reversed(rare))


class FakeLLM(LLMProvider):
    name = "fake"

    def __init__(self) -> None:
        super().__init__("fake-1")
        self.calls = 0
        self._lock = threading.Lock()  # the stages call from several threads

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        with self._lock:
            self.calls += 1
        # the prompt; after an unusable answer the pipeline asks again with the prompt, that answer and a complaint
        user = next(m["content"] for m in reversed(messages) if "<passage>" in m["content"])
        passage = _PASSAGE.search(user).group(1)  # type: ignore[union-attr]
        if "grade" in schema["properties"]:
            query = _QUERY.findall(user)[-1]  # the template's own line comes last, after the passage
            # the grading prompt may put the chunk's title on the passage's first line
            untitled = passage.split("\n", 1)[-1]
            grade = 3 if query in (query_for(passage), query_for(untitled)) else 0
            return LLMReply(json.dumps({"grade": grade}), prompt_tokens=len(user) // 4, output_tokens=5)
        return LLMReply(json.dumps({"queries": [query_for(passage)]}), prompt_tokens=len(user) // 4, output_tokens=12)


class LoggedFakeLLM(FakeLLM):
    """The FakeLLM that appends the sha256 of each prompt to ``log`` before answering, then takes ``delay_s``.

    The log outlives a killed process, so a test can count the calls of several build processes; the delay
    stands for a real LLM's latency, so a kill can land while a call is in flight.
    """

    def __init__(self, log: Path, delay_s: float = 0.0) -> None:
        super().__init__()
        self.log = log
        self.delay_s = delay_s

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode("utf-8")).hexdigest()
        with self.log.open("a", encoding="utf-8") as handle:
            handle.write(digest + "\n")
        time.sleep(self.delay_s)
        return super()._chat(messages, schema, max_tokens, **request)


class MisleadingLLM(FakeLLM):
    """Writes, for each passage, the FakeLLM's query of an unrelated text instead (picked by the passage's hash
    from ``decoys``): training data that points every query at the wrong passage."""

    def __init__(self, decoys: list[str]) -> None:
        super().__init__()
        self.decoys = decoys

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        reply = super()._chat(messages, schema, max_tokens, **request)
        if "grade" in schema["properties"]:
            return reply
        user = next(m["content"] for m in reversed(messages) if "<passage>" in m["content"])
        passage = _PASSAGE.search(user).group(1)  # type: ignore[union-attr]
        decoy = self.decoys[int(hashlib.sha256(passage.encode()).hexdigest(), 16) % len(self.decoys)]
        return LLMReply(json.dumps({"queries": [query_for(decoy)]}), prompt_tokens=reply.prompt_tokens,
                        output_tokens=reply.output_tokens)  # fmt: skip


# A corpus where the first stage is weak and what a tuning learns carries over to files it never saw: every file
# describes one service under the same four headings, and a user asks for an aspect by an in-house code word that
# no text contains (the code is shared by all files, so a mapping learned on some files holds on the others).
CODES = {"Price": "zorble", "Location": "quintic", "Hours": "vexmor", "Contact": "plimbo"}
_ASPECTS = {
    "Price": ["costs {n} euros a month", "members pay {m} euros less", "payment is by card or bank transfer",
              "the fee is charged on the first day"],
    "Location": ["is on the {floor} floor", "is next to the {side} stairs", "is a short walk from the main entrance",
                 "has signs in the hallway that point the way"],
    "Hours": ["opens at {opens} in the morning", "closes at {closes} in the evening", "is shut on public holidays",
              "keeps shorter times at the weekend"],
    "Contact": ["answers on extension {ext}", "takes letters at the front desk", "replies within two working days",
                "sends urgent matters to the duty officer"],
}  # fmt: skip


def write_coded_corpus(folder: Path, files: int, seed: int = 7) -> None:
    """``files`` markdown files, one service each (an invented name), with a section per aspect of ``CODES``."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ren", "tus", "vor", "zel", "pra", "ni", "qua", "bel", "dro", "fen", "gil"]
    names: set[str] = set()
    while len(names) < files:
        names.add("".join(rng.choice(syllables) for _ in range(3)).capitalize())
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        sections = [f"# {name}\n"]
        for aspect, phrases in _ASPECTS.items():
            fill = {"n": rng.randint(10, 90), "m": rng.randint(2, 9), "floor": rng.choice(["second", "third"]),
                    "side": rng.choice(["north", "south"]), "opens": rng.choice(["seven", "eight"]),
                    "closes": rng.choice(["five", "six"]), "ext": rng.randint(100, 999)}  # fmt: skip
            sentences = [f"The {name} service {phrase.format(**fill)}." for phrase in phrases]
            rng.shuffle(sentences)
            sections.append(f"## {aspect}\n\n" + " ".join(sentences) + "\n")
        (folder / f"{name.lower()}.md").write_text("\n".join(sections), encoding="utf-8")


def coded_query(passage: str) -> str:
    """What a user of ``write_coded_corpus``'s documents asks for the passage: its aspect's code and the service."""
    name = re.search(r"The (\w+) service", passage).group(1)  # type: ignore[union-attr]
    aspect = next(aspect for aspect in CODES if passage.startswith(aspect) or f"\n{aspect}\n" in passage)
    return f"the {CODES[aspect]} of {name}"


class CodedLLM(FakeLLM):
    """Writes for each passage of ``write_coded_corpus`` the query its users ask (``coded_query``): training data
    that teaches something real, which the first stage cannot know from the words."""

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        if "grade" in schema["properties"]:
            return super()._chat(messages, schema, max_tokens, **request)
        user = next(m["content"] for m in reversed(messages) if "<passage>" in m["content"])
        passage = _PASSAGE.search(user).group(1)  # type: ignore[union-attr]
        return LLMReply(json.dumps({"queries": [coded_query(passage)]}), prompt_tokens=len(user) // 4, output_tokens=8)


class LenientCodedLLM(CodedLLM):
    """``CodedLLM``'s queries, graded by a lenient grader: every passage about the query's service is relevant
    (grade 3), whatever aspect it covers. A cross-encoder tuned on these grades learns to match the service's name
    and unlearns which section a code word asks for: tuning that hurts."""

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        if "grade" not in schema["properties"]:
            return super()._chat(messages, schema, max_tokens, **request)
        user = next(m["content"] for m in reversed(messages) if "<passage>" in m["content"])
        passage = _PASSAGE.search(user).group(1)  # type: ignore[union-attr]
        service = _QUERY.findall(user)[-1].rsplit(" ", 1)[-1]
        grade = 3 if f"The {service} service" in passage else 0
        return LLMReply(json.dumps({"grade": grade}), prompt_tokens=len(user) // 4, output_tokens=5)


def coded_training_pairs(folder: Path) -> list[tuple[str, str, float]]:
    """(coded query, passage, label) of ``write_coded_corpus``'s files in ``folder``, as a hub's reranker would have
    been taught: each passage of two sentences (a build's chunk of these files: no heading) answers its own
    aspect's code word (1) and not the service's other codes (0)."""
    pairs = []
    for path in sorted(folder.glob("*.md")):
        name = path.read_text(encoding="utf-8").split("\n", 1)[0].lstrip("# ").strip()
        passages = {}
        for section in path.read_text(encoding="utf-8").split("## ")[1:]:
            aspect, body = section.split("\n", 1)
            sentences = [s.strip() + "." for s in body.strip().split(".") if s.strip()]
            passages[aspect] = [" ".join(sentences[i : i + 2]) for i in range(0, len(sentences), 2)]
        for aspect in passages:
            query = f"the {CODES[aspect]} of {name}"
            pairs += [(query, text, float(other == aspect)) for other, texts in passages.items() for text in texts]
    return pairs
