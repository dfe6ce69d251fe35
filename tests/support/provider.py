"""A stand-in for an external provider, for tests of the lease path: an HTTP server on
127.0.0.1 that records every request's Idempotency-Key and answers after a delay.

The delay is the request's `sleep_ms`, unless the test sets `delay` (seconds): an event's
payload cannot change between attempts, so a test that wants the first attempt to hang and
the second to be quick changes the provider instead. Sleeping threads wake when the provider
closes, so a hung request never outlives its test.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast


class Provider:
    def __init__(self) -> None:
        self.delay: float | None = None
        self._keys: list[str] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.provider = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/send"

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request so far, in arrival order."""
        with self._lock:
            return list(self._keys)

    def __enter__(self) -> Provider:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def serve(self, key: str, body: dict[str, Any]) -> None:
        """One request: record its key, then take the delay (cut short by close)."""
        with self._lock:
            self._keys.append(key)
            delay = self.delay
        self._closing.wait(delay if delay is not None else body.get("sleep_ms", 0) / 1000)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    provider: Provider


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        provider = cast(_Server, self.server).provider
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        provider.serve(self.headers.get("Idempotency-Key", ""), body)
        answer = b'{"ok": true}'
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:
            pass  # the caller hung up: killed, cancelled or timed out

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test asserts on keys(), not on an access log
