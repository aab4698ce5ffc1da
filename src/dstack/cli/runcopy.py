"""Copying a finished run between two servers: `dstack push` and `dstack pull`.

Blobs first (only those the target lacks, so an interrupted copy resumes where it stopped),
then the run record with its manifests, then the tag. Every step is idempotent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.artifacts import JobArtifacts
    from dstack.models.run import Run
    from dstack.storage.base import BlobStore


@dataclass(frozen=True)
class Side:
    """One end of a copy: the server's client and its blob store."""

    client: Client
    blobs: BlobStore


@dataclass(frozen=True)
class CopyResult:
    run: Run
    copied: int
    present: int
    bytes_copied: int


def copy_run(
    source: Side,
    target: Side,
    ref: str,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> CopyResult:
    """Copy the run `ref` names (`RUN` or `:TAG`) from `source` to `target`; for `:TAG` the
    tag is created on the target too. `on_progress(total_bytes, 0)` is called once, then
    `on_progress(0, n)` per copied blob of n bytes."""
    from dstack.cli.artifacts import resolve_run
    from dstack.models.protocol import ImportRunRequest
    from dstack.storage.base import missing_of

    name = resolve_run(source.client, ref)
    run = source.client.get_run(name)
    artifacts = keyed_by_job(run, source.client.get_artifacts(name))
    sizes = {f.digest: f.size for a in artifacts for m in a.manifests for f in m.files}
    missing = missing_of(target.blobs, sorted(sizes))
    report = on_progress or (lambda _total, _n: None)
    report(sum(sizes[d] for d in missing), 0)
    for digest in missing:
        copy_blob(source.blobs, target.blobs, digest)
        report(0, sizes[digest])
    copied = target.client.import_run(ImportRunRequest(run=run, artifacts=artifacts))
    if ref.startswith(":"):
        _ensure_tag(target.client, ref[1:], copied)
    return CopyResult(
        run=copied,
        copied=len(missing),
        present=len(sizes) - len(missing),
        bytes_copied=sum(sizes[d] for d in missing),
    )


def copy_blob(source: BlobStore, target: BlobStore, digest: str) -> None:
    """Through a temporary file: blobs may be larger than memory; both ends verify it."""
    with tempfile.TemporaryDirectory(prefix="dstack-copy-") as tmp:
        path = Path(tmp) / digest
        source.get_file(digest, path)
        target.put_file(path, digest)


def keyed_by_job(run: Run, artifacts: list[JobArtifacts]) -> list[JobArtifacts]:
    """The run's artifacts keyed by its own job ids: a cached job's entry names the job it
    reused (another run), and the copy must attach the manifests to the job itself."""
    from dstack.models.artifacts import JobArtifacts

    pending = sorted(run.jobs, key=lambda j: j.index)
    result = []
    for item in artifacts:
        job = next(
            (
                j
                for j in pending
                if j.id == item.job_id
                or (j.reused_from == item.run_name and j.workflow_name == item.workflow_name)
            ),
            None,
        )
        if job is None:
            continue
        pending = pending[pending.index(job) + 1 :]
        result.append(
            JobArtifacts(
                job_id=job.id,
                run_name=run.name,
                workflow_name=job.workflow_name,
                manifests=item.manifests,
            )
        )
    return result


def _ensure_tag(client: Client, tag: str, run: Run) -> None:
    """Tag the copied run `tag` in its repository there (unless it is already)."""
    from dstack.errors import ConflictError

    run_name = run.name
    for existing in client.list_tags(repo_id=run.repo.repo_id):
        if existing.name == tag:
            if existing.run_name != run_name:
                raise ConflictError(
                    f"tag '{tag}' already names run {existing.run_name} there",
                    hint=f"delete it there first: dstack tags delete {tag}",
                )
            return
    client.add_tag(tag, run_name)


def run_copy_command(source: Side, target: Side, ref: str, verb: str) -> None:
    """Copy with a progress bar on stderr and one summary line."""
    import click

    from dstack.cli.render import size
    from dstack.errors import StorageError

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
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        from dstack.cli.render import console

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
                DownloadColumn(),
                TransferSpeedColumn(),
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
        from rich.progress import Progress

        if isinstance(self._progress, Progress):
            self._progress.stop()
