"""The small rules inside the stages: sampling, copy detection, grade parsing, groups, splits, metrics."""

from __future__ import annotations

import math

import pytest

from rerankforge.artifacts import Chunk, Judgment, Query
from rerankforge.config import GradeConfig
from rerankforge.ranking import mrr_at_k, ndcg_at_k
from rerankforge.stages.grade import expected_grade, parse_grade, training_groups
from rerankforge.stages.queries import (
    _drop_reason,
    assign_styles,
    copy_overlap,
    example_echo,
    pick_dynamic_examples,
    sample_chunks,
)
from rerankforge.stages.train import build_groups, fold_queries, split_queries

# A user's examples from another collection than the passages below (what a small model copies).
EXAMPLES = [
    "how long is the warranty on replacement parts",
    "What happens if I miss the deadline for submitting a claim?",
    "reset password locked account",
    "Which settings change the backup schedule?",
    "difference between standard and express shipping cost",
]


def _chunks(per_file: dict[str, int]) -> list[Chunk]:
    return [Chunk(id=f"{f}#{i}", text=f"text {f} {i}", source=f) for f, n in per_file.items() for i in range(n)]


def test_sampling_spreads_the_budget_over_files() -> None:
    chunks = _chunks({"big.md": 50, "a.md": 2, "b.md": 2, "c.md": 2})
    picked = sample_chunks(chunks, budget=6, seed=1)
    assert len(picked) == 6 and len({c.id for c in picked}) == 6
    assert {c.source for c in picked} == {"big.md", "a.md", "b.md", "c.md"}
    assert sum(c.source == "big.md" for c in picked) <= 2
    assert [c.id for c in sample_chunks(chunks, 6, seed=1)] == [c.id for c in picked]  # seeded


def test_sampling_never_exceeds_the_corpus() -> None:
    assert len(sample_chunks(_chunks({"a.md": 3}), budget=10, seed=0)) == 3


def test_copy_overlap() -> None:
    passage = "The AR-200 runs for nine hours on one charge of its 48 V battery."
    assert copy_overlap("runs for nine hours on one charge", passage) == 1.0
    assert copy_overlap("how long does the AR-200 battery last", passage) == 0.0
    assert copy_overlap("AR-200 battery", passage) == 0.0  # short query: whole-phrase match only
    assert copy_overlap("48 V battery", passage) == 1.0
    assert 0 < copy_overlap("battery runtime: runs for nine hours per day", passage) < 1


def test_queries_that_echo_the_few_shot_examples_are_caught() -> None:
    passage = "Central core disease is a muscle disorder. Diagnosis uses a muscle biopsy."
    # what a 1.5B model wrote for a MedQuAD passage: the examples, verbatim and paraphrased
    assert example_echo("How long is the warranty on replacement parts?", passage, EXAMPLES) == 1.0
    assert example_echo("What is the duration of the warranty for replacement parts?", passage, EXAMPLES) >= 0.5
    assert example_echo("What happens if I fail to submit a claim on time?", passage, EXAMPLES) >= 0.5
    # real queries about the passage are kept, even when they share a word with an example
    assert example_echo("How is central core disease diagnosed?", passage, EXAMPLES) == 0.0
    assert example_echo("What happens in central core disease?", passage, EXAMPLES) < 0.5
    # an example's words that the passage itself uses are not an echo
    backup = "The backup schedule is set under Settings > Backup."
    assert example_echo("Which settings change the backup schedule?", backup, EXAMPLES) < 0.5


def test_queries_that_speak_of_their_passage_are_dropped() -> None:
    from rerankforge.config import QueriesConfig

    chunk = Chunk(id="a.md#0", text="Salivary gland cancer trials are listed by stage.", source="a.md")
    cfg = QueriesConfig()
    # what the 1.5B model wrote for a MedQuAD passage: it means nothing to a searcher
    assert _drop_reason("What is the name of the cancer mentioned in the passage?", chunk, [], set(), cfg) == (
        "names_the_passage"
    )
    assert _drop_reason("Which trials does this document list?", chunk, [], set(), cfg) == "names_the_passage"
    assert _drop_reason("clinical trials for stage III salivary gland cancer", chunk, [], set(), cfg) is None
    assert _drop_reason("text messages about passage of the bill", chunk, [], set(), cfg) is None


@pytest.mark.parametrize(("value", "grade"), [({"grade": 2}, 2), ({"grade": "3"}, 3), (0, 0), ({"grade": 1.0}, 1)])
def test_parse_grade_accepts(value: object, grade: int) -> None:
    assert parse_grade(value) == grade


@pytest.mark.parametrize("value", [{"grade": 4}, {"grade": -1}, {"grade": 2.5}, {"grade": True}, {"score": 2}, "x"])
def test_parse_grade_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_grade(value)


def _graded() -> tuple[list[Query], dict[str, Chunk], list[Judgment]]:
    chunks = {c.id: c for c in _chunks({"a.md": 5})}
    queries = [Query(id="q0", text="q zero", chunk_id="a.md#0"), Query(id="q1", text="q one", chunk_id="a.md#1")]
    judgments = [
        Judgment(query_id="q0", chunk_id="a.md#0", grade=3),
        Judgment(query_id="q0", chunk_id="a.md#2", grade=2),  # an unlabelled relevant chunk
        Judgment(query_id="q0", chunk_id="a.md#3", grade=1),
        Judgment(query_id="q0", chunk_id="a.md#4", grade=0),
        Judgment(query_id="q1", chunk_id="a.md#1", grade=3),  # no negative: left out
    ]
    return queries, chunks, judgments


def test_relevant_candidates_are_positives_never_negatives() -> None:
    queries, chunks, judgments = _graded()
    groups = training_groups(queries, chunks, judgments, GradeConfig())
    assert len(groups) == 1
    assert groups[0].pos_ids == ["a.md#0", "a.md#2"] and groups[0].pos_scores == [3.0, 2.0]
    assert groups[0].neg_ids == ["a.md#4"]  # grade 1 is neither with the default thresholds


def test_build_groups_positive_first_fixed_size_graded_labels() -> None:
    queries, chunks, judgments = _graded()
    lce = build_groups(queries, chunks, judgments, group_size=4, positive_min_grade=2, max_other_grade=0, seed=0)
    assert len(lce) == 2  # one group per positive of q0
    assert all(len(r["docs"]) == 4 and r["labels"][0] >= 2 and r["labels"][1:] == [0.0] * 3 for r in lce)
    graded = build_groups(queries, chunks, judgments, group_size=3, positive_min_grade=2, max_other_grade=1, seed=0)
    assert all(sorted(r["labels"][1:]) == [0.0, 1.0] for r in graded)


def test_mined_negatives_are_the_unjudged_candidates_in_the_order_given() -> None:
    chunks = {c.id: c for c in _chunks({"a.md": 4, "b.md": 2})}
    queries = [Query(id="qa", text="about a", chunk_id="a.md#0"), Query(id="qb", text="about b", chunk_id="b.md#0")]
    judgments = [
        Judgment(query_id="qa", chunk_id="a.md#0", grade=3),
        Judgment(query_id="qa", chunk_id="a.md#1", grade=3),  # judged relevant: never a mined negative
        Judgment(query_id="qb", chunk_id="b.md#0", grade=3),
    ]
    mined = {"qa": ["a.md#0", "a.md#1", "a.md#3", "b.md#1", "a.md#2"], "qb": ["b.md#0"]}
    rules = {"group_size": 4, "positive_min_grade": 2, "max_other_grade": 0, "seed": 0}
    text = {c.text: c.id for c in chunks.values()}
    groups = build_groups(queries, chunks, judgments, **rules, cross_query_negatives=1, mined=mined, mined_negatives=2)
    qa = [row for row in groups if row["query"] == "about a"]
    assert len(qa) == 2  # one group per judged positive
    for row in qa:  # the first two unjudged candidates, then one other query's positive from another file
        assert sorted(text[d] for d in row["docs"][1:3]) == ["a.md#3", "b.md#1"] and text[row["docs"][3]] == "b.md#0"
        assert row["labels"][1:] == [0.0, 0.0, 0.0]
    without = build_groups(queries, chunks, judgments, **rules, cross_query_negatives=1)
    assert all(text[d] not in {"a.md#3", "b.md#1", "a.md#2"} for row in without for d in row["docs"])


def test_cross_query_negatives_are_other_queries_positives_from_other_files() -> None:
    chunks = {c.id: c for c in _chunks({"a.md": 3, "b.md": 2, "c.md": 2})}
    queries = [
        Query(id="qa", text="about a", chunk_id="a.md#0"),
        Query(id="qb", text="about b", chunk_id="b.md#0"),
        Query(id="qc", text="about c", chunk_id="c.md#0"),
    ]
    judgments = [
        Judgment(query_id="qa", chunk_id="a.md#0", grade=3),
        Judgment(query_id="qa", chunk_id="a.md#1", grade=0),
        Judgment(query_id="qa", chunk_id="b.md#0", grade=1),  # graded for qa: never a cross-query negative of qa
        Judgment(query_id="qb", chunk_id="b.md#0", grade=3),  # qb and qc have no graded negative at all
        Judgment(query_id="qc", chunk_id="c.md#0", grade=3),
        Judgment(query_id="qc", chunk_id="a.md#2", grade=3),
    ]
    rules = {"group_size": 4, "positive_min_grade": 2, "max_other_grade": 0, "seed": 0}
    assert len(build_groups(queries, chunks, judgments, **rules)) == 1  # without them only qa trains
    groups = build_groups(queries, chunks, judgments, **rules, cross_query_negatives=2)
    by_query: dict[str, list[dict]] = {}
    for row in groups:
        by_query.setdefault(row["query"], []).append(row)
    assert sorted(by_query) == ["about a", "about b", "about c"] and len(by_query["about c"]) == 2
    text = {c.text: c for c in chunks.values()}
    assert all(len(row["docs"]) == 4 and row["labels"][0] == 3.0 for row in groups)
    qa = by_query["about a"][0]
    assert qa["labels"] == [3.0, 0.0, 0.0, 0.0]
    # a.md#2 is in qa's own file and b.md#0 was graded for qa: c.md#0 is the one other, then a.md#1 repeats
    assert sorted(text[d].id for d in qa["docs"][1:]) == ["a.md#1", "a.md#1", "c.md#0"]
    qb_negatives = {text[d].id for d in by_query["about b"][0]["docs"][1:]}
    assert qb_negatives == {"c.md#0", "a.md#2", "a.md#0"}  # qb has no graded negative: the others fill it
    for row in by_query["about c"]:  # qc's positives are in a.md and c.md: only b.md#0 is left, repeated
        assert {text[d].id for d in row["docs"][1:]} == {"b.md#0"} and row["labels"][1:] == [0.0] * 3


def test_split_is_seeded_disjoint_and_keeps_both_sides() -> None:
    ids = [f"q{i}" for i in range(10)]
    train, dev = split_queries(ids, 0.25, seed=3)
    assert len(dev) == 2 and not set(train) & set(dev) and sorted(train + dev) == sorted(ids)
    assert split_queries(ids, 0.25, seed=3) == (train, dev)
    assert split_queries(["a", "b"], 0.9, seed=0)[0]  # train never empty


def test_queries_of_one_file_are_held_out_together() -> None:
    files = {f"q{i}": f"f{i // 3}.md" for i in range(12)}  # three queries from each of four files
    train, dev = split_queries(sorted(files), 0.25, seed=3, files=files)
    assert len(dev) == 3 and sorted(train + dev) == sorted(files)
    assert not {files[q] for q in train} & {files[q] for q in dev}
    assert split_queries(sorted(files), 0.25, seed=3, files=files) == (train, dev)
    # every file larger than the dev share: the smallest file, never all of them
    lopsided = {**{f"a{i}": "a.md" for i in range(8)}, "b0": "b.md", "b1": "b.md"}
    assert split_queries(sorted(lopsided), 0.1, seed=0, files=lopsided)[1] == ["b0", "b1"]
    # one file: split by query
    one = dict.fromkeys(["x", "y", "z", "w"], "only.md")
    train, dev = split_queries(sorted(one), 0.25, seed=0, files=one)
    assert len(dev) == 1 and len(train) == 3


def test_folds_hold_whole_files_and_every_query_once() -> None:
    files = {f"q{i}": f"f{i % 5}.md" for i in range(23)}  # five files of four or five queries
    folds = fold_queries(sorted(files), 3, seed=3, files=files)
    assert len(folds) == 3 and sorted(q for fold in folds for q in fold) == sorted(files)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not {files[q] for q in folds[a]} & {files[q] for q in folds[b]}
    assert max(map(len, folds)) - min(map(len, folds)) <= 5  # each file to the smallest fold so far
    assert fold_queries(sorted(files), 3, seed=3, files=files) == folds
    assert len(fold_queries(["a", "b"], 3, seed=0, files={"a": "x.md", "b": "x.md"})) == 1  # one file: one fold


def test_ndcg_and_mrr_by_hand() -> None:
    # ranked grades [0, 3, 1]: DCG = 3/log2(3) + 1/2, ideal [3, 1, 0]: 3 + 1/log2(3)
    expected = (3 / math.log2(3) + 0.5) / (3 + 1 / math.log2(3))
    assert ndcg_at_k([0, 3, 1], 10) == pytest.approx(expected)
    assert ndcg_at_k([3, 1, 0], 10) == pytest.approx(1.0)
    assert ndcg_at_k([0, 0], 10) == 0.0
    assert ndcg_at_k([0, 3], 1) == 0.0  # cut-off
    assert mrr_at_k([0, 1, 2], 10, relevant_min=2) == pytest.approx(1 / 3)
    assert mrr_at_k([0, 1, 2], 2, relevant_min=2) == 0.0


def test_sampling_spreads_over_sections_and_keeps_its_order_when_a_file_is_added() -> None:
    chunks = [
        Chunk(id=f"big.md#{i}", text=f"t{i}", source="big.md", title=f"section {i // 10}") for i in range(40)
    ] + _chunks({"a.md": 3})
    picked = sample_chunks(chunks, budget=8, seed=3)
    big = [c for c in picked if c.source == "big.md"]
    assert len(big) == 5 and len({c.title for c in big}) == 4  # every section of big.md before a second one

    more = sample_chunks([*chunks, *_chunks({"new.md": 5})], budget=60, seed=3)
    assert [c.id for c in more if c.source != "new.md"] == [c.id for c in sample_chunks(chunks, 60, seed=3)]


def test_styles_follow_the_mix() -> None:
    styles = assign_styles(10, {"question": 2.0, "keyword": 1.0, "paraphrase": 1.0}, seed=0)
    assert sorted(styles) == ["keyword"] * 3 + ["paraphrase"] * 2 + ["question"] * 5  # the tie goes by name
    assert assign_styles(3, {"keyword": 1.0, "question": 0.0}, seed=0) == ["keyword"] * 3
    assert styles == assign_styles(10, {"question": 2.0, "keyword": 1.0, "paraphrase": 1.0}, seed=0)


def test_dynamic_examples_come_from_other_files() -> None:
    chunks = {c.id: c for c in _chunks({"a.md": 2, "b.md": 2, "c.md": 2})}
    kept = [Query(id=f"q{i}", text=f"query about {cid}", chunk_id=cid) for i, cid in enumerate(chunks)]

    picked = pick_dynamic_examples(kept, chunks, "a.md", 2, seed=1)

    assert len(picked) == 2 and not any("a.md" in text for text in picked)
    assert {text.split()[-1].split("#")[0] for text in picked} == {"b.md", "c.md"}  # one per file first
    assert pick_dynamic_examples(kept, chunks, "a.md", 0, seed=1) == []


def test_expected_grade_weighs_the_grade_digits_only() -> None:
    certain = [{"token": "{", "top": {"{": 0.0}}, {"token": "3", "top": {"3": 0.0}}]
    assert expected_grade(certain) == 3.0
    torn = [{"token": "1", "top": {"1": math.log(0.5), " 2": math.log(0.25), "2": math.log(0.25), "x": -0.1}}]
    assert expected_grade(torn) == pytest.approx(1.5)
    assert expected_grade([{"token": "yes", "top": {"yes": 0.0}}]) is None
    assert expected_grade(None) is None


def test_training_groups_use_the_expected_grade_as_the_level() -> None:
    chunks = {c.id: c for c in _chunks({"a.md": 3})}
    judgments = [
        Judgment(query_id="q0", chunk_id="a.md#0", grade=3, score=2.6),
        Judgment(query_id="q0", chunk_id="a.md#1", grade=2),
        Judgment(query_id="q0", chunk_id="a.md#2", grade=0, score=0.3),
    ]
    (group,) = training_groups([Query(id="q0", text="q", chunk_id="a.md#0")], chunks, judgments, GradeConfig())
    assert (group.pos_ids, group.pos_scores, group.neg_scores) == (["a.md#0", "a.md#1"], [2.6, 2.0], [0.3])


def test_grading_takes_the_source_and_only_the_best_other_candidates() -> None:
    from rerankforge.artifacts import Candidate, CandidateList
    from rerankforge.stages.grade import graded_candidates

    query = Query(id="q0", text="dock breaker", chunk_id="src")
    ranked = CandidateList(
        query_id="q0",
        candidates=[Candidate(chunk_id=c, score=1.0 - i / 10, rank=i) for i, c in enumerate(["a", "src", "b", "c"])],
    )
    assert graded_candidates(query, ranked, None) == ["a", "src", "b", "c"]
    assert graded_candidates(query, ranked, 1) == ["a", "src"]
    assert graded_candidates(query, ranked, 2) == ["a", "src", "b"]
    assert graded_candidates(query, ranked, 0) == ["src"]


def test_the_first_stage_negative_is_never_a_candidate_the_grader_called_relevant() -> None:
    from rerankforge.artifacts import Candidate, CandidateList
    from rerankforge.training.bi_encoder import training_triplets

    chunks = {c.id: c for c in _chunks({"a.md": 3, "b.md": 2})}
    query = Query(id="q0", text="question about a 0", chunk_id="a.md#0")
    ranked = CandidateList(
        query_id="q0",
        candidates=[
            Candidate(chunk_id=c, score=1.0 - i / 10, rank=i) for i, c in enumerate(["a.md#0", "a.md#1", "a.md#2"])
        ],
    )

    def negative(judgments: list[Judgment]) -> str:
        rows = training_triplets(
            [query],
            chunks,
            {"q0": ranked},
            judgments,
            positive_min_grade=2,
            negative_max_grade=0,
            seed=1,
            negatives=1,
            same_file_first=False,
        )
        return rows[0]["negative"]

    source = Judgment(query_id="q0", chunk_id="a.md#0", grade=3)
    # the best other candidate graded relevant: the next, ungraded one is the hard negative
    assert negative([source, Judgment(query_id="q0", chunk_id="a.md#1", grade=3)]) == chunks["a.md#2"].text
    # graded not relevant: it is the negative
    assert negative([source, Judgment(query_id="q0", chunk_id="a.md#1", grade=0)]) == chunks["a.md#1"].text
    # every candidate graded relevant: a chunk of another file
    everything = [source, *(Judgment(query_id="q0", chunk_id=c, grade=2) for c in ("a.md#1", "a.md#2"))]
    assert chunks[next(c for c in chunks if chunks[c].text == negative(everything))].source == "b.md"
    # the grader rejected the query's own passage: no row at all
    bad = training_triplets(
        [query], chunks, {"q0": ranked}, [Judgment(query_id="q0", chunk_id="a.md#0", grade=0)],
        positive_min_grade=2, negative_max_grade=0, seed=1, negatives=1, same_file_first=False,
    )  # fmt: skip
    assert bad == []


def test_the_first_stage_takes_several_negatives_the_source_files_first() -> None:
    from rerankforge.artifacts import Candidate, CandidateList
    from rerankforge.training.bi_encoder import training_triplets

    chunks = {c.id: c for c in _chunks({"a.md": 3, "b.md": 2, "c.md": 4})}
    query = Query(id="q0", text="question about a 0", chunk_id="a.md#0")
    order = ["b.md#0", "a.md#0", "a.md#1", "b.md#1", "a.md#2"]
    ranked = CandidateList(
        query_id="q0", candidates=[Candidate(chunk_id=c, score=1.0 - i / 10, rank=i) for i, c in enumerate(order)]
    )
    source = [Judgment(query_id="q0", chunk_id="a.md#0", grade=3)]

    def negatives(n: int, same_file: bool, judgments: list[Judgment] = source) -> list[str]:
        rows = training_triplets(
            [query], chunks, {"q0": ranked}, judgments, positive_min_grade=2, negative_max_grade=0, seed=1,
            negatives=n, same_file_first=same_file,
        )  # fmt: skip
        assert list(rows[0])[:2] == ["anchor", "positive"] and len(rows[0]) == 2 + n
        by_text = {c.text: i for i, c in chunks.items()}
        return [by_text[text] for key, text in rows[0].items() if key.startswith("negative")]

    assert negatives(2, same_file=False) == ["b.md#0", "a.md#1"]  # rank order
    assert negatives(2, same_file=True) == ["a.md#1", "a.md#2"]  # the source file's others first, in rank order
    assert negatives(4, same_file=True) == ["a.md#1", "a.md#2", "b.md#0", "b.md#1"]
    # more than the candidates give: chunks of other files fill up, never the source file's relevant ones
    relevant = [*source, Judgment(query_id="q0", chunk_id="a.md#1", grade=3)]
    extra = negatives(5, same_file=True, judgments=relevant)
    assert extra[:3] == ["a.md#2", "b.md#0", "b.md#1"]
    assert len(set(extra)) == 5 and all(chunks[c].source != "a.md" for c in extra[3:])
    # a candidate of another file graded relevant is not drawn by the fill either
    other_relevant = [*relevant, Judgment(query_id="q0", chunk_id="b.md#0", grade=2)]
    filled = negatives(6, same_file=True, judgments=other_relevant)  # all that are left
    assert "b.md#0" not in filled and len(set(filled)) == 6
