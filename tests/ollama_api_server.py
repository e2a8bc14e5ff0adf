"""A real HTTP server speaking the part of the Ollama REST API that the official ``ollama`` client uses.

It answers ``GET /api/tags``, ``GET /api/version``, ``GET /`` and ``POST /api/chat`` (non-streaming and
NDJSON streaming) in the shapes Ollama uses (each answer is checked against the ``ollama`` client's own
pydantic response models before it is sent), claiming the version whose log-probabilities the provider reads,
and is backed by a real model: any
:class:`~rerankforge.llm.base.LLMProvider` (in the tests, the embedded llama.cpp provider on a tiny GGUF),
whose ``chat_json(messages, schema, max_tokens=num_predict)`` turns the request's ``format`` schema into
llama.cpp's grammar-constrained structured output.

Faults can be injected for the next requests, or for the n-th request to a path: an HTTP error status, a
dropped connection (socket closed with no reply), a stall, a reply that is not JSON, a model answer that is
not JSON, or the whole server going away (for a while, or for good) as a crashed or restarting Ollama does.
The server binds 127.0.0.1 on a free port, serves from a daemon thread and has a
bounded lifetime: ``stop()`` (or leaving the ``with`` block) ends it, and so does ``max_lifetime_s``.

Example:
    >>> with OllamaAPIServer(provider, models=["gemma3:270m"]) as server:  # doctest: +SKIP
    ...     ollama.Client(host=server.host).list()
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ollama import ChatResponse, ListResponse

from rerankforge.errors import LLMError
from rerankforge.llm.base import LLMProvider
from rerankforge.llm.ollama import LOGPROBS_SINCE

OLLAMA_VERSION = LOGPROBS_SINCE  # the version the provider's log-probabilities need, as the docs name it
DEFAULT_NUM_PREDICT = 128  # Ollama's default is -1 (until the model stops); a test server stays bounded
MAX_NUM_PREDICT = 512


@dataclass
class Fault:
    """One injected fault, applied to the next request whose path matches (any path when ``path`` is None)."""

    kind: str  # "status" | "drop" | "stall" | "garbage" | "nonsense" | "away"
    status: int = 500
    error: str = "injected failure"
    text: str = "I would say the passage is quite relevant."  # "nonsense": the model's answer, not the JSON asked
    seconds: float | None = 0.0  # "away": None means the server does not come back
    path: str | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any
    fault: str | None = None  # the fault applied to it, if any
    answered: int | None = None  # the HTTP status sent, None when no reply went out
    received_at: float = field(default_factory=time.monotonic)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def canonical_model_name(name: str) -> str:
    """Ollama's rule: a name without a tag means ``:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Ollama (Go net/http) does
    timeout = 30  # an idle keep-alive connection ends after this

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep pytest output clean

    # --- plumbing -------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes, content_type: str = "application/json; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _send_json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode("utf-8"))

    def _client_gone(self) -> bool:
        """True when the client closed its end (e.g. after a read timeout): do not compute an answer."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        raw = self._read_body() if method == "POST" else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        record = RecordedRequest(method, path, body)
        self.server.owner._record(record)
        fault = self.server.owner._take_fault(path)
        if fault is not None:
            record.fault = fault.kind
            if fault.kind == "drop":
                self._drop()
                return
            if fault.kind == "status":
                record.answered = fault.status
                self._send_json(fault.status, {"error": fault.error})
                return
            if fault.kind == "garbage":  # a reply cut short: not JSON at all
                record.answered = 200
                self._send(200, b'{"model": "x", "message": {"role": "assist')
                return
            if fault.kind == "away":
                self.server.owner._go_away(fault.seconds)  # cuts this connection too
                return
            if fault.kind == "stall":
                if self.server.owner._stopped.wait(fault.seconds or 0.0) or self._client_gone():
                    self._drop()
                    return
        status, payload, content_type = self.server.owner._route(method, path, body)
        if fault is not None and fault.kind == "nonsense" and status == 200:  # the model answers in prose
            reply = json.loads(payload)
            reply["message"]["content"] = fault.text
            payload = json.dumps(reply).encode()
        if status is None:  # the server stopped while the model was busy
            self._drop()
            return
        record.answered = status
        self._send(status, payload, content_type)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: OllamaAPIServer, port: int = 0) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open keep-alive connection, so no handler thread outlives the server."""
        with self._connections_lock:
            live = list(self._connections)
        for conn in live:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class OllamaAPIServer:
    """An Ollama-compatible HTTP server on 127.0.0.1, backed by a real :class:`LLMProvider`.

    Args:
        provider: the model that answers ``/api/chat`` for every served name.
        models: the names ``/api/tags`` lists (an untagged name means ``:latest``, as in Ollama).
        max_lifetime_s: the server stops by itself after this long, whatever the test does.
    """

    def __init__(
        self,
        provider: LLMProvider,
        models: Iterable[str] = ("gemma3:270m",),
        *,
        max_lifetime_s: float = 300.0,
        version: str = OLLAMA_VERSION,
    ) -> None:
        self.provider = provider
        self.models = [canonical_model_name(m) for m in models]
        self.max_lifetime_s = max_lifetime_s
        self.version = version
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0  # chat requests the model is answering now
        self.max_in_flight = 0  # the most it answered at once
        self._faults: deque[Fault] = deque()
        self._scheduled: dict[tuple[str, int], Fault] = {}
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._gone_for_good = threading.Event()  # set by __exit__: a server that is away stays away
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._deadline: threading.Timer | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, port: int = 0) -> OllamaAPIServer:
        """Serve on ``port`` (0: a free one); a stopped server can start again on its old port."""
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        self._stopped.clear()
        self._httpd = _Server(self, port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="ollama-api-server", daemon=True
        )
        self._thread.start()
        self._deadline = threading.Timer(self.max_lifetime_s, self.stop)
        self._deadline.daemon = True
        self._deadline.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and free the port; safe to call twice."""
        self._stopped.set()
        with self._lock:
            httpd, self._httpd = self._httpd, None
            deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline is not threading.current_thread():
            deadline.cancel()
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OllamaAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self._gone_for_good.set()
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        """The URL to give ``ollama.Client(host=...)`` or ``OLLAMA_HOST``."""
        return f"http://127.0.0.1:{self.port}"

    # --- fault injection --------------------------------------------------------------------------

    def fail_next(
        self, n: int = 1, *, status: int = 500, error: str = "injected failure", path: str | None = None
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` and ``{"error": error}``."""
        self._add_faults(n, Fault("status", status=status, error=error, path=path))

    def drop_next(self, n: int = 1, *, path: str | None = None) -> None:
        """Read the next ``n`` matching requests, then close the socket without any reply."""
        self._add_faults(n, Fault("drop", path=path))

    def garbage_next(self, n: int = 1, *, text: str = "I cannot help with that.", path: str | None = None) -> None:
        """Answer the next ``n`` matching requests 200 with ``text`` as the model's message (not the JSON asked)."""
        self._add_faults(n, Fault("nonsense", text=text, path=path))

    def stall_next(self, n: int = 1, *, seconds: float, path: str | None = None) -> None:
        """Wait ``seconds`` before handling the next ``n`` matching requests (skipped if the client left)."""
        self._add_faults(n, Fault("stall", seconds=seconds, path=path))

    def fault_at(self, n: int, kind: str, *, path: str = "/api/chat", **details: Any) -> None:
        """Apply a fault of ``kind`` to the ``n``-th request (counted from 1) to ``path``.

        ``kind`` is one of the :class:`Fault` kinds; for ``"away"``, ``seconds`` is how long the server is
        gone before it listens again on the same port (``None``: it stays gone).
        """
        with self._lock:
            self._scheduled[(path, n)] = Fault(kind, path=path, **details)

    def _go_away(self, seconds: float | None) -> None:
        """Stop listening now (connections are refused); come back on the same port after ``seconds``."""
        port = self.port
        self.stop()
        if seconds is None:
            return

        def come_back() -> None:
            if not self._gone_for_good.wait(seconds):
                self.start(port)

        threading.Thread(target=come_back, name="ollama-api-server-restart", daemon=True).start()

    def _add_faults(self, n: int, fault: Fault) -> None:
        with self._lock:
            self._faults.extend(Fault(**fault.__dict__) for _ in range(n))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            self._seen[path] = self._seen.get(path, 0) + 1
            scheduled = self._scheduled.pop((path, self._seen[path]), None)
            if scheduled is not None:
                return scheduled
            for fault in self._faults:
                if fault.path is None or fault.path == path:
                    self._faults.remove(fault)
                    return fault
        return None

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(record)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # --- the API --------------------------------------------------------------------------------

    def _route(self, method: str, path: str, body: Any) -> tuple[int | None, bytes, str]:
        text_type = "text/plain; charset=utf-8"
        json_type = "application/json; charset=utf-8"
        routes = {
            "/": ("GET", "HEAD"),
            "/api/version": ("GET", "HEAD"),
            "/api/tags": ("GET", "HEAD"),
            "/api/chat": ("POST",),
        }
        if path not in routes:
            return 404, b"404 page not found", text_type
        if method not in routes[path]:
            return 405, b"405 method not allowed", text_type
        if path == "/":
            return 200, b"Ollama is running", text_type
        if path == "/api/version":
            return 200, json.dumps({"version": self.version}).encode(), json_type
        if path == "/api/tags":
            tags = {"models": [self._model_entry(m) for m in self.models]}
            ListResponse.model_validate(tags)  # the shape the ollama client reads, or fail here
            return 200, json.dumps(tags).encode(), json_type
        return self._chat(body)

    def _model_entry(self, name: str) -> dict[str, Any]:
        family = name.split(":", 1)[0].split("/")[-1]
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-06-01T12:00:00.000000000Z",
            "size": 253_000_000,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": family,
                "families": [family],
                "parameter_size": "268.10M",
                "quantization_level": "Q4_K_M",
            },
        }

    def _chat(self, body: Any) -> tuple[int | None, bytes, str]:
        json_type = "application/json; charset=utf-8"

        def error(status: int, message: str) -> tuple[int, bytes, str]:
            return status, json.dumps({"error": message}).encode(), json_type

        if not isinstance(body, dict):
            return error(400, "invalid request body: expected a JSON object")
        model = body.get("model")
        if not model:
            return error(400, "model is required")
        if canonical_model_name(model) not in self.models:
            return error(404, f"model '{model}' not found")
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            return error(400, "invalid message format")
        chat = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in messages]
        fmt = body.get("format")
        if isinstance(fmt, dict):
            schema: dict[str, Any] = fmt
        elif fmt == "json":
            schema = {"type": "object"}
        elif fmt in (None, ""):
            schema = {}  # this test server always constrains to JSON: "any JSON value" when no format is given
        else:
            return error(400, f"invalid format: {fmt!r}")
        options = body.get("options") or {}
        num_predict = int(options.get("num_predict") or DEFAULT_NUM_PREDICT)
        num_predict = MAX_NUM_PREDICT if num_predict < 0 else min(num_predict, MAX_NUM_PREDICT)
        request: dict[str, Any] = {k: options[k] for k in ("temperature", "seed") if k in options}
        if body.get("logprobs"):
            request["top_logprobs"] = int(body.get("top_logprobs") or 1)
        started = time.perf_counter_ns()
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self.provider.chat_json(chat, schema, max_tokens=num_predict, **request)
        except LLMError as exc:
            return error(500, str(exc))
        finally:
            with self._lock:
                self.in_flight -= 1
        if self._stopped.is_set():
            return None, b"", json_type
        total = time.perf_counter_ns() - started
        final = {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": reply.text},
            "done": True,
            "done_reason": "length" if reply.output_tokens >= num_predict else "stop",
            "total_duration": total,
            "load_duration": 0,
            "prompt_eval_count": reply.prompt_tokens,
            "prompt_eval_duration": total // 4,
            "eval_count": reply.output_tokens,
            "eval_duration": total - total // 4,
        }
        if reply.logprobs is not None:  # Ollama's shape: the generated token, its logprob, the top alternatives
            final["logprobs"] = [
                {
                    "token": t["token"],
                    "logprob": t["top"][t["token"]],
                    "top_logprobs": [{"token": k, "logprob": v} for k, v in t["top"].items()],
                }
                for t in reply.logprobs
            ]
        # every answer is read by the ollama client's own response model first: a field it requires that is
        # missing, or one of the wrong type, fails here instead of passing a provider test
        ChatResponse.model_validate(final)
        if body.get("stream", True) is False:
            return 200, json.dumps(final).encode(), json_type
        # Ollama streams NDJSON by default: content chunks, then a final chunk with the counts.
        chunk = {"model": model, "created_at": final["created_at"], "message": final["message"], "done": False}
        last = {**final, "message": {"role": "assistant", "content": ""}}
        ChatResponse.model_validate(chunk)
        lines = json.dumps(chunk) + "\n" + json.dumps(last) + "\n"
        return 200, lines.encode(), "application/x-ndjson"
