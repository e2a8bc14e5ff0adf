"""`rerankforge serve` as a real process on 127.0.0.1 for tests, stopped after a bounded wait."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_process(model_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start the server, wait (at most 60 s) for /health, yield its base URL, terminate it afterwards."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rerankforge.cli.main", "serve", str(model_dir), "--port", str(port), *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited: {server.stdout.read().decode() if server.stdout else ''}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not come up within 60 s")
            time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=20)
