"""`dstack runners [--json]` lists the runners; `dstack runners token` makes a registration
token; `dstack runners rm NAME` removes a runner."""

from __future__ import annotations

import json

import click

from dstack.cli.context import client_for, remote_option
from dstack.cli.render import ago, console, price, table
from dstack.models.resources import HostResources, format_memory
from dstack.models.runner import Runner


@click.group(invoke_without_command=True)
@remote_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def runners(ctx: click.Context, as_json: bool, remote: str | None) -> None:
    """List the runners: host, resources, free disk, executors, status, jobs and last
    heartbeat. A runner whose free disk is below its minimum (`dstack-runner start
    --min-free-disk`) is marked `low` and gets no job until there is room again."""
    if ctx.invoked_subcommand is None:
        _list(as_json, remote)


@runners.command("token")
@remote_option
@click.pass_context
def token(ctx: click.Context, remote: str | None) -> None:
    """Print a new runner registration token (admin only).

    Start a runner with it: `dstack-runner start --server URL --token TOKEN`.
    """
    if remote is None and ctx.parent is not None:
        remote = ctx.parent.params.get("remote")
    click.echo(client_for(remote).create_runner_token())


@runners.command("rm")
@click.argument("name")
@remote_option
@click.pass_context
def rm(ctx: click.Context, name: str, remote: str | None) -> None:
    """Remove runner NAME (admin only): its credential stops working at once, the jobs it
    holds fail as lost (or are re-queued when they may retry), and its name is free again.
    """
    if remote is None and ctx.parent is not None:
        remote = ctx.parent.params.get("remote")
    client_for(remote).delete_runner(name)
    click.echo(f"Removed runner {name}")


def _list(as_json: bool, remote: str | None) -> None:
    items = client_for(remote).list_runners()
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in items], indent=2))
        return
    if not items:
        click.echo("No runners yet.")
        return
    cloud = any(r.instance is not None for r in items)
    columns = ["NAME", "HOST", "RESOURCES", "DISK FREE", "EXECUTORS", "STATUS", "JOBS"]
    columns += ["HEARTBEAT", *(_CLOUD_COLUMNS if cloud else [])]
    t = table(*columns)
    for r in items:
        t.add_row(
            r.name,
            r.host,
            r.resources.describe(),
            _disk(r.resources),
            ", ".join(r.executors),
            r.status.value,
            str(len(r.running_jobs)),
            ago(r.last_heartbeat),
            *(_cloud_cells(r) if cloud else []),
        )
    console().print(t)


_CLOUD_COLUMNS = ["BACKEND", "INSTANCE", "TYPE", "SPOT", "PRICE", "STATE"]


def _cloud_cells(runner: Runner) -> list[str]:
    """Backend, instance id, type, spot, price and the instance's state (cloud runners)."""
    instance = runner.instance
    if instance is None:
        return [runner.backend, "-", "-", "-", "-", "-"]
    return [
        runner.backend,
        instance.cloud_id or "-",
        instance.instance_type,
        "yes" if instance.spot else "no",
        price(instance.price),
        instance.state,
    ]


def _disk(host: HostResources) -> str:
    """`12 GiB`, or `300 MiB (low)` for a runner that takes no job for want of disk (its minimum
    is in `--json`)."""
    free = format_memory(host.disk_mib)
    return f"{free} (low)" if host.low_disk else free
