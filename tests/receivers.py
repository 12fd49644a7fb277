"""Real local notification receivers for tests: an HTTP webhook that can be told to fail."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Collects JSON POSTs. `failures_left` makes the next N requests answer 500."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures_left = 0
        self.attempts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.attempts += 1
                    failing = receiver.failures_left > 0
                    if failing:
                        receiver.failures_left -= 1
                    else:
                        receiver.received.append(json.loads(body or b"{}"))
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def apprise_url(self) -> str:
        return f"json://127.0.0.1:{self._server.server_address[1]}/hook"

    def titles(self) -> list[str]:
        with self._lock:
            return [r.get("title", "") for r in self.received]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
