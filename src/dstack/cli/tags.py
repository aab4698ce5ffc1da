"""`dstack tags list [--all-repos] | add TAG (RUN | -a PATH...) | delete [-y] TAG`

Tags belong to a repository: these commands work on the current one's (outside a git
repository, on the uploads made there), and a run's tag is in the run's repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from dstack.cli.artifacts import progress
from dstack.cli.context import client_for, confirm_or_stop, remote_option
from dstack.cli.render import ago, console, size, table
from dstack.cli.scope import UPLOADS_REPO, all_repos_option, tags_repo_id
from dstack.errors import ConfigError, RepoError
from dstack.models.names import check_name
from dstack.models.repo import RepoRef


@click.group()
def tags() -> None:
    """Name successful runs (or local folders) so workflows can depend on them: `deps: - tag: T`."""


@tags.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@all_repos_option
@remote_option
def list_tags(as_json: bool, all_repos: bool, remote: str | None) -> None:
    """The tags of the current repository, newest first."""
    items = client_for(remote).list_tags(repo_id=None if all_repos else tags_repo_id())
    if as_json:
        click.echo(json.dumps([t.model_dump(mode="json") for t in items], indent=2))
        return
    if not items:
        click.echo("No tags yet. Tag a run with `dstack tags add TAG RUN`.")
        return
    columns = ["TAG", "RUN", "WORKFLOW", "SIZE", "CREATED"]
    t = table(*columns, *(["REPOSITORY"] if all_repos else []))
    for tag in items:
        cells = [tag.name, tag.run_name, tag.workflow_name or "-", size(tag.size)]
        t.add_row(*cells, ago(tag.created_at), *([tag.repo_id] if all_repos else []))
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
@remote_option
def add_tag(tag: str, run_name: str | None, paths: tuple[Path, ...], remote: str | None) -> None:
    """Tag a successful RUN, or upload local folders (-a) as a new tagged run."""
    check_name(tag, "tag")
    if bool(run_name) == bool(paths):
        raise ConfigError(
            "name a run or pass -a PATH, not both",
            hint="dstack tags add TAG RUN | dstack tags add TAG -a data -a model",
        )
    client = client_for(remote)
    if run_name:
        client.add_tag(tag, run_name)
        click.echo(f"Tagged {run_name} as {tag}")
        return
    # Imported here, as git in `_repo_ref`: scanning and uploading files (about 60 ms)
    # only for `-a PATH`.
    from dstack.api.transfer import scan_uploads, upload_tagged

    cwd = Path.cwd()
    uploads = scan_uploads(list(paths), cwd)
    with progress(sum(u.manifest.size for u in uploads), f"uploading {tag}") as advance:
        run = upload_tagged(client, tag, uploads, _repo_ref(cwd), progress=advance)
    click.echo(f"Uploaded {len(paths)} path(s) as run {run.name}, tagged {tag}")


def _repo_ref(cwd: Path) -> RepoRef:
    """The repository the uploads belong to: the current one, else the uploads' own."""
    # See `add_tag`: git only for `-a PATH`.
    from dstack.repo.git import EMPTY_TREE, read_repo_state

    try:
        state = read_repo_state(cwd)
    except RepoError:
        return RepoRef(repo_id=UPLOADS_REPO, tree=EMPTY_TREE)
    return RepoRef(repo_id=state.repo_id, tree=state.tree, commit=state.commit)


@tags.command("delete")
@click.argument("tag")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@remote_option
def delete_tag(tag: str, yes: bool, remote: str | None) -> None:
    """Delete a tag of the current repository (the run stays)."""

    if not yes:
        confirm_or_stop(f"Delete the tag {tag}?")
    client_for(remote).delete_tag(tag, tags_repo_id())
    click.echo(f"Deleted the tag {tag}")
