"""``rerankforge build --until parse``: the parse report table and the file-selection options."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from rerankforge.cli.main import app


def test_build_prints_the_parse_report_and_takes_include_exclude(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "old").mkdir(parents=True)
    (docs / "a.md").write_text("# Alpha\n\nThe alpha robot charges in forty minutes at the standard dock.\n")
    (docs / "b.txt").write_text("Beta\n\nThe beta robot carries up to thirty kilograms on flat floors.\n")
    (docs / "empty.md").write_text("")
    (docs / "old" / "c.md").write_text("# Gamma\n\nThe retired gamma robot is no longer supported by service.\n")
    args = ["build", str(docs), "--run-dir", str(tmp_path / "run"), "--until", "parse", "--yes"]
    args += ["--include", "*.md", "--include", "*.txt", "--exclude", "old/", "--workers", "1"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    screen = re.sub(r"\s+", " ", result.output)
    assert "parse report" in screen
    assert re.search(r"files seen │ 3 │ not read: excluded 1", screen)
    assert re.search(r"files parsed │ 2 │ 0 unchanged, reused; added 3, changed 0, removed 0, unchanged 0", screen)
    assert re.search(r"files skipped │ 1 │ empty 1 \(per file: parse/report.json\)", screen)
    assert re.search(r"chunks │ 2 │ \d+ tokens of all-MiniLM-L6-v2, at most 189 per chunk", screen)
    again = CliRunner().invoke(app, args, env={"COLUMNS": "220"})
    assert again.exit_code == 0 and "parse report" not in again.output  # nothing changed: parse was skipped
