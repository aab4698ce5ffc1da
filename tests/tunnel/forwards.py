"""Client-side helpers: a `PortForwards` whose events a test can wait for, socket checks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dstack.tunnel.client import ForwardTarget, PortForwards


class Events:
    """`on_event` lines, collected from the forwarding thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """The first line containing `text`; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if text in line]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                assert left > 0, f"no event containing {text!r}; got {self.lines}"
                self._cond.wait(left)


@contextmanager
def forwarding(
    url: str, token: str, run_name: str, *targets: ForwardTarget
) -> Iterator[tuple[dict[ForwardTarget, int], Events]]:
    events = Events()
    forwards = PortForwards(url, token, run_name, list(targets), on_event=events)
    ports = forwards.start()
    try:
        yield ports, events
    finally:
        forwards.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def assert_closed(sock: socket.socket) -> None:
    """The far end closed `sock` (EOF or reset) — it does not hang."""
    try:
        while data := sock.recv(65536):
            assert len(data) < 0, f"unexpected data {data[:50]!r}"
    except ConnectionResetError:
        pass


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 65536))
        assert chunk, "the connection closed early"
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
