"""Which files under the docs folder are read: include/exclude patterns, hidden files, symlinks, size limit.

Patterns are gitignore-style (``pathspec``), relative to the docs folder: ``*.pdf``, ``drafts/``, ``!keep.md``.
Symlinks are followed by default; every real folder is entered once, so a link back to an ancestor (a loop)
is reported and not walked, and a real file reached through two links is read once.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from rerankforge.artifacts import SkippedFile
from rerankforge.config import ParseConfig

logger = logging.getLogger(__name__)

# Version-control folders are never documents, even with include_hidden.
VCS_FOLDERS = {".git", ".svn", ".hg"}


@dataclass
class Discovery:
    """The files to read (sorted, relative POSIX paths), what was skipped before reading, and what was ignored."""

    files: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)


def _spec(patterns: list[str]) -> pathspec.PathSpec | None:
    return pathspec.GitIgnoreSpec.from_lines(patterns) if patterns else None


def _real_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def discover(docs: Path, cfg: ParseConfig) -> Discovery:
    """Walk ``docs`` and sort what is found into files to read, files skipped (with a reason) and ignored ones.

    Example:
        >>> from rerankforge.config import ParseConfig
        >>> found = discover(Path("examples/docs"), ParseConfig(include=["*.md"]))
        >>> all(f.endswith(".md") for f in found.files) and found.ignored["not_included"] > 0
        True
    """
    include, exclude = _spec(cfg.include), _spec(cfg.exclude)
    found = Discovery()
    seen_dirs = {_real_key(str(docs))}
    seen_files: dict[tuple[int, int], str] = {}

    def on_error(error: OSError) -> None:  # a folder that vanished or cannot be listed
        relative = os.path.relpath(error.filename or str(docs), docs)
        kind = "vanished" if isinstance(error, FileNotFoundError) else "unreadable"
        found.skipped.append(SkippedFile(path=relative, kind=kind, reason=f"folder could not be listed: {error}"))

    for dirpath, dirnames, filenames in os.walk(docs, followlinks=cfg.follow_symlinks, onerror=on_error):
        rel_dir = os.path.relpath(dirpath, docs)
        rel_dir = "" if rel_dir == "." else rel_dir
        keep = []
        for name in sorted(dirnames):
            relative = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(dirpath, name)
            if name in VCS_FOLDERS or (name.startswith(".") and not cfg.include_hidden):
                found.ignored["hidden"] += 1
                continue
            if exclude is not None and exclude.match_file(relative + "/"):
                found.ignored["excluded"] += 1
                continue
            if os.path.islink(full):
                if not cfg.follow_symlinks:
                    found.ignored["symlink"] += 1
                    continue
                try:
                    key = _real_key(full)
                except OSError as exc:
                    found.skipped.append(SkippedFile(path=relative, kind="symlink", reason=f"broken symlink: {exc}"))
                    continue
                if key in seen_dirs:
                    target = os.readlink(full)
                    found.skipped.append(
                        SkippedFile(
                            path=relative,
                            kind="symlink_loop",
                            reason=f"symlink to a folder already read ({target}): a loop or a second path to it",
                        )
                    )
                    continue
                seen_dirs.add(key)
            else:
                try:
                    seen_dirs.add(_real_key(full))
                except OSError:
                    pass  # vanished between listing and stat: os.walk reports it through on_error
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            relative = f"{rel_dir}/{name}" if rel_dir else name
            _sort_file(Path(dirpath) / name, relative, cfg, include, exclude, found, seen_files)
    found.files.sort()
    found.skipped.sort(key=lambda s: s.path)
    return found


def _sort_file(
    path: Path,
    relative: str,
    cfg: ParseConfig,
    include: pathspec.PathSpec | None,
    exclude: pathspec.PathSpec | None,
    found: Discovery,
    seen_files: dict[tuple[int, int], str],
) -> None:
    if path.name.startswith(".") and not cfg.include_hidden:
        found.ignored["hidden"] += 1
        return
    if exclude is not None and exclude.match_file(relative):
        found.ignored["excluded"] += 1
        return
    if include is not None and not include.match_file(relative):
        found.ignored["not_included"] += 1
        return
    if path.is_symlink() and not cfg.follow_symlinks:
        found.ignored["symlink"] += 1
        return
    try:
        st = path.stat()
    except FileNotFoundError:
        kind = "symlink" if path.is_symlink() else "vanished"
        found.skipped.append(SkippedFile(path=relative, kind=kind, reason="broken symlink or file vanished"))
        return
    except OSError as exc:  # ELOOP: a symlink to itself
        found.skipped.append(SkippedFile(path=relative, kind="symlink_loop", reason=f"cannot follow: {exc}"))
        return
    if not path.is_file():
        found.skipped.append(SkippedFile(path=relative, kind="unsupported", reason="not a regular file"))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen_files:
        reason = f"same file as {seen_files[key]} (reached through a symlink)"
        found.skipped.append(SkippedFile(path=relative, kind="duplicate_file", reason=reason))
        return
    seen_files[key] = relative
    limit = cfg.max_file_mb * 1024 * 1024
    if st.st_size > limit:
        reason = (
            f"{st.st_size / 2**20:.1f} MB is over parse.max_file_mb ({cfg.max_file_mb:g} MB); raise it to read the file"
        )
        found.skipped.append(SkippedFile(path=relative, kind="too_large", reason=reason))
        return
    found.files.append(relative)
