"""Label files a user brings: BEIR folders, hand-written CSV and JSONL, and the errors bad ones give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankforge.evaluation.labels import LabelError, load_corpus, load_labels

ROOT = Path(__file__).resolve().parent.parent
MEDQUAD = ROOT.parent / "shared" / "data" / "medquad-dev"
CORPUS = {
    "dock#2": "CD-9 dock. Dedicated circuit with a 32 A type C breaker and a 30 mA type B RCD.",
    "dock#1": "CD-2 dock. Supply: single-phase 230 V AC, 50/60 Hz, with a 16 A breaker.",
    "leave#1": "Full-time employees receive 25 days of paid annual leave per calendar year.",
    "faq#1": "E-104 means a lidar window is dirty or blocked. The robot stops and waits.",
}


def _write_beir(folder: Path, qrels: str, corpus: dict[str, str] = CORPUS) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in corpus.items())
    )
    queries = [{"_id": "q1", "text": "breaker for a CD-9 dock"}, {"_id": "q2", "text": "annual leave days"}]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


def test_csv_labels_match_ids_exact_text_containment_and_fuzzy_text(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "query,document,grade\n"
        "breaker for a CD-9 dock,dock#2,3\n"  # an id
        # same text, other case and spacing
        "annual leave days,Full-time employees receive 25 DAYS of paid   annual leave per calendar year.,2\n"
        "what does E-104 mean,lidar window is dirty or blocked,\n"  # contained; grade defaults to 1
        'CD-2 power supply,"Supply: single phase 230V AC, 50/60Hz",3\n'  # fuzzy: spelled differently
        "CD-2 power supply,leave#1,0\n"  # grade 0: a labelled non-relevant document
    )
    data = load_labels(path, CORPUS)
    assert data.format == "csv" and data.labels == 5 and not data.unmatched
    assert data.qrels == {"q1": {"dock#2": 3}, "q2": {"leave#1": 2}, "q3": {"faq#1": 1}, "q4": {"dock#1": 3}}
    assert data.queries["q4"] == "CD-2 power supply"


def test_jsonl_labels_with_query_ids_and_unmatched_labels_counted(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    rows = [
        {"query_id": "a", "query": "breaker for a CD-9 dock", "document": "32 A type C breaker", "grade": 3},
        {"query_id": "b", "query": "parking rules", "document": "Visitors park in bays 1 to 12."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_labels(path, CORPUS)
    assert data.qrels == {"a": {"dock#2": 3}}
    assert data.unmatched == ["line 2: Visitors park in bays 1 to 12."]
    assert any("1 of 2 labels matched no document" in note for note in data.notes)


def test_without_a_corpus_the_label_file_documents_are_the_corpus(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("query,document\nq one,first passage about docks\nq two,second passage about leave\n")
    data = load_labels(path)
    assert sorted(data.corpus.values()) == ["first passage about docks", "second passage about leave"]
    assert data.qrels["q1"] == {"d1": 1} and data.qrels["q2"] == {"d2": 1}


def test_beir_folder(tmp_path: Path) -> None:
    folder = _write_beir(tmp_path / "beir", "q1\tdock#2\t1\nq2\tleave#1\t2\nq2\tfaq#1\t0\n")
    data = load_labels(folder)
    assert data.format == "beir" and len(data.corpus) == 4 and data.labels == 3
    assert data.qrels == {"q1": {"dock#2": 1}, "q2": {"leave#1": 2}}


def test_beir_unknown_corpus_id_names_file_and_line(tmp_path: Path) -> None:
    folder = _write_beir(tmp_path / "beir", "q1\tdock#2\t1\nq2\tdock#77\t1\n")
    with pytest.raises(LabelError, match=r"test.tsv line 3: corpus-id 'dock#77' is not in corpus.jsonl"):
        load_labels(folder)


def test_beir_unknown_query_id_names_file_and_line(tmp_path: Path) -> None:
    folder = _write_beir(tmp_path / "beir", "q9\tdock#2\t1\n")
    with pytest.raises(LabelError, match=r"test.tsv line 2: query-id 'q9' is not in queries.jsonl"):
        load_labels(folder)


def test_beir_folder_missing_files_says_what_a_beir_folder_holds(tmp_path: Path) -> None:
    (tmp_path / "beir").mkdir()
    (tmp_path / "beir" / "corpus.jsonl").write_text(json.dumps({"_id": "a", "text": "x"}) + "\n")
    with pytest.raises(LabelError, match=r"not a BEIR folder: queries.jsonl, qrels/test.tsv missing"):
        load_labels(tmp_path / "beir")


BAD_FILES = {
    "empty csv": ("labels.csv", "", r"labels.csv is empty. Write a header line"),
    "header only": ("labels.csv", "query,document,grade\n", r"has a header but no labels"),
    "wrong columns": (
        "labels.csv",
        "question,answer\nbreaker,32 A\n",
        r"expected the columns query, document .* found question, answer",
    ),
    "wrong jsonl keys": (
        "labels.jsonl",
        '{"query": "a", "document": "32 A"}\n{"q": "b"}\n',
        r"labels.jsonl line 2: expected the columns query, document",
    ),
    "broken json": ("labels.jsonl", '{"query": "a", "document": "32 A"}\n{not json\n', r"line 2 is not valid JSON"),
    "unquoted comma": (
        "labels.csv",
        "query,document,grade\nwheels,replace every 1,500 hours,3\n",
        r"line 2 has more values than the header.*double quotes",
    ),
    "bad grade": ("labels.csv", "query,document,grade\nbreaker,dock#2,high\n", r"line 2: grade 'high' is not a number"),
    "nothing matches": (
        "labels.csv",
        "query,document\nparking,Visitors park in bays 1 to 12.\n",
        r"None of the 1 labels .* matched a document of the corpus \(4 documents\)",
    ),
    "unknown format": ("labels.xlsx", "x", r"unknown label format '.xlsx'"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_label_file_says_what_is_wrong_and_where(tmp_path: Path, name: str) -> None:
    filename, content, message = BAD_FILES[name]
    (tmp_path / filename).write_text(content)
    with pytest.raises(LabelError, match=message):
        load_labels(tmp_path / filename, CORPUS)


def test_a_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match=r"does not exist"):
        load_labels(tmp_path / "nope.csv", CORPUS)


@pytest.mark.skipif(not MEDQUAD.is_dir(), reason=f"the MedQuAD benchmark is not at {MEDQUAD}")
def test_the_real_medquad_benchmark_reads_in_place() -> None:
    data = load_labels(MEDQUAD)
    assert len(data.corpus) == 11548
    assert len(data.qrels) == 10849
    assert data.qrels["Q_CancerGov_0000001_1-2"] == {"CancerGov_0000001_1-2": 1}
    assert data.corpus["CancerGov_0000001_1-1"].startswith("Adult Acute Lymphoblastic Leukemia\n")
    assert load_corpus(MEDQUAD / "corpus.jsonl") == data.corpus
