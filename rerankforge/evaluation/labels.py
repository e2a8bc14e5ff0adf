"""Labelled queries a user brings: a BEIR folder, or a CSV / JSONL file written by hand.

CSV and JSONL rows hold ``query``, ``document`` (a document id, or the relevant text itself) and an optional
``grade`` (default 1; 0 = not relevant). A document given as text is matched to the corpus: an exact id, else
the same text (case and spacing ignored), else every document that contains the text (or is contained in it),
else the best fuzzy match scoring at least ``match_threshold`` (rapidfuzz ``partial_ratio``, 0-100).

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = path.write_text("query,document\\nbattery life,The HX-900 runs 7.5 h per charge.\\n")
    >>> data = load_labels(path, corpus={"c1": "Specs. The HX-900 runs 7.5 h per charge.", "c2": "Leave policy."})
    >>> data.qrels
    {'q1': {'c1': 1}}
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankforge.errors import InputError

QRELS_SPLITS = ("test", "dev", "validation", "train")
LABEL_COLUMNS = ("query", "document", "grade", "query_id")
_EXAMPLE_ROW = 'query,document,grade\n"hx-900 battery runtime","The HX-900 runs 7.5 h per charge.",3'


class LabelError(InputError):
    """A label file cannot be used; the message names the file, the line and the fix."""


@dataclass
class LabelledData:
    """Queries, a corpus and graded relevance (``qrels[query_id][doc_id] = grade > 0``)."""

    source: str
    format: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    labels: int = 0
    unmatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def card(self) -> dict[str, Any]:
        """Counts for the report."""
        return {
            "source": self.source,
            "format": self.format,
            "queries": len(self.queries),
            "documents": len(self.corpus),
            "labels": self.labels,
            "unmatched_labels": len(self.unmatched),
            "notes": self.notes,
        }


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def load_labels(
    path: str | Path, corpus: dict[str, str] | None = None, *, match_threshold: float = 90.0
) -> LabelledData:
    """Read labelled queries from a BEIR folder, a ``.csv`` or a ``.jsonl`` file.

    Args:
        path: the BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``) or the label file.
        corpus: documents (id -> text) that CSV/JSONL labels point into; ``None``: the distinct document
            texts of the file itself. A BEIR folder brings its own corpus.
        match_threshold: the fuzzy score (0-100) a label's text needs to match a document.
    """
    path = Path(path)
    if not path.exists():
        raise LabelError(f"Label file {path} does not exist. Pass a BEIR folder, or a CSV/JSONL file of labels.")
    if path.is_dir():
        return load_beir(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path)
    elif suffix in (".jsonl", ".json"):
        rows = _read_jsonl_rows(path)
    else:
        raise LabelError(
            f"{path}: unknown label format '{suffix}'. Use a BEIR folder, a .csv or a .jsonl file with "
            f"columns query, document[, grade], e.g.\n{_EXAMPLE_ROW}"
        )
    return _match_rows(path, "csv" if suffix == ".csv" else "jsonl", rows, corpus, match_threshold)


# ---------------------------------------------------------------- BEIR


def load_beir(folder: Path) -> LabelledData:
    corpus_file, queries_file = folder / "corpus.jsonl", folder / "queries.jsonl"
    splits = [folder / "qrels" / f"{split}.tsv" for split in QRELS_SPLITS]
    qrels_file = next((p for p in splits if p.is_file()), None)
    missing = [str(p.relative_to(folder)) for p in (corpus_file, queries_file) if not p.is_file()]
    if qrels_file is None:
        missing.append("qrels/test.tsv")
    if missing:
        raise LabelError(
            f"{folder} is not a BEIR folder: {', '.join(missing)} missing. A BEIR folder holds corpus.jsonl "
            "({_id, title, text}), queries.jsonl ({_id, text}) and qrels/test.tsv (query-id, corpus-id, score)."
        )
    corpus = load_corpus(corpus_file)
    queries = {str(r["_id"]): str(r["text"]) for _, r in _jsonl_records(queries_file, required=("_id", "text"))}
    qrels: dict[str, dict[str, int]] = {}
    labels = 0
    with qrels_file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip() or (number == 1 and parts[0] in ("query-id", "query_id", "qid")):
                continue
            if len(parts) != 3:
                raise LabelError(
                    f"{qrels_file} line {number}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                    f"found {len(parts)}."
                )
            query_id, doc_id, score = parts
            where = f"{qrels_file} line {number}"
            if query_id not in queries:
                raise LabelError(f"{where}: query-id '{query_id}' is not in {queries_file.name}. Fix or remove it.")
            if doc_id not in corpus:
                raise LabelError(f"{where}: corpus-id '{doc_id}' is not in {corpus_file.name}. Fix or remove it.")
            grade = _grade(score, where)
            labels += 1
            if grade > 0:
                qrels.setdefault(query_id, {})[doc_id] = grade
    if not qrels:
        raise LabelError(f"{qrels_file} has no relevant (score > 0) query-document pair.")
    unlabelled = len(queries) - len(qrels)
    notes = [f"{unlabelled} queries without a relevant document are left out"] if unlabelled else []
    return LabelledData(
        source=str(folder),
        format="beir",
        corpus=corpus,
        queries={q: queries[q] for q in qrels},
        qrels=qrels,
        labels=labels,
        notes=notes,
    )


def _jsonl_records(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, Any]]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LabelError(f"{path} line {number} is not valid JSON ({exc.msg}). Fix that line.") from exc
            if not isinstance(record, dict) or any(k not in record for k in required):
                found = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise LabelError(
                    f"{path} line {number}: expected the fields {', '.join(required)}, found {found or 'none'}."
                )
            records.append((number, record))
    if not records:
        raise LabelError(f"{path} is empty. Add one record per line.")
    return records


# ---------------------------------------------------------------- CSV / JSONL


def _check_columns(path: Path, columns: list[str], where: str) -> None:
    unknown = [c for c in columns if c not in LABEL_COLUMNS]
    if "query" not in columns or "document" not in columns or unknown:
        raise LabelError(
            f"{path}{where}: expected the columns query, document and optionally grade, query_id; found "
            f"{', '.join(columns) or 'none'}. Rename them, e.g.\n{_EXAMPLE_ROW}"
        )


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise LabelError(f"{path} is empty. Write a header line and one label per line, e.g.\n{_EXAMPLE_ROW}")
        columns = [c.strip().lower() for c in reader.fieldnames]
        _check_columns(path, columns, " (header)")
        rows = []
        for row in reader:
            if None in row:
                raise LabelError(
                    f"{path} line {reader.line_num} has more values than the header has columns. Put values that "
                    'contain a comma in double quotes: "every 1,500 hours".'
                )
            values = {c: (v or "").strip() for c, v in zip(columns, row.values(), strict=True)}
            if any(values.values()):
                rows.append((reader.line_num, values))
    if not rows:
        raise LabelError(f"{path} has a header but no labels. Add one line per (query, relevant document).")
    return rows


def _read_jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, record in _jsonl_records(path, required=()):
        _check_columns(path, [str(k).lower() for k in record], f" line {number}")
        rows.append((number, {str(k).lower(): v for k, v in record.items()}))
    return rows


def _grade(value: Any, where: str) -> int:
    try:
        grade = int(float(value))
    except (TypeError, ValueError):
        raise LabelError(f"{where}: grade '{value}' is not a number. Use 0 (not relevant) to 3 (exact).") from None
    if grade < 0:
        raise LabelError(f"{where}: grade {grade} is negative. Use 0 (not relevant) to 3 (exact).")
    return grade


class _Matcher:
    """Finds the corpus documents a label's ``document`` value means (id, same text, containment, fuzzy)."""

    def __init__(self, corpus: dict[str, str], threshold: float) -> None:
        self.corpus = corpus
        self.ids = list(corpus)
        self.texts = [normalise(corpus[i]) for i in self.ids]
        self.by_text = {t: i for i, t in zip(self.ids, self.texts, strict=True)}
        self.threshold = threshold

    def __call__(self, value: str) -> list[str]:
        if value in self.corpus:
            return [value]
        text = normalise(value)
        if not text:
            return []
        if text in self.by_text:
            return [self.by_text[text]]
        containing = [i for i, t in zip(self.ids, self.texts, strict=True) if text in t or (len(t) > 20 and t in text)]
        if containing:
            return containing
        from rapidfuzz import fuzz, process

        best = process.extractOne(text, self.texts, scorer=fuzz.partial_ratio, score_cutoff=self.threshold)
        return [self.ids[best[2]]] if best else []


def _match_rows(
    path: Path,
    fmt: str,
    rows: list[tuple[int, dict[str, Any]]],
    corpus: dict[str, str] | None,
    threshold: float,
) -> LabelledData:
    notes = []
    if corpus is None:
        texts = sorted({str(r["document"]).strip() for _, r in rows if str(r.get("document", "")).strip()})
        corpus = {f"d{i + 1}": t for i, t in enumerate(texts)}
        notes.append(f"no corpus given: the {len(corpus)} distinct documents of the label file are the corpus")
    matcher = _Matcher(corpus, threshold)
    queries: dict[str, str] = {}
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    unmatched: list[str] = []
    for number, row in rows:
        where = f"{path} line {number}"
        query, document = str(row.get("query") or "").strip(), str(row.get("document") or "").strip()
        if not query or not document:
            raise LabelError(f"{where}: both query and document need a value. Fill them in or delete the line.")
        grade = _grade(row["grade"], where) if str(row.get("grade", "")).strip() else 1
        query_id = str(row.get("query_id") or "").strip() or query_ids.setdefault(query, f"q{len(query_ids) + 1}")
        queries[query_id] = query
        matched = matcher(document)
        if not matched:
            unmatched.append(f"line {number}: {document[:60]}")
            continue
        for doc_id in matched:
            if grade > 0:
                qrels.setdefault(query_id, {})[doc_id] = max(grade, qrels.get(query_id, {}).get(doc_id, 0))
    if not qrels:
        first = f" (first: {unmatched[0]})" if unmatched else ""
        raise LabelError(
            f"None of the {len(rows)} labels in {path} matched a document of the corpus ({len(corpus)} documents)"
            f"{first}. Give document ids, or text copied from the documents, with a grade above 0."
        )
    if unmatched:
        notes.append(f"{len(unmatched)} of {len(rows)} labels matched no document and were left out")
    unlabelled = len(queries) - len(qrels)
    if unlabelled:
        notes.append(f"{unlabelled} queries without a matched relevant document are left out")
    return LabelledData(
        source=str(path),
        format=fmt,
        corpus=corpus,
        queries={q: queries[q] for q in qrels},
        qrels=qrels,
        labels=len(rows),
        unmatched=unmatched,
        notes=notes,
    )


def load_corpus(path: str | Path) -> dict[str, str]:
    """Documents (id -> text) from a BEIR ``corpus.jsonl`` or a BEIR folder."""
    path = Path(path)
    file = path / "corpus.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise LabelError(f"Corpus {path} not found. Pass a BEIR corpus.jsonl ({{_id, title, text}} per line).")
    corpus = {}
    for _, record in _jsonl_records(file, required=("_id", "text")):
        title = str(record.get("title") or "").strip()
        corpus[str(record["_id"])] = f"{title}\n{record['text']}" if title else str(record["text"])
    return corpus
