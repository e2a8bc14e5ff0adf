"""Prompt templates: the files in ``templates/`` (shipped inside the wheel) or a user's own copy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from rerankforge.artifacts import text_sha256
from rerankforge.errors import ConfigError

_PACKAGE_DIR = Path(__file__).parent / "templates"  # inside an installed wheel
_SOURCE_DIR = Path(__file__).parent.parent / "templates"  # a source checkout / editable install
_TAG = re.compile(r"</?([A-Za-z][\w-]*)>")


def templates_dir() -> Path:
    return _PACKAGE_DIR if _PACKAGE_DIR.is_dir() else _SOURCE_DIR


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt: the template's text above a ``---`` line is the system message, the rest the user's."""

    path: Path
    source: str

    @property
    def sha256(self) -> str:
        return text_sha256(self.source)

    @property
    def delimiters(self) -> frozenset[str]:
        """The names of the tags the template wraps text in, e.g. ``passage`` for ``<passage>...</passage>``."""
        return frozenset(name.lower() for name in _TAG.findall(self.source))

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """The chat messages, with text that imitates the template's own tags made harmless.

        A document that contains ``</passage>`` could otherwise close the passage early and write
        instructions or a fake query after it; its look-alike tags get a ``‹`` instead of ``<``, so the
        passage always ends where the template ends it.
        """
        if self.delimiters:
            tag = re.compile(rf"<(\s*/?\s*(?:{'|'.join(map(re.escape, sorted(self.delimiters)))})\b)", re.IGNORECASE)
            variables = {k: tag.sub(r"‹\1", v) if isinstance(v, str) else v for k, v in variables.items()}
        return self.render_unisolated(**variables)

    def render_unisolated(self, **variables: Any) -> list[dict[str, str]]:
        """The messages with the variables as they are (to measure what isolation does; use :meth:`render`)."""
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        try:
            text = env.from_string(self.source).render(**variables)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"Prompt template {self.path} does not render: {exc}.") from exc
        system, sep, user = text.partition("\n---\n")
        if not sep:
            return [{"role": "user", "content": text.strip()}]
        return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]


def load_template(name_or_path: str) -> PromptTemplate:
    """A template by file name in the shipped ``templates/`` folder, or by path to a user's file."""
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        path = templates_dir() / name_or_path
    if not path.is_file():
        available = ", ".join(sorted(p.name for p in templates_dir().glob("*.jinja")))
        raise ConfigError(
            f"Prompt template '{name_or_path}' not found (shipped: {available}). Pass a file path or a shipped name."
        )
    return PromptTemplate(path=path, source=path.read_text(encoding="utf-8"))
