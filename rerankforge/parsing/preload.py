"""Imported once by the forkserver, so every parser worker forks with unstructured already loaded."""

from __future__ import annotations

import unstructured.partition.auto  # noqa: F401

from rerankforge.parsing.worker import init_worker

init_worker()
