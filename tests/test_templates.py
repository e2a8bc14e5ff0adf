"""Prompt templates: shipped in the wheel, rendered into system + user messages, replaceable by a user's copy."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rerankforge.errors import ConfigError
from rerankforge.templates import load_template, templates_dir

ROOT = Path(__file__).resolve().parent.parent


def test_grade_template_renders_system_and_user_with_the_passage_before_the_query() -> None:
    messages = load_template("grade.jinja").render(
        query="battery runtime", passage="The AR-200 runs 9 h.", title="Battery", source="a.md"
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "3 = " in messages[0]["content"] and "0 = " in messages[0]["content"]
    user = messages[1]["content"]
    assert user.index("The AR-200 runs 9 h.") < user.index("battery runtime")


def test_queries_template_shows_the_examples() -> None:
    messages = load_template("queries.jinja").render(
        passage="p", title=None, source="a.md", examples=["first example", "second example"], n=2
    )
    assert "- first example" in messages[1]["content"] and "Write 2 different search queries" in messages[1]["content"]


def test_a_users_template_file_replaces_the_shipped_one(tmp_path: Path) -> None:
    mine = tmp_path / "mine.jinja"
    mine.write_text("Judge.\n---\nQ={{ query }} P={{ passage }}")
    template = load_template(str(mine))
    assert template.render(query="q", passage="p") == [
        {"role": "system", "content": "Judge."},
        {"role": "user", "content": "Q=q P=p"},
    ]
    assert template.sha256 != load_template("grade.jinja").sha256


def test_unknown_template_and_missing_variable_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found.*grade.jinja"):
        load_template("nope.jinja")
    bad = tmp_path / "bad.jinja"
    bad.write_text("{{ undefined_thing }}")
    with pytest.raises(ConfigError, match="does not render"):
        load_template(str(bad)).render(query="q")


def test_source_templates_are_the_shipped_ones() -> None:
    assert templates_dir().resolve() == (ROOT / "templates").resolve()


@pytest.mark.slow
def test_the_wheel_ships_the_templates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    wheel = next(tmp_path.glob("rerankforge-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ("grade.jinja", "queries.jinja"):
        assert f"rerankforge/templates/{template}" in names
        shipped = zipfile.ZipFile(wheel).read(f"rerankforge/templates/{template}").decode()
        assert shipped == (ROOT / "templates" / template).read_text()
    assert "rerankforge/py.typed" in names
