"""What `dstack run` says about the local changes it uploads, and the question it asks.

Before the git bundle of a commit goes to the server (a commit no remote the server clones
holds, once per commit): one line, its size. Before the diff of changed and untracked files:
one summary line (files, size). Above `DSTACK_UPLOAD_CONFIRM_SIZE` (10 MB) the biggest files
are named and, on a terminal, the user is asked (`--yes` skips the question); without a
terminal the upload goes on, the summary printed, as `docker build` sends its context: a
script or CI job is not stopped by a question nobody can answer. Progress shows on a
terminal while it goes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from dstack.cli.render import transfer_columns
from dstack.errors import DstackError
from dstack.models.sizes import format_bytes
from dstack.repo.changes import summarize_diff
from dstack.repo.dstackignore import IGNORE_FILE

BIGGEST_SHOWN = 5
PROGRESS_FROM = 1_000_000
"""Smaller uploads end before a progress bar would be read."""


def size_text(size: int) -> str:
    """IEC units, as every size dstack shows (`dstack.models.sizes`): `12.3 MiB`."""
    return format_bytes(size)


class UploadPrompt:
    """`UploadHooks` for a terminal (or not): the summary, the question, the progress."""

    def __init__(self, *, threshold: int, yes: bool, interactive: bool | None = None) -> None:
        self.threshold = threshold
        self.yes = yes
        self.interactive = _is_terminal() if interactive is None else interactive

    @contextmanager
    def uploading(self, diff: bytes) -> Iterator[Callable[[int], None] | None]:
        summary = summarize_diff(diff)
        count = len(summary.files)
        files = f"{count} file{'s' if count != 1 else ''}"
        click.echo(
            f"Uploading local changes: {files}, {size_text(summary.size)}"
            f" (changed and untracked files; {IGNORE_FILE} leaves files out)",
            err=True,
        )
        if summary.size > self.threshold:
            for path, size in summary.files[:BIGGEST_SHOWN]:
                click.echo(f"  {size_text(size):>10}  {path}", err=True)
            if count > BIGGEST_SHOWN:
                click.echo(f"  {'':>10}  and {count - BIGGEST_SHOWN} more", err=True)
            if self.interactive and not self.yes:
                self._ask(summary.size)
        with self._progress_of(summary.size) as advance:
            yield advance

    @contextmanager
    def sending_commit(self, commit: str, size: int) -> Iterator[Callable[[int], None] | None]:
        """A commit no remote the server clones holds travels as a git bundle: said with its
        size, and with progress on a terminal. Not asked about: the run needs it."""
        click.echo(
            f"Uploading commit {commit[:12]}: a git bundle, {size_text(size)} (once per commit;"
            " after `dstack init`, runners clone a pushed commit instead)",
            err=True,
        )
        with self._progress_of(size) as advance:
            yield advance

    @contextmanager
    def _progress_of(self, size: int) -> Iterator[Callable[[int], None] | None]:
        if not self.interactive or size < PROGRESS_FROM:
            yield None
            return
        with _progress(size) as advance:
            yield advance

    def _ask(self, size: int) -> None:
        question = f"Upload {size_text(size)}? (over {size_text(self.threshold)})"
        if not click.confirm(question, default=False, err=True):
            raise DstackError(
                "nothing was uploaded or submitted",
                hint=f"list files to leave out in {IGNORE_FILE} (gitignore syntax), or pass"
                " --yes to upload without asking",
            )


def _is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A transient progress bar on stderr (rich is imported only for it)."""
    # rich.console and rich.progress: ~55 ms only an upload's bar needs
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    columns = (TextColumn("uploading"), BarColumn(), *transfer_columns())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("upload", total=total)
        yield lambda sent: progress.advance(task, sent)
