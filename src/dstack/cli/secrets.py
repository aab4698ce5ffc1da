"""`dstack secrets list | add [-y] NAME [VALUE] | update NAME [VALUE] | delete [-y] NAME`,
each with `--global` (admins) instead of the current repository.

A secret belongs to the repository of the working copy the command runs in; jobs of that
repository get it, and the global ones. A value left out is read from a hidden prompt,
twice, so it never lands in the shell's history or on screen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dstack.cli.context import client_for, confirm_or_stop, remote_option
from dstack.cli.render import ago, console, table
from dstack.cli.scope import repo_for
from dstack.errors import ConfigError, NotFoundError
from dstack.models.names import SECRET_VALUE_MAX, check_name, secret_value_problem

if TYPE_CHECKING:
    from dstack.api.client import Client

F = TypeVar("F", bound=Callable[..., Any])


def global_option(func: F) -> F:
    return click.option(
        "--global",
        "is_global",
        is_flag=True,
        help="A global secret, which every repository's jobs get (admins).",
    )(func)


def _scope(is_global: bool) -> str | None:
    """The repository the command works in; None for the global secrets."""
    return repo_for("secrets", all_repos=is_global, instead="--global (admins)")


def _exists(client: Client, name: str, repo_id: str | None) -> bool:
    return any(s.name == name and s.repo_id == repo_id for s in client.list_secrets(repo_id))


@click.group()
def secrets() -> None:
    """Manage the secrets jobs get as environment variables and `${{ secrets.NAME }}`."""


@secrets.command("list")
@global_option
@remote_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (name, repo_id, dates).")
def list_secrets(is_global: bool, remote: str | None, as_json: bool) -> None:
    """List the secrets' names (values are never shown): the current repository's, and the
    global ones when you are an admin."""
    items = client_for(remote).list_secrets(_scope(is_global))
    if as_json:
        click.echo(json.dumps([item.model_dump(mode="json") for item in items], indent=2))
        return
    if not items:
        click.echo("No secrets yet. Add one with `dstack secrets add NAME`.")
        return
    t = table("NAME", "SCOPE", "UPDATED")
    for item in items:
        t.add_row(item.name, item.repo_id or "global", ago(item.updated_at))
    console().print(t)


@secrets.command("add")
@global_option
@remote_option
@click.option("-y", "--yes", is_flag=True, help="Overwrite an existing secret without asking.")
@click.argument("name")
@click.argument("value", required=False)
def add(name: str, value: str | None, yes: bool, is_global: bool, remote: str | None) -> None:
    """Add secret NAME (the value is asked for when left out)."""
    _check(name, value)
    repo_id = _scope(is_global)
    client = client_for(remote)
    exists = _exists(client, name, repo_id)
    if exists and not yes and not click.confirm(f"Secret '{name}' exists. Overwrite it?"):
        raise click.exceptions.Exit(1)
    value = _check(name, value if value is not None else _prompt(name))
    if exists:
        client.update_secret(name, value, repo_id)
        click.echo(f"Secret '{name}' updated.")
    else:
        client.add_secret(name, value, repo_id)
        click.echo(f"Secret '{name}' added.")


@secrets.command("update")
@global_option
@remote_option
@click.argument("name")
@click.argument("value", required=False)
def update(name: str, value: str | None, is_global: bool, remote: str | None) -> None:
    """Change the value of secret NAME (asked for when left out)."""
    _check(name, value)
    repo_id = _scope(is_global)
    client = client_for(remote)
    if not _exists(client, name, repo_id):
        flag = " --global" if repo_id is None else ""
        raise NotFoundError(f"secret '{name}' not found", hint=f"dstack secrets add{flag} {name}")
    client.update_secret(name, _check(name, value if value is not None else _prompt(name)), repo_id)
    click.echo(f"Secret '{name}' updated.")


@secrets.command("delete")
@global_option
@remote_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.argument("name")
def delete(name: str, yes: bool, is_global: bool, remote: str | None) -> None:
    """Delete secret NAME."""
    repo_id = _scope(is_global)
    if not yes:
        confirm_or_stop(f"Delete secret '{name}'?")
    client_for(remote).delete_secret(name, repo_id)
    click.echo(f"Secret '{name}' deleted.")


def _check(name: str, value: str | None) -> str:
    """The value, once name and value are within the server's bounds; else one line."""
    check_name(name, "secret")
    problem = None if value is None else secret_value_problem(value)
    if problem is not None:
        raise ConfigError(
            f"secret {name}: {problem}",
            hint=f"a value is text of at most {SECRET_VALUE_MAX // 1024} KiB; "
            "pass a file's path, not its contents, for larger data",
        )
    return value or ""


def _prompt(name: str) -> str:
    value: str = click.prompt(
        f"Value of {name}", hide_input=True, confirmation_prompt=True, err=True
    )
    return value
