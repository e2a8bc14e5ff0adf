"""Run :func:`parse_file` over many files: in-process for one worker, else in a pool of processes.

Results are yielded as files finish, so the caller records each one at once. The pool uses the forkserver
start method with unstructured preloaded in the server, so each worker starts in a fraction of a second
and inherits nothing from the caller but the job. A worker that dies (a parser crashing the interpreter)
breaks the pool: the files not finished are then retried one at a time, each in a fresh single-worker
pool, so the file that kills its worker is skipped with that reason and every other file is still parsed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from rerankforge.artifacts import SkippedFile
from rerankforge.parsing.worker import FileJob, FileResult, init_worker, parse_file

logger = logging.getLogger(__name__)


def worker_count(requested: int | None) -> int:
    return requested or os.cpu_count() or 1


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["rerankforge.parsing.preload"])
    return context


@contextlib.contextmanager
def _caller_script_hidden() -> Iterator[None]:
    """While workers start: spawn and forkserver would otherwise run the caller's ``__main__`` script again in
    each worker, so a script calling ``build()`` without an ``if __name__ == "__main__":`` guard would start a
    second build there (which meets the run lock and kills the worker). Workers need nothing from it."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    try:
        main.__spec__ = None
        if hasattr(main, "__file__"):
            del main.__file__
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def parse_files(jobs: list[FileJob], workers: int) -> Generator[FileResult, None, None]:
    """Yield one :class:`FileResult` per job, in the order files finish."""
    if not jobs:
        return
    if workers <= 1 or len(jobs) == 1:
        init_worker()
        for job in jobs:
            yield parse_file(job)
        return
    unfinished = yield from _pooled(jobs, workers)
    for job in unfinished:  # after a worker died: one file at a time, to find the one that kills it
        if (yield from _pooled([job], 1)):
            reason = "the parser crashed its worker process (a native library fault, or killed for memory)"
            yield FileResult(job.relative, skipped=SkippedFile(path=job.relative, kind="crashed", reason=reason))


def _pooled(jobs: list[FileJob], workers: int) -> Generator[FileResult, None, list[FileJob]]:
    """Parse ``jobs`` in a pool; returns (as the generator's value) the jobs a dead worker left unfinished."""
    unfinished: list[FileJob] = []
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=_context(), initializer=init_worker
    ) as pool:
        with _caller_script_hidden():  # the workers start here, as jobs are submitted
            futures: dict[Future[FileResult], FileJob] = {pool.submit(parse_file, job): job for job in jobs}
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except BrokenProcessPool:
                    unfinished.append(futures[future])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if unfinished:
        logger.warning("A parser worker died; retrying %d unfinished files one at a time", len(unfinished))
    return sorted(unfinished, key=lambda j: j.relative)
