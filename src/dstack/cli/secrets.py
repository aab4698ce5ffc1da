"""`dstack secrets list | add [-y] NAME [VALUE] | update NAME [VALUE] | delete [-y] NAME`

A value left out is read from a hidden prompt, twice, so it never lands in the shell's
history or on screen.
"""

from __future__ import annotations

import click

from dstack.cli.context import client_for, remote_option


@click.group()
def secrets() -> None:
    """Manage the secrets jobs get as environment variables and `${{ secrets.NAME }}`."""


@secrets.command("list")
@remote_option
def list_secrets(remote: str | None) -> None:
    """List the secrets' names (values are never shown)."""
    from dstack.cli.render import ago, console, table

    items = client_for(remote).list_secrets()
    if not items:
        click.echo("No secrets yet. Add one with `dstack secrets add NAME`.")
        return
    t = table("NAME", "UPDATED")
    for item in items:
        t.add_row(item.name, ago(item.updated_at))
    console().print(t)


@secrets.command("add")
@remote_option
@click.option("-y", "--yes", is_flag=True, help="Overwrite an existing secret without asking.")
@click.argument("name")
@click.argument("value", required=False)
def add(name: str, value: str | None, yes: bool, remote: str | None) -> None:
    """Add secret NAME (the value is asked for when left out)."""
    _check(name, value)
    client = client_for(remote)
    exists = any(item.name == name for item in client.list_secrets())
    if exists and not yes and not click.confirm(f"Secret '{name}' exists. Overwrite it?"):
        raise click.exceptions.Exit(1)
    value = _check(name, value if value is not None else _prompt(name))
    if exists:
        client.update_secret(name, value)
        click.echo(f"Secret '{name}' updated.")
    else:
        client.add_secret(name, value)
        click.echo(f"Secret '{name}' added.")


@secrets.command("update")
@remote_option
@click.argument("name")
@click.argument("value", required=False)
def update(name: str, value: str | None, remote: str | None) -> None:
    """Change the value of secret NAME (asked for when left out)."""
    _check(name, value)
    client = client_for(remote)
    if not any(item.name == name for item in client.list_secrets()):
        from dstack.errors import NotFoundError

        raise NotFoundError(f"secret '{name}' not found", hint=f"dstack secrets add {name}")
    client.update_secret(name, _check(name, value if value is not None else _prompt(name)))
    click.echo(f"Secret '{name}' updated.")


@secrets.command("delete")
@remote_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.argument("name")
def delete(name: str, yes: bool, remote: str | None) -> None:
    """Delete secret NAME."""
    if not yes and not click.confirm(f"Delete secret '{name}'?"):
        raise click.exceptions.Exit(1)
    client_for(remote).delete_secret(name)
    click.echo(f"Secret '{name}' deleted.")


def _check(name: str, value: str | None) -> str:
    """The value, once name and value are within the server's bounds; else one line."""
    from dstack.errors import ConfigError
    from dstack.models.names import SECRET_VALUE_MAX, check_name, secret_value_problem

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
