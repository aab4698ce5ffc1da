"""A transient status line at a terminal: what an attached command waits for (a job to start,
an app to answer), with a spinner, rewritten in place and erased before any other output.

Only at a terminal: piped, the caller prints static lines instead (`Spinner.active` is False).
Whatever else writes to the terminal while the spinner shows must go through `paused` (or
`write`), which erases the line, writes, then draws it again below.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
INTERVAL = 0.1  # seconds between frames
_ERASE = "\r\x1b[2K"


class Spinner:
    """Keyed texts (one per thing waited for) shown joined on one line of `stream`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.active = stream.isatty()
        self._texts: dict[str, str] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False
        self._frame = 0
        # False after output that did not end its line: drawing would erase that line.
        self._at_line_start = True

    def set(self, key: str, text: str | None) -> None:
        """Show `text` for `key` (None: no longer waiting for it)."""
        if not self.active:
            return
        with self._lock:
            if text is None:
                self._texts.pop(key, None)
            else:
                self._texts[key] = text
            self._erase()
            self._draw()
        if self._texts:
            self._start()

    @contextmanager
    def paused(self, ends_line: bool | None = None) -> Iterator[None]:
        """Erase the line while the caller writes; draw it again after. `ends_line`: whether
        what was written ended its line (None: it did)."""
        with self._lock:
            self._erase()
            try:
                yield
            finally:
                if ends_line is not None:
                    self._at_line_start = ends_line
                self._draw()

    def write(self, line: str) -> None:
        """Write a whole line (with its newline) above the spinner."""
        with self.paused(ends_line=True):
            self.stream.write(line)
            self.stream.flush()

    def close(self) -> None:
        """Stop and erase; `set` starts it again."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._erase()
        self._stop.clear()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._spin, name="spinner", daemon=True)
                self._thread.start()

    def _spin(self) -> None:
        while not self._stop.wait(INTERVAL):
            with self._lock:
                self._frame += 1
                self._erase()
                self._draw()

    def _erase(self) -> None:
        if self._shown:
            self.stream.write(_ERASE)
            self.stream.flush()
            self._shown = False

    def _draw(self) -> None:
        if not self._texts or not self._at_line_start or self._stop.is_set():
            return
        frame = FRAMES[self._frame % len(FRAMES)]
        text = "; ".join(self._texts.values())
        width = shutil.get_terminal_size().columns - 3  # one line, or the erase misses some
        if len(text) > width:
            text = text[: max(width - 1, 0)] + "…"
        self.stream.write(f"{frame} {text}")
        self.stream.flush()
        self._shown = True
