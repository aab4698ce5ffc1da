"""At a terminal, `dstack run` shows what it waits for with a spinner, rewritten in place;
piped, it prints one static line per change instead (and no control characters)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from dstack.cli.spinner import FRAMES

if TYPE_CHECKING:
    from tests.e2e.conftest import Env

WORKFLOWS = """
workflows:
  - name: prepare
    provider: bash
    commands: [sleep 3, echo prepared]
  - name: train
    provider: bash
    deps:
      - workflow: prepare
    commands: [echo trained]
"""
WAITING = "train: pending (waiting for dependencies) — waiting for prepare to finish"


def _run_at_a_terminal(env: Env, *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run `dstack ARGS` with stdin, stdout and stderr on a pseudo-terminal; its exit code
    and everything it wrote there."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstack", *args],
        cwd=env.repo,
        env={**env.environ(), "COLUMNS": "200"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal closed: every writer is gone
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_waiting_is_a_spinner_at_a_terminal_and_a_line_when_piped(process_env: Env) -> None:
    env = process_env
    env.workflows(WORKFLOWS)
    env.commit()

    code, shown = _run_at_a_terminal(env, "run", "train")
    piped = env.dstack("run", "train")

    assert code == 0, shown
    assert "prepared" in shown
    assert "trained" in shown
    frames = [frame for frame in FRAMES if f"{frame} {WAITING}" in shown]
    assert frames, shown  # the waiting line, drawn with spinner frames
    assert "\r\x1b[2K" in shown  # and erased in place
    assert f"{WAITING}\r\n" not in shown  # not left as a line of its own
    assert piped.code == 0, piped
    assert f"{WAITING}\n" in piped.err.splitlines(keepends=True)
    assert not any(frame in piped.err for frame in FRAMES)
    assert "\x1b[2K" not in piped.err


def test_waiting_for_an_app_is_a_spinner_at_a_terminal_then_its_url(process_env: Env) -> None:
    from tests.e2e.test_run_path import Terminal

    env = process_env
    env.workflows(
        """
        workflows:
          - name: files
            provider: bash
            ports: 1
            commands:
              - sleep 3
              - python -m http.server $PORT_0 --bind 127.0.0.1
        """
    )
    env.commit()
    term = Terminal(env, "run", "files")
    term.expect(r"app 'files': http://127\.0\.0\.1:\d+/\n")
    term.send("\x03")
    term.expect(r"\[y/N\]")
    term.send("y\n")
    term.finish()

    shown = term.output.decode(errors="replace")
    waiting = re.search(r"waiting for app 'files' on port \d+…", shown)
    assert waiting, shown
    frames = [frame for frame in FRAMES if f"{frame} {waiting.group(0)}" in shown]
    assert len(frames) > 1, shown  # drawn again and again while it waits
    assert f"{waiting.group(0)}\r\n" not in shown  # erased, not left as a line
