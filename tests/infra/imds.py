"""A fake instance metadata service (EC2's IMDSv2 subset that runners read) on loopback.

`PUT /latest/api/token` (with `X-aws-ec2-metadata-token-ttl-seconds`) hands out a token;
`GET /latest/meta-data/spot/instance-action` with a valid token answers 404 until a test
posts a notice (`post_notice`), then 200 with its JSON. Without a token (or with a wrong
one) the GET answers 401, as IMDSv2 does when tokens are required. `down()` makes it refuse
connections; `up()` serves again on the same port.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_PATH = "/latest/api/token"
ACTION_PATH = "/latest/meta-data/spot/instance-action"


@dataclass
class FakeImds:
    host: str = "127.0.0.1"
    port: int = 0
    notice: dict[str, Any] | None = None
    tokens: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, bool]] = field(default_factory=list)
    """(method, path, had a valid token) of every request, in order."""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def up(self) -> FakeImds:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_PUT(self) -> None:
                imds._record("PUT", self.path, False)
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                if self.path != TOKEN_PATH or not ttl or not ttl.isdigit():
                    self._answer(400, b"")
                    return
                token = secrets.token_urlsafe(16)
                with imds._lock:
                    imds.tokens.add(token)
                self._answer(200, token.encode())

            def do_GET(self) -> None:
                token = self.headers.get("X-aws-ec2-metadata-token")
                valid = token is not None and token in imds.tokens
                imds._record("GET", self.path, valid)
                if not valid:
                    self._answer(401, b"")
                elif self.path != ACTION_PATH or imds.notice is None:
                    self._answer(404, b"Not Found")
                else:
                    self._answer(200, json.dumps(imds.notice).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def post_notice(self, action: str = "terminate", time: str = "2026-12-07T04:30:00Z") -> None:
        self.notice = {"action": action, "time": time}

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def _record(self, method: str, path: str, valid: bool) -> None:
        with self._lock:
            self.requests.append((method, path, valid))
