"""The build report and the labelled evaluation on a real (FakeLLM) build: files, numbers, headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankforge.cli.main import app
from rerankforge.config import EvaluateConfig
from rerankforge.evaluation import LabelledEvalSpec, run_labelled_evaluation
from rerankforge.evaluation.scorer_choice import HOW_FAR_TO_TRUST
from rerankforge.report import write_report
from tests.conftest import fake_build_toml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "examples" / "eval-labels.csv"
MEDQUAD = ROOT.parent / "shared" / "data" / "medquad-dev"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock"))
    return target


@pytest.fixture(scope="module")
def reported(fake_build, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the FakeLLM build, evaluated on the hand-written example labels, with its report."""
    _, _, source = fake_build
    run_dir = _copy_run(source, tmp_path_factory.mktemp("reported") / "run")
    spec = LabelledEvalSpec(
        data=LABELS,
        model=str(run_dir / "model"),
        evaluate=EvaluateConfig(rerank_top_k=10),
        bi_encoder="all-MiniLM-L6-v2",
        run_dir=run_dir,
        onnx=True,
    )
    result = run_labelled_evaluation(spec)
    return run_dir, result, write_report(run_dir)


def test_labelled_evaluation_of_a_build(reported) -> None:
    run_dir, result, _ = reported
    assert result["data"]["format"] == "csv" and result["data"]["queries_evaluated"] == 18
    assert result["data"]["unmatched_labels"] == 0  # every hand-written excerpt found its chunk
    assert set(result["metrics"]) == {"bm25", "dense", "reranked", "fused"}
    for system, values in result["metrics"].items():
        assert set(values) == {"ndcg@10", "mrr@10", "map", "recall@10"}, system
        assert all(0.0 <= v <= 1.0 for v in values.values())
    # the real bi-encoder finds most of these hand-labelled passages in its top 10
    assert result["metrics"]["dense"]["recall@10"] >= 0.7
    # the reranker reorders the dense top-10 only, so its recall@10 is the dense one
    assert result["metrics"]["reranked"]["recall@10"] == pytest.approx(result["metrics"]["dense"]["recall@10"])
    wtl = result["win_tie_loss"]["reranked"]["ndcg@10"]
    assert wtl["W"] + wtl["T"] + wtl["L"] == 18
    assert 0.0 <= result["p_value"] <= 1.0
    # the verdict says what the numbers say, and quotes them
    better = result["gain_ndcg"] > 0 and result["p_value"] < 0.05
    assert result["better"] is better and result["verdict"].startswith("better than" if better else "NOT")
    assert (
        f"{result['gain_ndcg']:+.4f}" in result["verdict"]
        and f"{wtl['W']} wins / {wtl['L']} losses" in result["verdict"]
    )
    assert json.loads((run_dir / "eval" / "labelled.json").read_text())["verdict"] == result["verdict"]


def test_report_files_and_markdown_summary(reported) -> None:
    run_dir, result, report = reported
    assert report.html == run_dir / "report.html" and report.html.stat().st_size > 50_000
    names = {p.name for p in report.images}
    assert names == {
        "labelled_metrics.png", "labelled_deltas.png", "synthetic_metrics.png", "synthetic_deltas.png",
        "grades.png", "query_lengths.png", "loss.png", "latency.png",
    }  # fmt: skip
    for image in report.images:
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.verdict == result["verdict"]  # labelled data, when there is some, is the headline
    markdown = (run_dir / "report.md").read_text()
    assert markdown == report.markdown
    assert f"The reranker is {result['verdict']}" in markdown
    assert "| BM25 (bm25s) |" in markdown and "| baseline |" in markdown
    assert "Held-out synthetic queries." in markdown
    # the synthetic verdict comes with what it has been worth on real questions, in both reports
    assert f"How far to trust it: {HOW_FAR_TO_TRUST}." in markdown
    assert "How far to trust it:" in report.html.read_text() and "Spearman" in report.html.read_text()
    assert str(report.html) in markdown
    data = json.loads((run_dir / "report" / "report.json").read_text())
    assert data["llm"]["calls"] > 0 and data["llm"]["source"] == "build.json"
    assert data["latency"]["ms"]["fp32"] and data["latency"]["ms"]["int8"]
    assert [s["name"] for s in data["stages"]] == ["parse", "queries", "mine", "grade", "train", "evaluate", "export"]


def _chromium() -> str:
    found = next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)
    if found is None:
        pytest.skip(f"no Chromium binary on PATH (looked for {', '.join(CHROMIUM_NAMES)}): apt-get install chromium")
    return found


def test_report_renders_in_headless_chromium_with_every_image_loaded(reported) -> None:
    chromium = _chromium()
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright").sync_playwright
    run_dir, result, report = reported
    screenshot = run_dir / "report" / "screenshot.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(report.html.as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "[...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt}))"
            )
            verdict = page.inner_text("#verdict")
            tables = page.evaluate("document.querySelectorAll('table').length")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert len(images) == len(report.images) == 8
    assert all(i["complete"] and i["width"] > 300 for i in images), images
    assert verdict == f"Verdict: the reranker is {result['verdict']}"
    assert tables >= 5  # labelled, synthetic, stages, example queries, latency
    assert errors == []
    assert screenshot.stat().st_size > 100_000


def test_report_of_an_unfinished_run_shows_what_there_is(fake_build, tmp_path: Path) -> None:
    _, _, source = fake_build
    run_dir = _copy_run(source, tmp_path / "run")
    for stage in ("train", "evaluate", "export", "model", "eval"):
        shutil.rmtree(run_dir / stage, ignore_errors=True)
    report = write_report(run_dir)
    assert report.verdict is None
    assert {p.name for p in report.images} == {"grades.png", "query_lengths.png"}
    assert "no evaluation yet" in report.html.read_text()


def test_report_command_prints_the_summary(reported) -> None:
    run_dir, result, _ = reported
    out = CliRunner().invoke(app, ["report", str(run_dir), "--no-latency"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "rerankforge report" in out.output and "report.html" in out.output
    assert result["verdict"][:60] in " ".join(out.output.split())


def test_report_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert out.exit_code != 0
    assert "is not a run folder (no config.json)" in str(out.exception)


def test_build_with_eval_data_evaluates_and_reports_after_the_build(fake_build, tmp_path: Path) -> None:
    """A finished build run again with --eval-data: no stage before evaluate runs, the labels are evaluated."""
    _, llm, source = fake_build
    run_dir = _copy_run(source, tmp_path / "run")
    config = fake_build_toml(tmp_path / "build.toml", evaluate={"rerank_top_k": 10, "max_queries": 8})
    docs = ROOT / "examples" / "docs"
    args = ["build", str(docs), "-c", str(config), "--run-dir", str(run_dir), "--eval-data", str(LABELS), "--yes"]
    out = CliRunner().invoke(app, args, env={"COLUMNS": "250", "OLLAMA_HOST": "http://127.0.0.1:9"})
    assert out.exit_code == 0, out.output
    statuses = {s["name"]: s["status"] for s in json.loads((run_dir / "build.json").read_text())["runs"][-1]["stages"]}
    assert all(statuses[s] == "skipped" for s in ("parse", "queries", "mine", "grade", "train"))
    labelled = json.loads((run_dir / "eval" / "labelled.json").read_text())
    assert labelled["data"]["queries_evaluated"] == 8 and labelled["rerank_top_k"] == 10
    assert "Your labelled queries." in out.output
    assert (run_dir / "report.html").is_file()


def test_eval_command_on_a_model_folder_with_a_beir_sample_of_medquad(fake_build, tmp_path: Path) -> None:
    if not MEDQUAD.is_dir():
        pytest.skip(f"the MedQuAD benchmark is not at {MEDQUAD}")
    _, _, source = fake_build
    beir = tmp_path / "medquad-sample"  # a small slice, read from the benchmark in place
    (beir / "qrels").mkdir(parents=True)
    with (MEDQUAD / "corpus.jsonl").open() as corpus:
        docs = [json.loads(next(corpus)) for _ in range(60)]
    ids = {d["_id"] for d in docs}
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    qrels = [
        line for line in (MEDQUAD / "qrels" / "test.tsv").read_text().splitlines()[1:] if line.split("\t")[1] in ids
    ]
    query_ids = {line.split("\t")[0] for line in qrels}
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    with (MEDQUAD / "queries.jsonl").open() as queries:
        (beir / "queries.jsonl").write_text("".join(q for q in queries if json.loads(q)["_id"] in query_ids))
    args = ["eval", str(source / "model"), "--data", str(beir), "--onnx", "--max-queries", "12", "--top-k", "5"]
    out = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "BM25 (bm25s)" in out.output and "dense (all-MiniLM-L6-v2)" in out.output
    assert "your labelled queries (12 queries)" in out.output
    assert "The reranker is" in out.output
    assert not (source / "eval").exists()  # a model folder: nothing is written into the run


def test_summary_of_a_build_evaluated_before_every_fold_queries_was_recorded(tmp_path: Path) -> None:
    """A run folder whose evaluate stage is cached from an older version: its metrics lack every_fold_queries,
    and the summary counts the queries the choice judged, not "None"."""
    from rerankforge.report.render import markdown_summary

    figures = {"ndcg@10": 0.4968, "mrr@10": 0.4167}
    choice = {
        "dev_queries": 4,
        "judged_queries": 17,
        "systems": {"first stage": 0.4968, "first stage, every fold": 0.7555},
    }
    evaluation = {"verdict": "NOT better", "better": False, "scorer_choice": choice, "fusion": {"alpha": 0.0},
                  "metrics": {"first_stage": figures, "reranked": figures}, "main_metric": "ndcg@10"}  # fmt: skip
    data = {"labelled": None, "evaluation": evaluation, "stages": [], "synthetic": {}, "llm": {}}
    summary = markdown_summary(data, tmp_path / "report.html")
    assert "(every fold: all 17 kept queries)" in summary and "None" not in summary
