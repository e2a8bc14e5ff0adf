"""Which files are read (patterns, hidden, .git), duplicates, worker processes, and incremental re-runs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rerankforge import build, load_config
from tests.parse_helpers import run_parse

DISCLAIMER = (
    "CONFIDENTIAL. This document is the property of Northwind Robotics and may not be shared outside the company "
    "without written approval from the legal department. Printed copies are uncontrolled. Revision 2023."
)


def _section(title: str, body: str) -> str:
    return f"# {title}\n\n{body}\n\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "hr").mkdir(parents=True)
    (docs / "hr" / "leave.md").write_text(_section("Leave", "Staff get 25 days of paid leave per calendar year."))
    (docs / "hr" / "travel.md").write_text(_section("Travel", "Book economy class for flights under six hours."))
    (docs / "it.txt").write_text("IT policy\n\nPasswords are at least 14 characters long and never reused anywhere.")
    return docs


def test_include_exclude_hidden_and_git(folder: Path, tmp_path: Path) -> None:
    (folder / "drafts").mkdir()
    (folder / "drafts" / "wip.md").write_text(_section("Draft", "An unfinished draft that should not be indexed."))
    (folder / ".git").mkdir()
    (folder / ".git" / "notes.md").write_text(_section("Git", "Internal version-control notes, never a document."))
    (folder / ".archive").mkdir()
    (folder / ".archive" / "old.md").write_text(_section("Archive", "An archived policy kept in a hidden folder."))
    chunks, report = run_parse(folder, tmp_path / "a", include=["*.md"], exclude=["drafts/"])
    assert {c.source for c in chunks} == {"hr/leave.md", "hr/travel.md"}
    assert report["ignored"] == {"excluded": 1, "hidden": 2, "not_included": 1}
    chunks, report = run_parse(folder, tmp_path / "b", include_hidden=True)
    assert {c.source for c in chunks} == {".archive/old.md", "drafts/wip.md", "hr/leave.md", "hr/travel.md", "it.txt"}
    assert report["ignored"] == {"hidden": 1}  # .git is never read


def test_exact_and_near_duplicate_chunks_are_removed_and_counted(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, topic in enumerate(["badges", "parking", "visitors"]):
        footer = DISCLAIMER if i < 2 else DISCLAIMER.replace("2023", "2024")  # same notice, next year's revision
        body = f"Rule {i}: the {topic} process is owned by facilities and reviewed every spring by the site lead."
        (docs / f"{topic}.md").write_text(_section(topic.title(), body) + _section("Notice", footer))
    chunks, report = run_parse(docs, tmp_path / "a", combine_under_n_characters=0)
    disclaimers = [c for c in chunks if "uncontrolled" in c.text]
    assert [c.source for c in disclaimers] == ["badges.md"]  # the first in corpus order is kept
    assert report["duplicates_removed"] == {"exact": 1, "near": 1}
    assert len({c.source for c in chunks}) == 3  # each file's own rule survives
    removed = [json.loads(line) for line in (tmp_path / "a" / "parse" / "duplicates.jsonl").read_text().splitlines()]
    assert {(d["id"].split("#")[0], d["kind"], d["duplicate_of"].split("#")[0]) for d in removed} == {
        ("parking.md", "exact", "badges.md"),
        ("visitors.md", "near", "badges.md"),
    }
    _, exact_only = run_parse(docs, tmp_path / "b", combine_under_n_characters=0, near_duplicate_threshold=None)
    assert exact_only["duplicates_removed"] == {"exact": 1}
    _, kept_all = run_parse(docs, tmp_path / "c", combine_under_n_characters=0, dedup=False)
    assert kept_all["duplicates_removed"] == {} and kept_all["chunks"] == report["chunks"] + 2


@pytest.mark.slow
def test_two_worker_processes_give_the_same_chunks_as_one(example_docs: Path, tmp_path: Path) -> None:
    one, _ = run_parse(example_docs, tmp_path / "one", workers=1)
    two, report = run_parse(example_docs, tmp_path / "two", workers=2)
    assert [c.model_dump() for c in two] == [c.model_dump() for c in one]
    assert report["files_parsed"] == 10


def test_rerun_reparses_only_new_and_changed_files_and_keeps_chunk_ids(folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first, report = run_parse(folder, run)
    assert report["changes"] == {"added": 3, "changed": 0, "removed": 0, "unchanged": 0}
    kept_ids = {c.id for c in first if c.source == "hr/leave.md"}
    (folder / "hr" / "travel.md").write_text(_section("Travel", "Book premium economy for flights over six hours."))
    (folder / "it.txt").unlink()
    (folder / "security.md").write_text(_section("Security", "Lock your screen whenever you leave the desk."))
    os.utime(folder / "hr" / "leave.md", ns=(1, 1))  # touched, same content: hashed again, not parsed again
    second, report = run_parse(folder, run)
    assert report["files_reused"] == 1 and report["files_parsed"] == 3
    assert report["changes"] == {"added": 1, "changed": 1, "removed": 1, "unchanged": 1}
    assert {c.id for c in second if c.source == "hr/leave.md"} == kept_ids
    changes = json.loads((run / "parse" / "changes.json").read_text())
    assert (changes["added"], changes["changed"], changes["removed"]) == (["security.md"], ["hr/travel.md"], ["it.txt"])
    assert changes["chunks_removed"] == ["it.txt#0"] and changes["chunks_added"] == ["security.md#0"]
    assert not (set(changes["chunks_added"]) | set(changes["chunks_removed"])) & kept_ids
    assert any("premium economy" in c.text for c in second)


def test_a_crash_mid_parse_loses_nothing_already_parsed(folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done: list[str] = []

    def crash_after_two(stage: str, count: int, total: int, note: str) -> None:
        if note:
            done.append(note)
        if len(done) == 2:
            raise KeyboardInterrupt  # Ctrl-C, or the machine going down

    with pytest.raises(KeyboardInterrupt):
        run_parse(folder, run, progress=crash_after_two)
    records = (run / "parse" / "files.jsonl").read_text().splitlines()
    assert [json.loads(r)["path"] for r in records] == done
    chunks, report = run_parse(folder, run)
    assert report["files_reused"] == 2 and report["files_parsed"] == 3
    assert {c.source for c in chunks} == {"hr/leave.md", "hr/travel.md", "it.txt"}


def test_a_torn_record_is_parsed_again(folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_parse(folder, run)
    state = run / "parse" / "files.jsonl"
    lines = state.read_text().splitlines()
    state.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    chunks, report = run_parse(folder, run)
    assert report["files_reused"] == 2 and {c.source for c in chunks} == {"hr/leave.md", "hr/travel.md", "it.txt"}


def test_the_pipeline_reruns_parse_when_the_folder_changes(folder: Path, tmp_path: Path) -> None:
    cfg = load_config(None, docs=str(folder), run_dir=str(tmp_path / "run"), parse={"workers": 1})
    assert build(cfg, until="parse").stages[0].status == "ran"
    assert build(cfg, until="parse").stages[0].status == "skipped"
    shutil.copy(folder / "it.txt", folder / "hr" / "it-copy.txt")
    again = build(cfg, until="parse").stages[0]
    assert again.status == "ran"
    assert again.summary["changes"] == {"added": 1, "changed": 0, "removed": 0, "unchanged": 3}
    assert again.summary["duplicates_removed"] == {"exact": 1}
    # a setting that does not shape one file's chunks reruns the stage but parses no file again
    dedup_off = load_config(None, docs=str(folder), run_dir=str(tmp_path / "run"), parse={"workers": 1, "dedup": False})
    rerun = build(dedup_off, until="parse").stages[0]
    assert rerun.status == "ran" and rerun.summary["files_reused"] == 4 and rerun.summary["chunks"] == 4
