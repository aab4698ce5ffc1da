"""Shared by the artifact commands: the run a `RUN | :TAG` names here, and progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dstack.api.artifacts import run_artifacts as artifacts_of
from dstack.cli.render import console, transfer_columns
from dstack.cli.scope import tags_repo_id
from dstack.models.paths import PathError, normalize_declared

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.artifacts import JobArtifacts


def run_artifacts(client: Client, ref: str) -> list[JobArtifacts]:
    """The artifacts of run `ref`; `:TAG` is a tag of the current repository
    (`api.artifacts.run_artifacts`)."""
    return artifacts_of(client, ref, tags_repo=tags_repo_id)


def artifact_key(path: str) -> str:
    """An artifact's name as `ls`, `cp` and `pull` show and match it, however the workflow
    or the command line wrote it: normalized, without a leading `./` or `/` or a trailing
    `/`, and "" for the working directory itself (`lightning_logs/`, `./lightning_logs` and
    `lightning_logs` are all `lightning_logs`; `/out` is `out`)."""
    try:
        normal = normalize_declared(path)
    except PathError:
        return path.strip("/")  # matches nothing a valid manifest holds
    return "" if normal == "." else normal.lstrip("/")


@contextmanager
def progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for transfers over 64 MiB when stderr is a terminal;
    otherwise nothing is drawn (a bar's refresh thread would take CPU from the copy)."""
    if total < 64 << 20:
        yield lambda _: None
        return
    err = console(stderr=True)
    if not err.is_terminal:
        yield lambda _: None
        return
    # Imported here: rich's progress bar (about 30 ms) only for a large copy on a terminal.
    from rich.progress import BarColumn, Progress

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        *transfer_columns(),
        console=err,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
