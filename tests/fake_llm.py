"""A deterministic LLM for testing pipeline logic, built on the real provider base class.

It writes a query from a passage's title words (never copying a sentence) and grades a (passage, query)
pair 3 when the query was written for that passage, else 0.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from rerankforge.llm.base import LLMProvider, LLMReply, Message

_PASSAGE = re.compile(r"<passage>\n(.*?)\n</passage>", re.DOTALL)
_QUERY = re.compile(r"^Query: (.*)$", re.MULTILINE)


class FakeLLM(LLMProvider):
    name = "fake"

    def __init__(self) -> None:
        super().__init__("fake-1")
        self.written: dict[str, str] = {}  # query -> passage it was written for
        self.calls = 0
        self._lock = threading.Lock()  # the stages call from several threads

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        with self._lock:
            self.calls += 1
        user = messages[-1]["content"]
        passage = _PASSAGE.search(user).group(1)  # type: ignore[union-attr]
        if "grade" in schema["properties"]:
            query = _QUERY.search(user).group(1)  # type: ignore[union-attr]
            written = self.written.get(query)
            grade = 3 if written is not None and written in passage else 0
            return LLMReply(json.dumps({"grade": grade}), prompt_tokens=len(user) // 4, output_tokens=5)
        words = re.findall(r"[A-Za-z][A-Za-z0-9-]{3,}", passage)
        rare = sorted(set(words), key=lambda w: (-len(w), w))[:4]
        query = "where to find " + " ".join(reversed(rare))
        self.written[query] = passage
        return LLMReply(json.dumps({"queries": [query]}), prompt_tokens=len(user) // 4, output_tokens=12)
