"""A git server over HTTP that wants a token: `git http-backend` (smart HTTP) behind a small
`http.server` in a thread, or the bare files ("dumb" HTTP, which cannot serve a commit by its
hash). Tests of cloning point runners at it."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

BACKEND = "/usr/lib/git-core/git-http-backend"


@dataclass
class GitHttp:
    """Serves the bare repositories under `root`; every request needs `token` (Basic with any
    user, or Bearer). `seen` records (method, path, authorized) per request."""

    root: Path
    token: str
    smart: bool = True
    seen: list[tuple[str, str, bool]] = field(default_factory=list)
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() == self.token
        if scheme.lower() == "basic":
            try:
                _, _, secret = base64.b64decode(value.strip()).decode().partition(":")
            except ValueError:
                return False
            return secret == self.token
        return False


def bare_repo_from(work: Path, target: Path) -> Path:
    """A bare copy of the repository `work`, ready to be served both ways."""
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(target)], check=True)
    git = ["git", "-C", str(target)]
    subprocess.run([*git, "config", "http.receivepack", "true"], check=True)
    subprocess.run([*git, "config", "uploadpack.allowAnySHA1InWant", "true"], check=True)
    subprocess.run([*git, "update-server-info"], check=True)
    return target


def push_to(work: Path, bare: Path, branch: str = "main") -> None:
    """`git push` from `work` into `bare` over the file system (the test's "upstream")."""
    subprocess.run(["git", "-C", str(work), "push", "-q", str(bare), branch], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)


@contextmanager
def serving(server: GitHttp) -> Iterator[GitHttp]:
    handler = type("Handler", (_Handler,), {"git": server})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    git: GitHttp
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        ok = self.git.authorized(self.headers.get("Authorization", ""))
        self.git.seen.append((self.command, self.path, ok))
        if not ok:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.git.smart:
            self._backend()
        else:
            self._file()

    def _file(self) -> None:
        parts = urlsplit(self.path)  # a dumb server ignores `?service=`: git then falls back
        path = (self.git.root / unquote(parts.path).lstrip("/")).resolve()
        if not path.is_file() or self.git.root.resolve() not in path.parents:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _backend(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = dict(
            os.environ,
            GIT_PROJECT_ROOT=str(self.git.root),
            GIT_HTTP_EXPORT_ALL="1",
            REQUEST_METHOD=self.command,
            PATH_INFO=unquote(parts.path),
            QUERY_STRING=parts.query,
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
            CONTENT_LENGTH=str(len(body)),
            REMOTE_USER="user",
            REMOTE_ADDR="127.0.0.1",
            GIT_PROTOCOL=self.headers.get("Git-Protocol", ""),
            HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""),
        )
        done = subprocess.run([BACKEND], input=body, env=env, capture_output=True, check=False)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode(errors="replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
