"""`dstack runners [--json]`"""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runners(as_json: bool) -> None:
    """List the runners: host, resources, executors, status, jobs and last heartbeat."""
    from dstack.cli.context import local_client
    from dstack.cli.render import ago, console, table

    items = local_client().list_runners()
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in items], indent=2))
        return
    if not items:
        click.echo("No runners yet.")
        return
    t = table("NAME", "HOST", "RESOURCES", "EXECUTORS", "STATUS", "JOBS", "HEARTBEAT")
    for r in items:
        t.add_row(
            r.name,
            r.host,
            r.resources.describe(),
            ", ".join(r.executors),
            r.status.value,
            str(len(r.running_jobs)),
            ago(r.last_heartbeat),
        )
    console().print(t)
