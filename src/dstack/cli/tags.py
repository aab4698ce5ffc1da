"""`dstack tags list | add TAG (RUN | -a PATH...) | delete [-y] TAG`"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.repo import RepoRef
    from dstack.models.run import Run


@click.group()
def tags() -> None:
    """Name successful runs (or local folders) so workflows can depend on them: `deps: - tag: T`."""


@tags.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_tags(as_json: bool) -> None:
    """The tags, newest first."""
    from dstack.cli.context import local_client
    from dstack.cli.render import ago, console, size, table

    items = local_client().list_tags()
    if as_json:
        click.echo(json.dumps([t.model_dump(mode="json") for t in items], indent=2))
        return
    if not items:
        click.echo("No tags yet. Tag a run with `dstack tags add TAG RUN`.")
        return
    t = table("TAG", "RUN", "WORKFLOW", "SIZE", "CREATED")
    for tag in items:
        t.add_row(
            tag.name, tag.run_name, tag.workflow_name or "-", size(tag.size), ago(tag.created_at)
        )
    console().print(t)


@tags.command("add")
@click.argument("tag")
@click.argument("run_name", metavar="[RUN]", required=False)
@click.option(
    "-a",
    "--artifact",
    "paths",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="Upload this local file or folder as an artifact of the tag (repeatable).",
)
def add_tag(tag: str, run_name: str | None, paths: tuple[Path, ...]) -> None:
    """Tag a successful RUN, or upload local folders (-a) as a new tagged run."""
    from dstack.cli.context import local_client
    from dstack.errors import ConfigError

    if bool(run_name) == bool(paths):
        raise ConfigError(
            "name a run or pass -a PATH, not both",
            hint="dstack tags add TAG RUN | dstack tags add TAG -a data -a model",
        )
    client = local_client()
    if run_name:
        client.add_tag(tag, run_name)
        click.echo(f"Tagged {run_name} as {tag}")
        return
    run = _upload(client, tag, list(paths))
    click.echo(f"Uploaded {len(paths)} path(s) as run {run.name}, tagged {tag}")


def _upload(client: Client, tag: str, paths: list[Path]) -> Run:
    from dstack.cli.artifacts import blob_store, progress
    from dstack.models.protocol import UploadRunRequest
    from dstack.storage.manifests import scan
    from dstack.storage.transfer import push

    cwd = Path.cwd()
    manifests = [scan(p.resolve(), _declared(p, cwd), base=cwd) for p in paths]
    store = blob_store()
    total = sum(m.size for m in manifests)
    with progress(total, f"uploading {tag}") as advance:
        for path, manifest in zip(paths, manifests, strict=True):
            push(manifest, path.resolve(), store, progress=advance)
    return client.upload_run(UploadRunRequest(tag=tag, repo=_repo_ref(cwd), manifests=manifests))


def _declared(path: Path, cwd: Path) -> str:
    """The artifact path jobs will see: relative to the current folder when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(cwd).as_posix()
    except ValueError:
        return resolved.name


def _repo_ref(cwd: Path) -> RepoRef:
    from dstack.errors import RepoError
    from dstack.models.repo import RepoRef
    from dstack.repo.git import EMPTY_TREE, find_repo_root, read_repo_state

    try:
        state = read_repo_state(find_repo_root(cwd))
    except RepoError:
        return RepoRef(repo_id="local:uploads", tree=EMPTY_TREE)
    return RepoRef(repo_id=state.repo_id, tree=state.tree, commit=state.commit)


@tags.command("delete")
@click.argument("tag")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_tag(tag: str, yes: bool) -> None:
    """Delete a tag (the run stays)."""
    from dstack.cli.context import local_client

    if not yes:
        click.confirm(f"Delete the tag {tag}?", abort=True)
    local_client().delete_tag(tag)
    click.echo(f"Deleted the tag {tag}")
