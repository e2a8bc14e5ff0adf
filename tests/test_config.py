"""Config loading: defaults in one place, TOML files, overrides, and errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerankforge.config import BuildConfig, load_config
from rerankforge.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads_with_paths_relative_to_it() -> None:
    cfg = load_config(ROOT / "examples" / "rerankforge.toml")
    assert Path(cfg.docs) == (ROOT / "examples" / "docs").resolve()
    assert cfg.queries.examples_file is not None and Path(cfg.queries.examples_file).is_file()
    default = load_config(None, docs=str(ROOT / "examples" / "docs"))
    assert cfg.train == default.train  # the example builds with the default recipe, not a pinned old one


def test_overrides_win_and_none_keeps_the_file_value(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('docs = "d"\n[mine]\ntop_k = 9\n[train]\nloss = "wasserstein"\n')
    cfg = load_config(path, mine={"top_k": None}, train={"loss": "lce"})
    assert cfg.mine.top_k == 9 and cfg.train.loss == "lce"


def test_grade_top_k_all_is_how_a_toml_file_asks_for_every_candidate(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('docs = "d"\n[grade]\ntop_k = "all"\n')
    assert load_config(path).grade.top_k is None and load_config(None, docs="d").grade.top_k == 0
    path.write_text('docs = "d"\n[grade]\ntop_k = "most"\n')
    with pytest.raises(ConfigError, match="top_k"):
        load_config(path)


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('docs = "d"\n[train]\nlos = "lce"\n')
    with pytest.raises(ConfigError, match=r"train\.los: Extra inputs are not permitted"):
        load_config(path)


def test_bad_value_and_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.loss"):
        load_config(None, docs="d", train={"loss": "hinge"})
    broken = tmp_path / "broken.toml"
    broken.write_text("docs = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_grade_thresholds_must_not_overlap() -> None:
    with pytest.raises(ConfigError, match="negative_max_grade"):
        load_config(None, docs="d", grade={"positive_min_grade": 2, "negative_max_grade": 2})


def test_default_run_dir_sits_beside_the_docs(tmp_path: Path) -> None:
    cfg = BuildConfig(docs=tmp_path / "docs")
    assert cfg.resolved_run_dir() == tmp_path / "docs-rerankforge-run"


def test_labelled_evaluation_settings_do_not_change_the_evaluate_stage_key(tmp_path) -> None:
    from rerankforge.pipeline import stage_key
    from rerankforge.stage import Stage, StageResult

    stage = Stage("evaluate", "1", lambda ctx: StageResult(files=[]), ("evaluate",), ())
    base = load_config(None, docs=str(tmp_path))
    labelled = load_config(None, docs=str(tmp_path), evaluate={"eval_data": "labels.csv", "rerank_top_k": 20})
    cut_off = load_config(None, docs=str(tmp_path), evaluate={"k": 5})
    # a new label file must not retrain or re-export anything; a new cut-off must re-evaluate
    assert stage_key(stage, base, {}) == stage_key(stage, labelled, {})
    assert stage_key(stage, base, {}) != stage_key(stage, cut_off, {})


def test_eval_data_in_a_config_file_is_relative_to_the_file(tmp_path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "build.toml").write_text('docs = "docs"\n[evaluate]\neval_data = "labels.csv"\n')
    cfg = load_config(tmp_path / "cfg" / "build.toml")
    assert cfg.evaluate.eval_data == str((tmp_path / "cfg" / "labels.csv").resolve())


def test_the_serve_table_of_a_build_file_sets_the_server_and_options_win(tmp_path: Path) -> None:
    from rerankforge.config import load_serve_config

    path = tmp_path / "rerankforge.toml"
    path.write_text('docs = "d"\n[train]\nloss = "lce"\n[serve]\nmax_documents = 50\nbatch_size = 4\nport = 9100\n')
    cfg = load_serve_config(path, {"port": 9200, "batch_size": None})
    assert (cfg.max_documents, cfg.batch_size, cfg.port) == (50, 4, 9200)
    assert load_config(path).serve.max_documents == 50  # the build reads the same file without complaint
    path.write_text("[serve]\nmax_documents = 0\n")
    with pytest.raises(ConfigError, match="max_documents"):
        load_serve_config(path, {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_serve_config(tmp_path / "missing.toml", {})
