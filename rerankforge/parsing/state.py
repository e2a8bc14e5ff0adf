"""Incremental parsing: a record per parsed file, appended as each file finishes, reused while unchanged.

``parse/files.jsonl`` holds one :class:`FileRecord` per parsed file (path, size, mtime, sha256, the parse
settings' signature, its chunks). A record is appended and flushed the moment a file is done, so a crash
mid-run loses nothing already parsed, and the rerun parses only the files not done. A file is re-parsed
when its content hash or the settings change; its chunk ids are reused otherwise, so later stages' caches
(the LLM cache is keyed by the rendered prompt) still hit. As in git, a file whose size and mtime are
unchanged is not re-read to hash it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from rerankforge.artifacts import Chunk, file_sha256, write_jsonl

logger = logging.getLogger(__name__)


class FileRecord(BaseModel):
    path: str
    size: int
    mtime_ns: int
    sha256: str
    signature: str = Field(description="Hash of the settings that shape a file's chunks.")
    chunks: list[Chunk]
    over_limit: int = 0


class ParseState:
    """The per-file records of earlier runs in ``path``, and an appender for this run's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, FileRecord] = {}
        if path.is_file():
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = FileRecord.model_validate_json(line)
                    except ValidationError:  # a torn last line after a crash: that file is parsed again
                        logger.warning("Ignoring a damaged line in %s", path)
                        continue
                    self.records[record.path] = record
        self._handle: Any = None

    def fingerprint(self, docs: Path, relative: str) -> tuple[int, int, str]:
        """(size, mtime_ns, sha256) of a file; the hash is reused when size and mtime match the record."""
        st = os.stat(docs / relative)
        old = self.records.get(relative)
        if old is not None and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
            return st.st_size, st.st_mtime_ns, old.sha256
        return st.st_size, st.st_mtime_ns, file_sha256(docs / relative)

    def append(self, record: FileRecord) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
            if self.path.stat().st_size:
                self._handle.write("\n")  # end a torn last line so this record starts a line of its own
        self._handle.write(record.model_dump_json() + "\n")
        self._handle.flush()
        self.records[record.path] = record

    def compact(self, keep: dict[str, FileRecord]) -> None:
        """Rewrite the file with only ``keep`` (this run's files), atomically."""
        self.close()
        write_jsonl(self.path, [keep[p] for p in sorted(keep)])
        self.records = dict(keep)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def changes(previous: dict[str, str], current: dict[str, str]) -> dict[str, list[str]]:
    """Files added, changed (new content hash) and removed since the previous run, and the unchanged ones.

    Example:
        >>> changes({"a.md": "1", "b.md": "2"}, {"b.md": "3", "c.md": "4"})["changed"]
        ['b.md']
    """
    return {
        "added": sorted(set(current) - set(previous)),
        "changed": sorted(p for p in current if p in previous and previous[p] != current[p]),
        "removed": sorted(set(previous) - set(current)),
        "unchanged": sorted(p for p in current if previous.get(p) == current[p]),
    }


def read_inventory(path: Path) -> dict[str, str]:
    """``{path: sha256}`` of the last completed run (empty when there was none or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
