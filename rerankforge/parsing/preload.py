"""Imported once by the forkserver, so every parser worker forks with the parsers and spaCy already loaded.

Loading them costs ~10 s of CPU per process (spaCy model, pdfminer, the Office libraries); forked workers
share the loaded pages instead of each paying it. Only unstructured's public partitioners are imported.
"""

from __future__ import annotations

import contextlib
import importlib

from rerankforge.parsing.worker import init_worker

init_worker()
for _module in ("auto", "text", "md", "html", "pdf", "docx", "pptx", "xlsx", "csv", "email", "xml", "json"):
    with contextlib.suppress(ImportError):  # a missing optional extra: that format says so when it is met
        importlib.import_module(f"unstructured.partition.{_module}")
with contextlib.suppress(Exception):  # warms the spaCy model up; a failure here shows again on the first file
    from unstructured.partition.text import partition_text

    partition_text(text="Warm up the sentence model once. It is shared by every worker.")
import semantic_text_splitter  # noqa: E402,F401
import tokenizers  # noqa: E402,F401
