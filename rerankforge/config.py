"""Build configuration: one pydantic section per stage. Every default lives here and nowhere else.

Example:
    >>> from rerankforge.config import BuildConfig
    >>> cfg = BuildConfig(docs="examples/docs")
    >>> cfg.train.loss
    'bce'
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rerankforge.errors import ConfigError

DEFAULT_MINILM = "all-MiniLM-L6-v2"
QUERY_STYLES = ("question", "keyword", "paraphrase")


class Section(BaseModel):
    """A config section: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LLMConfig(Section):
    """Which LLM writes queries and grades passages."""

    provider: Literal["auto", "ollama", "openai", "embedded"] = Field(
        "auto",
        description="auto: Ollama when a server answers at `host`/OLLAMA_HOST, else embedded llama.cpp.",
    )
    model: str | None = Field(
        None,
        description="Ollama/OpenAI model name, or a GGUF path / packaged name for embedded. "
        "None: the provider's default (embedded: qwen2.5-coder-1.5b-instruct-q4_k_m).",
    )
    host: str | None = Field(None, description="Server URL. Ollama: falls back to $OLLAMA_HOST, then localhost:11434.")
    hosts: list[str] = Field(
        default_factory=list,
        description="Several servers of the same model: each call goes to the least busy one. Overrides `host`.",
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        description="LLM calls in flight at once. None: $OLLAMA_NUM_PARALLEL per host when set, else 4 per host; "
        "1 for embedded. Match it to the server's parallel slots (Ollama: OLLAMA_NUM_PARALLEL; llama.cpp: -np). "
        "Embedded: the runtime's parallel sequences (on 2 cores, 2 gave 1.05x the query calls a minute of 1).",
    )
    api_key: str | None = Field(None, description="OpenAI-compatible servers only; else $OPENAI_API_KEY.")
    temperature: float = 0.0
    seed: int = 13
    timeout_s: float = 300.0
    retries: int = 2
    num_ctx: int = 4096
    keep_alive: str = "30m"
    threads: int | None = Field(None, description="Embedded only: CPU threads (default: all cores).")
    chat_template: str | None = Field(
        None,
        description="Embedded only: a llama.cpp chat template name (e.g. chatml) for GGUFs that carry none.",
    )

    def server_urls(self) -> list[str | None]:
        """The hosts calls are spread over: ``hosts`` when given, else the one ``host`` (None: the default)."""
        return list(self.hosts) if self.hosts else [self.host]


class ParseConfig(Section):
    """How documents are partitioned and chunked (unstructured's chunk_by_title)."""

    max_characters: int = Field(1200, gt=50, description="Hard limit of a chunk's length.")
    new_after_n_characters: int = Field(900, gt=50, description="Soft limit: start a new chunk after this.")
    combine_under_n_characters: int = Field(250, ge=0, description="Merge small sections up to this size.")
    min_chunk_characters: int = Field(40, ge=1, description="Drop chunks shorter than this (page furniture).")
    pdf_strategy: Literal["fast", "hi_res", "auto"] = Field(
        "fast", description="fast: the PDF's text layer; hi_res/auto need unstructured's OCR and layout extras."
    )
    include: list[str] = Field(
        default_factory=list,
        description="gitignore-style patterns relative to the docs folder; when given, only matching files are read.",
    )
    exclude: list[str] = Field(default_factory=list, description="gitignore-style patterns of files to leave out.")
    include_hidden: bool = Field(False, description="Also read hidden files and folders (.git/.svn/.hg never).")
    follow_symlinks: bool = Field(True, description="Follow symlinked files and folders (each real file read once).")
    max_file_mb: float = Field(100.0, gt=0, description="Skip files larger than this, with the reason in the report.")
    max_unzipped_mb: float = Field(
        500.0, gt=0, description="Skip Office/ODF/EPUB files (zip containers) that would inflate beyond this."
    )
    workers: int | None = Field(None, ge=1, description="Parser processes; None: one per CPU core. 1: in-process.")
    timeout_s: float = Field(300.0, gt=0, description="Give up on a single file after this many seconds.")
    max_tokens: int | None = Field(
        None,
        gt=8,
        description="Hard limit of a chunk in tokens of train.backbone's tokenizer. None: train.max_length minus "
        "query_tokens minus the pair's special tokens, so (query, chunk) fits the cross-encoder.",
    )
    query_tokens: int = Field(64, ge=0, description="Tokens kept free for the query when max_tokens is derived.")
    title_prefix: bool = Field(False, description="Prefix each chunk's text with its section title.")
    dedup: bool = Field(True, description="Remove exact duplicate chunks (normalised text) across the corpus.")
    near_duplicate_threshold: float | None = Field(
        0.8,
        gt=0,
        le=1,
        description="Also remove chunks whose word 3-gram Jaccard similarity (MinHash) to a kept chunk is at "
        "least this; None: exact duplicates only.",
    )

    def token_limit(self, train_max_length: int, pair_special_tokens: int) -> int:
        """Tokens a chunk may have so that (query, chunk) fits the cross-encoder's max length."""
        if self.max_tokens is not None:
            return self.max_tokens
        limit = train_max_length - self.query_tokens - pair_special_tokens
        if limit < 16:
            raise ConfigError(
                f"train.max_length {train_max_length} leaves {limit} tokens for a chunk after "
                f"parse.query_tokens {self.query_tokens}. Raise train.max_length or set parse.max_tokens."
            )
        return limit


class QueriesConfig(Section):
    """Synthetic query generation."""

    max_queries: int | None = Field(
        None,
        gt=0,
        description="At most this many chunks get queries (LLM calls). None: as many as `time_budget` leaves time "
        "for, every chunk at most.",
    )
    per_chunk: int = Field(
        3, ge=1, le=5, description="Queries the LLM writes per sampled chunk, in one call (about different facts)."
    )
    template: str = Field("queries.jinja", description="Template name in templates/ or a path to your own.")
    examples_file: str | None = Field(None, description="A text file of your own example queries, one per line.")
    min_words: int = 3
    max_words: int = 30
    max_copy_overlap: float = Field(
        0.8, description="Drop a query when this fraction of its word 4-grams appears verbatim in the chunk."
    )
    max_tokens: int = 160
    styles: dict[str, float] = Field(
        default_factory=lambda: {"question": 2.0, "keyword": 1.0, "paraphrase": 1.0},
        description="Mix of query styles (relative weights): question (natural question), keyword (a few "
        "search terms), paraphrase (a question in other words than the chunk's). Each sampled chunk gets one.",
    )
    dynamic_examples: int = Field(
        0,
        ge=0,
        description="Few-shot examples taken from queries this build already kept (from other files), added "
        "to the user's examples; chunks are asked in rounds of 16, each seeing the rounds before it. 0: off "
        "(a small model copies examples verbatim).",
    )
    round_trip_top_k: int = Field(
        20,
        ge=0,
        description="Round-trip filter: keep a query only when the bi-encoder (mine.bi_encoder) ranks its "
        "source chunk in its top-k over the whole corpus. 0: off.",
    )

    @model_validator(mode="after")
    def _known_styles(self) -> QueriesConfig:
        unknown = sorted(set(self.styles) - set(QUERY_STYLES))
        if unknown or not any(w > 0 for w in self.styles.values()) or any(w < 0 for w in self.styles.values()):
            raise ValueError(
                f"styles must give non-negative weights to some of {', '.join(QUERY_STYLES)}; got {self.styles}"
            )
        return self


class MineConfig(Section):
    """First-stage retrieval of candidates with a bi-encoder in Qdrant."""

    NOT_IN_STAGE_KEY: ClassVar[set[str]] = {"vector_cache"}  # a cache changes how fast, not what is written

    bi_encoder: str = Field(DEFAULT_MINILM, description="sentence-transformers model id or local path.")
    top_k: int = Field(
        10, gt=0, description="Candidates per query: hard negatives for the tuning, and what grade.top_k grades."
    )
    qdrant_url: str | None = Field(None, description="A Qdrant server; None keeps an embedded index in the run folder.")
    collection: str = "rerankforge_chunks"
    batch_size: int = 32
    vector_cache: bool = Field(
        True, description="Reuse chunk vectors across builds ($RERANKFORGE_HOME/embeddings), keyed by model and text."
    )


class GradeConfig(Section):
    """LLM relevance grading on the 0-3 scale."""

    template: str = "grade.jinja"
    positive_min_grade: int = Field(2, ge=1, le=3, description="A candidate with at least this grade is a positive.")
    negative_max_grade: int = Field(
        0, ge=0, le=2, description="A candidate with at most this grade is a hard negative."
    )
    top_k: int | None = Field(
        0,
        ge=0,
        description="Grade only the best this-many other candidates of each query; the rest of mine.top_k stay "
        'ungraded, cheap hard negatives for the first stage\'s tuning. "all" (or None): grade them all. 0 (the '
        "measured recipe): the packaged model called most of them relevant, so its grades filtered little.",
    )
    source: bool | Literal["auto"] = Field(
        "auto",
        description="Grade each query's own source passage (a query the grader finds unanswered there is dropped). "
        "auto (false): every kept query's source passage is its positive, at the top grade for a cross-encoder: "
        "in three measured builds (two MedQuAD builds and one with a pretrained reranker) the grader passed "
        "2,617 of 2,618 source passages, and grading them took a quarter of the LLM time.",
    )
    max_tokens: int = 24
    logprobs: bool = Field(
        True,
        description="Where the provider returns token log-probabilities, also keep the expected grade "
        "(sum of grade x probability), a finer training label than the grade the model wrote.",
    )
    samples: int = Field(
        1, ge=1, le=16, description="Self-consistency: grade each pair this many times and keep the mean."
    )
    sample_temperature: float = Field(
        0.7, ge=0, description="Temperature of the extra samples (the first one uses llm.temperature)."
    )

    @field_validator("top_k", mode="before")
    @classmethod
    def _all_candidates(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == "all" else value  # TOML has no null

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> GradeConfig:
        if self.negative_max_grade >= self.positive_min_grade:
            raise ValueError(
                f"negative_max_grade ({self.negative_max_grade}) must be below positive_min_grade "
                f"({self.positive_min_grade}), or a passage would be both"
            )
        return self


class TrainConfig(Section):
    """Fine-tuning of the scorer's parts: the first stage's bi-encoder and the cross-encoder."""

    backbone: str = Field(DEFAULT_MINILM, description="Hugging Face id or local path of the cross-encoder to tune.")
    cross_encoder: bool | Literal["auto"] = Field(
        "auto",
        description="Train the cross-encoder: auto trains it when the backbone is a pretrained reranker (a "
        "sequence-classification model) and skips it for a plain encoder, which, tuned on this data, never beat "
        "the tuned first stage in measurement; the scorer is then the first stage alone, tuned or not.",
    )
    loss: Literal["lce", "wasserstein", "bce", "listnet", "lambda"] = Field(
        "bce", description="lce, wasserstein (SyCL), bce (graded, BiXSE), listnet or lambda (sentence-transformers)."
    )
    group_size: int = Field(4, ge=2, description="Documents per query group: 1 positive + group_size-1 others.")
    cross_query_negatives: int = Field(
        2, ge=0, description="Others per group that are positives of other queries (label 0): no LLM call needed."
    )
    mined_negatives: int = Field(
        0,
        ge=0,
        description="Others per group taken from the query's mined candidates that the grader did not judge "
        "(label 0), the source file's first when first_stage_same_file: hard negatives at no LLM cost.",
    )
    epochs: float = 4.0
    batch_size: int = Field(4, gt=0, description="Query groups per step (per device).")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Steps whose gradients add up before an update: a larger effective batch in less memory."
    )
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    max_length: int = Field(
        256, description="Token cap per (query, passage) pair; training uses the data's own longest pair if shorter."
    )
    temperature: float = Field(1.0, gt=0, description="LCE / Wasserstein / graded-BCE score temperature.")
    dev_fraction: float = Field(0.25, gt=0, lt=1, description="Share of synthetic queries held out for evaluation.")
    eval_points: int = Field(
        10, ge=1, description="Evaluations of nDCG@10 on the held-out queries during training (and checkpoints)."
    )
    keep_best: bool = Field(True, description="Keep the checkpoint with the best held-out nDCG@10, not the last.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 on CUDA, fp32 on CPU and MPS."
    )
    seed: int = 13
    tune_first_stage: bool = Field(
        True,
        description="Also fine-tune the first stage's bi-encoder (mine.bi_encoder) on the queries; the evaluate "
        "stage serves it only when it measurably beats the untuned one.",
    )
    first_stage_learning_rate: float = Field(2e-5, gt=0, description="Learning rate of the bi-encoder's tuning.")
    first_stage_epochs: float = Field(1.0, gt=0, description="Epochs of the bi-encoder's tuning.")
    first_stage_batch_size: int = Field(
        16, ge=2, description="Queries per step of the bi-encoder's tuning (the others are in-batch negatives)."
    )
    first_stage_negatives: int = Field(
        3, ge=1, le=8, description="Hard negatives per query in the bi-encoder's tuning (mined candidates)."
    )
    first_stage_folds: int = Field(
        4,
        ge=1,
        le=8,
        description="Folds of whole files on which the evaluate stage judges the tuned first stage. 1: the "
        "held-out queries alone. K > 1: where those alone do not show a gain, K - 1 more tunings, each on every "
        "kept query but one fold's, so that every kept query is judged by a tuning that never saw it (K times "
        "the evidence for K times the tuning).",
    )
    first_stage_same_file: bool = Field(
        False,
        description="Take the bi-encoder's hard negatives from the source file's other candidates first (the "
        "same topic, another aspect) instead of in the first stage's rank order. Off: on each of MedQuAD's three "
        "sources, measured separately, rank order gained more on real questions (+0.002 to +0.007 nDCG@10; "
        "combined p 0.03), and where one answer runs over several chunks of a file, its other chunks are false "
        "negatives (benchmarks/RESULTS.md).",
    )


class EvaluateConfig(Section):
    """Held-out evaluation (first stage alone vs reranked) and the evaluation on your own labelled queries."""

    # Settings of the labelled evaluation after the build: they do not change the evaluate stage's artifacts,
    # so they stay out of its cache key (a new eval file must not retrain or re-export anything).
    NOT_IN_STAGE_KEY: ClassVar[set[str]] = {
        "eval_data", "eval_corpus", "first_stage", "rerank_top_k", "max_queries", "match_threshold", "p_value",
    }  # fmt: skip

    k: int = 10
    dev_top_k: int = Field(
        20, gt=0, description="First-stage candidates per held-out query on which the served scorer is chosen."
    )
    min_gain: float = Field(
        0.0,
        ge=0,
        description="A tuned first stage or a cross-encoder weight is served only when it lifts the held-out "
        "synthetic nDCG@k over the untuned first stage by more than this (and at dev_p_value).",
    )
    dev_p_value: float | None = Field(
        0.005,
        gt=0,
        lt=1,
        description="On the held-out synthetic queries, the reranker is better (and fused with weight > 0) only "
        "when a paired t-test's p is below this; None: any gain counts. 0.005, not 0.05: on MedQuAD the two "
        "builds whose synthetic gain had p between them (0.0096, 0.046) lost on real questions; of those below "
        "0.005, the larger builds gained and a 104-call build did not (+0.005; benchmarks/RESULTS.md).",
    )
    eval_data: str | None = Field(
        None,
        description="Your labelled queries, evaluated at the end of a build: a BEIR folder, or a CSV/JSONL file "
        "with columns query, document (an id or the relevant text) and optional grade.",
    )
    eval_corpus: str | None = Field(
        None,
        description="Documents that CSV/JSONL labels point into (a BEIR corpus.jsonl or folder). "
        "Default: the build's chunks.",
    )
    first_stage: Literal["dense", "bm25"] = Field(
        "dense", description="Which first stage the reranker reranks on labelled data (both are reported)."
    )
    rerank_top_k: int = Field(50, gt=0, description="First-stage candidates the reranker reorders per query.")
    max_queries: int | None = Field(
        500, gt=0, description="Evaluate a seeded sample of at most this many labelled queries; None: all."
    )
    match_threshold: float = Field(
        90.0, ge=0, le=100, description="Fuzzy match score (0-100) a label's text needs to count as a document."
    )
    p_value: float = Field(
        0.05, gt=0, lt=1, description="A gain on labelled data counts only when the paired t-test's p is below this."
    )


class ExportConfig(Section):
    """ONNX export."""

    quantize: bool = True
    static_int8: bool = Field(
        True,
        description="Also write a static (QDQ) int8 model calibrated on the build's own pairs; it is served "
        "when it is the fastest variant within 1 nDCG point of fp32.",
    )
    openvino: bool = Field(
        True,
        description="Also write an OpenVINO int8 model (NNCF, calibrated on the build's pairs) when openvino and "
        "nncf are installed; like every variant, it is served when it is the fastest within 1 nDCG point of fp32.",
    )
    calibration_pairs: int = Field(64, ge=1, description="Pairs used to calibrate the static int8 models.")
    first_stage_variants: list[Literal["int8", "int8_static", "openvino", "openvino_int8"]] = Field(
        ["int8", "openvino", "openvino_int8"],
        description="Faster forms of the first stage to write beside its fp32 graph and measure: onnxruntime's "
        "dynamic int8, static int8 (calibrated on the build's chunks; it lost about 10% of the cosine on "
        "MiniLM, so it is not a default), the fp32 graph run by OpenVINO (bf16 where the CPU has it) and NNCF "
        "int8 for OpenVINO. The served one is the fastest within 1 nDCG point of fp32 on the held-out queries.",
    )
    chunk_vectors: bool = Field(
        True,
        description="Put the first stage's vectors of the build's own chunks into the model folder "
        "(first_stage/chunk_vectors.npz, keyed by each text's sha256, no text): a server starts with them in "
        "its memo, so a known passage is never embedded. A tuned first stage embeds the chunks once more.",
    )
    chunk_vectors_max_mb: float = Field(
        128.0, ge=0, description="Leave the chunk vectors out when they would take more than this (MB)."
    )
    opset: int = 17
    parity_tolerance: float = Field(1e-4, description="Max |torch - onnx fp32| score difference allowed.")


class ServeConfig(Section):
    """Serving an exported model (`rerankforge serve`, :func:`rerankforge.serve.app.create_app`)."""

    host: str = Field("127.0.0.1", description="Interface to bind; 127.0.0.1 keeps the server on this machine.")
    port: int = Field(8000, ge=0, le=65535)
    threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads (default: usable cores).")
    batch_size: int = Field(
        8, ge=1, description="Pairs per forward pass (sorted by length first; small batches pad least)."
    )
    max_wait_ms: float = Field(2.0, ge=0, description="How long a request waits for others to share its batch.")
    max_batch_pairs: int = Field(256, ge=1, description="A micro-batch stops taking requests at this many pairs.")
    long_documents: Literal["truncate", "window"] = Field(
        "truncate", description="Documents longer than the model's window: cut them, or score the best window."
    )
    max_documents: int = Field(1000, ge=1, description="Documents per request.")
    max_document_chars: int = Field(100_000, ge=1, description="Characters per document.")
    max_body_mb: float = Field(20.0, gt=0, description="Request body size limit (413 above it).")
    vector_cache_mb: float = Field(
        256.0,
        ge=0,
        description="Memory for the first stage's document vectors, least recently used out first (0: off). A "
        "passage's vector does not depend on the query, so one seen before is not embedded again (its score can "
        "differ in the last bits, as another batch's padding makes it differ without the memo). MiniLM's 384 "
        "floats: about 170,000 passages in 256 MB.",
    )


class BuildConfig(Section):
    """The whole build. Load one from TOML with :func:`load_config`."""

    docs: Path
    run_dir: Path | None = Field(None, description="Where artifacts go; default: <docs>/../rerankforge-run.")
    time_budget: str | None = Field(
        "2h",
        description="Wall time of the whole build (e.g. 2h, 90m, 1h30m): query writing stops when the rest of "
        'the build would no longer fit, at the rates this build\'s own LLM calls show. "off": queries.max_queries '
        "alone sizes it. A resumed build gets the budget again from where it resumes.",
    )
    llm: LLMConfig = Field(default_factory=LLMConfig)
    parse: ParseConfig = Field(default_factory=ParseConfig)
    queries: QueriesConfig = Field(default_factory=QueriesConfig)
    mine: MineConfig = Field(default_factory=MineConfig)
    grade: GradeConfig = Field(default_factory=GradeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    serve: ServeConfig = Field(
        default_factory=ServeConfig,
        description="Read by `rerankforge serve --config FILE`; the build does not use it, so one file holds both.",
    )

    @model_validator(mode="after")
    def _sized(self) -> BuildConfig:
        if self.time_budget_seconds() is None and self.queries.max_queries is None:
            raise ValueError(
                'time_budget is "off" and queries.max_queries is not set: set one, or the build has no size'
            )
        return self

    def time_budget_seconds(self) -> float | None:
        """The budget in seconds; None when it is off (raises ValueError, with the forms it takes, when bad)."""
        from rerankforge.budget import parse_duration

        off = self.time_budget is None or self.time_budget.strip().lower() in ("off", "none")
        return None if off else parse_duration(self.time_budget)  # type: ignore[arg-type]

    def resolved_run_dir(self) -> Path:
        if self.run_dir is not None:
            return Path(self.run_dir)
        docs = Path(self.docs).resolve()
        return docs.parent / f"{docs.name}-rerankforge-run"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> None:
    """Paths in a config file are relative to the file, wherever the command runs from."""
    for key in ("docs", "run_dir"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str((base / data[key]).resolve())
    queries = data.get("queries", {})
    if isinstance(queries.get("examples_file"), str) and not Path(queries["examples_file"]).is_absolute():
        queries["examples_file"] = str((base / queries["examples_file"]).resolve())
    evaluate = data.get("evaluate", {})
    for key in ("eval_data", "eval_corpus"):
        if isinstance(evaluate.get(key), str) and not Path(evaluate[key]).is_absolute():
            evaluate[key] = str((base / evaluate[key]).resolve())
    for section in ("queries", "grade"):
        template = data.get(section, {}).get("template")
        if isinstance(template, str) and (base / template).is_file():  # else: a shipped template's name
            data[section]["template"] = str((base / template).resolve())


def load_section(section: type[Section], values: dict[str, Any], where: str) -> Any:
    """One config section from plain values, with the same one-line error as :func:`load_config`.

    Example:
        >>> load_section(ServeConfig, {"port": 9000}, "the serve options").port
        9000
    """
    try:
        return section(**values)
    except ValidationError as exc:
        raise _config_error(where, exc) from exc


def load_serve_config(path: str | Path | None, overrides: dict[str, Any]) -> ServeConfig:
    """The ``[serve]`` table of a TOML config (the build's own file may hold it; its other tables are not read),
    with command-line overrides on top (``None`` = keep)."""
    values = dict(_read_toml(Path(path)).get("serve", {})) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return load_section(ServeConfig, values, str(path) if path is not None else "the serve options")


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"Config file {path} does not exist. Pass an existing TOML file, e.g. examples/rerankforge.toml."
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}. Fix the line it names.") from exc


def _config_error(where: str, exc: ValidationError) -> ConfigError:
    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
    return ConfigError(f"Invalid setting in {where}: {problems}. See the config reference in docs/config.md.")


def load_config(path: str | Path | None = None, **overrides: Any) -> BuildConfig:
    """Read a TOML config (optional) and apply overrides (nested dicts, ``None`` = keep).

    Relative paths in the file are taken relative to the file's folder.

    Example:
        >>> cfg = load_config(None, docs="examples/docs", train={"loss": "wasserstein"})
        >>> cfg.train.loss
        'wasserstein'
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        data = _read_toml(path)
        _resolve_relative_paths(data, path.parent)
    data = _deep_merge(data, overrides)
    where = f"config file {path}" if path else "the options"
    try:
        return BuildConfig(**data)
    except ValidationError as exc:
        raise _config_error(where, exc) from exc
