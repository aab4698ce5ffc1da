"""`dstack users list | add NAME [--admin] [--repo REPO_ID]... | delete [-y] NAME` (admin)"""

from __future__ import annotations

import json

import click

from dstack.cli.context import client_for, confirm_or_stop, remote_option
from dstack.cli.render import ago, console, table
from dstack.models.names import check_name


@click.group()
def users() -> None:
    """Manage the users of a server and their tokens (admin only)."""


@users.command("list")
@remote_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (name, is_admin, repos, ...).")
def list_users(remote: str | None, as_json: bool) -> None:
    """List the users, whether they are admins, and the repositories they may see."""
    found = client_for(remote).list_users()
    if as_json:
        click.echo(json.dumps([user.model_dump(mode="json") for user in found], indent=2))
        return
    t = table("NAME", "ADMIN", "REPOSITORIES", "CREATED")
    for user in found:
        repos = "all" if user.repos is None else ", ".join(user.repos) or "none"
        t.add_row(user.name, "yes" if user.is_admin else "", repos, ago(user.created_at))
    console().print(t)


@users.command("add")
@remote_option
@click.option("--admin", "is_admin", is_flag=True, help="The user may manage users and runners.")
@click.option(
    "--repo",
    "repos",
    multiple=True,
    metavar="REPO_ID",
    help="Limit the user to runs of this repository (repeatable; default: all).",
)
@click.argument("name")
def add(name: str, is_admin: bool, repos: tuple[str, ...], remote: str | None) -> None:
    """Add user NAME and print their token (shown only this once)."""
    check_name(name, "user")
    created = client_for(remote).create_user(name, is_admin=is_admin, repos=list(repos) or None)
    click.echo(f"User '{created.user.name}' added. Their token (shown only now):")
    click.echo(created.token)


@users.command("delete")
@remote_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.argument("name")
def delete(name: str, yes: bool, remote: str | None) -> None:
    """Delete user NAME; their token stops working at once."""
    if not yes:
        confirm_or_stop(f"Delete user '{name}' and revoke their token?")
    client_for(remote).delete_user(name)
    click.echo(f"User '{name}' deleted.")
