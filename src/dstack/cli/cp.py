"""`dstack cp (RUN | :TAG) SOURCE TARGET`"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from dstack.api.artifacts import download
from dstack.cli.artifacts import artifact_key, progress, run_artifacts
from dstack.cli.context import client_for, remote_option
from dstack.cli.render import size
from dstack.errors import NotFoundError
from dstack.models.artifacts import FileEntry, Manifest

if TYPE_CHECKING:
    from dstack.models.artifacts import JobArtifacts


def select(artifacts: list[JobArtifacts], source: str) -> tuple[Manifest, bool]:
    """The files under `source` (an artifact path, or a folder or file inside one), with
    paths relative to `source`, and whether `source` is a single file."""
    wanted = artifact_key(source)
    entries: list[FileEntry] = []
    single = False
    for job in artifacts:
        for manifest in job.manifests:
            root = artifact_key(manifest.path)
            for entry in manifest.files:
                full = "/".join(part for part in (root, entry.path) if part)
                if full == wanted:
                    entries.append(entry.model_copy(update={"path": ""}))
                    single = True
                elif not wanted or full.startswith(wanted + "/"):
                    rel = full[len(wanted) :].lstrip("/")
                    entries.append(entry.model_copy(update={"path": rel}))
    if not entries:
        raise NotFoundError(f"no artifact file or folder '{source}'", hint="see `dstack ls RUN -r`")
    # Not validated here: `place` checks every entry path again before writing anything.
    return Manifest.model_construct(path=source, files=entries), single


@click.command()
@remote_option
@click.argument("ref", metavar="RUN|:TAG")
@click.argument("source")
@click.argument("target", type=click.Path(path_type=Path))
def cp(ref: str, source: str, target: Path, remote: str | None) -> None:
    """Copy an artifact (or a file or folder inside one) out of a run to TARGET."""
    client = client_for(remote)
    manifest, single = select(run_artifacts(client, ref), source)
    if single and target.is_dir():
        target = target / Path(source).name
    if single:
        # `place` writes entries under a root: a single file's entry path is "".
        target.parent.mkdir(parents=True, exist_ok=True)
    with progress(manifest.size, f"copying {source}") as advance:
        stats = download(client, manifest, target, progress=advance)
    click.echo(f"Copied {stats.files} file(s), {size(manifest.size)}, to {target}")
