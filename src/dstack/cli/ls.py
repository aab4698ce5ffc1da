"""`dstack ls (RUN | :TAG) [-r] [--total] [--json] [PREFIX]`"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from dstack.cli.artifacts import artifact_key, run_artifacts
from dstack.cli.context import client_for, remote_option
from dstack.cli.render import console, size, table
from dstack.errors import ConfigError

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.artifacts import JobArtifacts


def artifact_files(artifacts: list[JobArtifacts]) -> list[tuple[str, int]]:
    """Every stored file as (`<artifact path>/<file>`, size), sorted by path."""
    files: list[tuple[str, int]] = []
    for job in artifacts:
        for manifest in job.manifests:
            root = artifact_key(manifest.path)
            for entry in manifest.files:
                full = "/".join(part for part in (root, entry.path) if part)
                files.append((full, entry.size))
    return sorted(files)


def listing(files: list[tuple[str, int]], prefix: str, recursive: bool) -> list[tuple[str, int]]:
    """Like `ls PREFIX`: the entries right under it (folders with a `/` and their total size),
    or, with `recursive`, every file under it."""
    prefix = artifact_key(prefix)
    under = [
        (path, n)
        for path, n in files
        if not prefix or path == prefix or path.startswith(prefix + "/")
    ]
    if recursive:
        return under
    rows: dict[str, int] = {}
    for path, n in under:
        rest = path[len(prefix) :].lstrip("/") if prefix else path
        head, sep, _ = rest.partition("/")
        name = f"{prefix}/{head}" if prefix and rest else (head or path)
        key = name + "/" if sep else name
        rows[key] = rows.get(key, 0) + n
    return sorted(rows.items())


def _entry(path: str, n: int) -> dict[str, str | int]:
    """`{"path": "lightning_logs", "type": "dir", "size": 1024}` (`type`: `dir` or `file`)."""
    folder = path.endswith("/")
    return {"path": path.rstrip("/"), "type": "dir" if folder else "file", "size": n}


def of_node(client: Client, ref: str, found: list[JobArtifacts], node: int) -> list[JobArtifacts]:
    """The artifacts node `node`'s jobs of run `ref` made or reused (a tag: the run it
    points to)."""
    run_name = found[0].run_name if ref.startswith(":") and found else ref
    run = client.get_run(run_name)
    if not any(job.spec.node_rank == node for job in run.jobs):
        nodes = max((job.spec.resources.nodes for job in run.jobs), default=1)
        raise ConfigError(
            f"run '{run.name}' has no node {node}",
            hint=f"its nodes are 0..{nodes - 1}" if nodes > 1 else "it runs on one node: 0",
        )
    return [a for a in found if a.node_rank == node]


@click.command()
@remote_option
@click.argument("ref", metavar="RUN|:TAG")
@click.argument("prefix", required=False, default="")
@click.option("-r", "--recursive", is_flag=True, help="List every file, not only the top level.")
@click.option("--total", is_flag=True, help="Print the total size at the end.")
@click.option(
    "--node",
    type=click.IntRange(min=0),
    default=None,
    help="Of a multi-node run: only the artifacts of this node (0: the primary). Default: "
    "every node's, merged.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of {path, type, size}.")
def ls(
    ref: str,
    prefix: str,
    recursive: bool,
    total: bool,
    node: int | None,
    remote: str | None,
    as_json: bool,
) -> None:
    """List the artifacts of a run, or of the run a tag points to. Folders end with `/`;
    their size is the total of the files in them."""
    client = client_for(remote)
    found = run_artifacts(client, ref)
    if node is not None:
        found = of_node(client, ref, found, node)
    files = artifact_files(found)
    rows = listing(files, prefix, recursive)
    if as_json:
        click.echo(json.dumps([_entry(path, n) for path, n in rows], indent=2))
        return
    if not rows:
        click.echo(f"No artifacts{f' under {prefix}' if prefix else ''} in {ref}.")
        return
    t = table("PATH", "SIZE")
    t.columns[1].justify = "right"
    for path, n in rows:
        t.add_row(path, size(n))
    out = console()
    out.print(t)
    if total:
        out.print(f"total {size(sum(n for _, n in rows))} in {len(rows)} entries")
