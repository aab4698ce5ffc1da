"""`dstack push` and `dstack pull` on a terminal: a progress bar on stderr while the copy
(`api.transfer.copy_run`) runs, one summary line at its end."""

from __future__ import annotations

from collections.abc import Callable

import click
from rich.progress import BarColumn, Progress

from dstack.api.transfer import CopyResult, Side
from dstack.api.transfer import copy_run as copy_between
from dstack.cli.render import console, size, transfer_columns
from dstack.cli.scope import tags_repo_id
from dstack.errors import StorageError


def copy_run(
    source: Side,
    target: Side,
    ref: str,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> CopyResult:
    """`api.transfer.copy_run`, where `:TAG` is a tag of the current repository."""
    return copy_between(source, target, ref, tags_repo=tags_repo_id, on_progress=on_progress)


def run_copy_command(source: Side, target: Side, ref: str, verb: str) -> None:
    """Copy with a progress bar on stderr and one summary line; `:TAG` is a tag of the
    current repository."""
    bar = _Bar(f"{verb} {ref}")
    try:
        result = copy_run(source, target, ref, on_progress=bar.update)
    except StorageError as exc:
        if exc.hint:
            raise
        command = {"pushed": "push", "pulled": "pull"}.get(verb, verb)
        again = f"run `dstack {command} {ref}` again when it is fixed: blobs already copied stay"
        raise StorageError(exc.message, hint=again) from exc
    finally:
        bar.close()
    click.echo(
        f"{verb.capitalize()} run {result.run.name}: {result.copied} blob(s) copied "
        f"({size(result.bytes_copied)}), {result.present} already there."
    )


class _Bar:
    """A rich progress bar, started when the total is known, and only on a terminal: rich
    leaves a blank line on a redirected stderr, ahead of any error printed after it."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._progress: object | None = None
        self._task: object | None = None
        self._off = False

    def update(self, total: int, advance: int) -> None:
        if self._off:
            return
        if self._progress is None:
            err = console(stderr=True)
            if not err.is_terminal:
                self._off = True
                return
            progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                *transfer_columns(),
                console=err,
                transient=True,
            )
            progress.start()
            self._task = progress.add_task(self._description, total=total)
            self._progress = progress
        assert isinstance(self._progress, Progress)
        if advance:
            self._progress.advance(self._task, advance)  # type: ignore[arg-type]

    def close(self) -> None:
        if isinstance(self._progress, Progress):
            self._progress.stop()
