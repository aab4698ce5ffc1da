"""`dstack config`: add, list and delete remotes (team servers) in `$DSTACK_HOME/config.yaml`."""

from __future__ import annotations

import json

import click

from dstack.cli.context import cli_config, dstack_home
from dstack.cli.remotes import Remote, config_path, save_config
from dstack.cli.render import console, table
from dstack.errors import AuthError, ConfigError, ServerError


@click.command()
@click.option("--url", metavar="URL", help="The remote server's URL, e.g. http://host:3000.")
@click.option("--token", metavar="TOKEN", help="Your token on that server.")
@click.option("--name", default="default", show_default=True, help="Name of the remote.")
@click.option("--default", "make_default", is_flag=True, help="Make it the default remote.")
@click.option("--delete", "delete", metavar="NAME", help="Remove the remote NAME.")
@click.option(
    "--json", "as_json", is_flag=True, help="List as JSON (name, url, default; no token)."
)
def config(
    url: str | None,
    token: str | None,
    name: str,
    make_default: bool,
    delete: str | None,
    as_json: bool,
) -> None:
    """Add a remote (`--url` and `--token`), delete one, or list them."""
    settings = cli_config()
    if delete is not None:
        settings.delete(delete)
        save_config(settings, config_path(dstack_home()))
        click.echo(f"Removed remote '{delete}'.")
        return
    if url is None and token is None:
        _print_remotes(as_json)
        return
    if not url or not token:
        raise ConfigError(
            "`dstack config` needs both --url and --token to add a remote",
            hint="dstack config --url http://HOST:PORT --token TOKEN [--name NAME]",
        )
    _add(url, token, name, make_default)


def _add(url: str, token: str, name: str, make_default: bool) -> None:
    url = url.rstrip("/")
    check_remote(url, token)
    settings = cli_config()
    settings.upsert(Remote(name=name, url=url, token=token), make_default=make_default)
    save_config(settings, config_path(dstack_home()))
    suffix = " (default)" if settings.default == name else ""
    click.echo(f"Remote '{name}' at {url} saved{suffix}.")


def check_remote(url: str, token: str) -> None:
    """The server answers `/api/health` and accepts the token; else a `DstackError` saying
    which of the two failed."""
    from dstack.api.client import Client  # listing and deleting skip it: about 100 ms

    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"'{url}' is not an http(s) URL", hint="e.g. http://HOST:3000")
    with Client(url, token, timeout=10.0) as client:
        try:
            client.health()
        except ServerError as exc:
            if isinstance(exc, AuthError):
                raise
            raise ServerError(
                f"no dstack server answers at {url}: {exc.message}",
                hint="check the URL and that `dstack server` runs there",
            ) from exc
        client.check_token()


def _print_remotes(as_json: bool) -> None:
    settings = cli_config()
    if as_json:
        rows = [
            {"name": r.name, "url": r.url, "default": r.name == settings.default}
            for r in settings.remotes
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not settings.remotes:
        click.echo(f"No remotes in {config_path(dstack_home())}.")
        click.echo("Add one with `dstack config --url URL --token TOKEN`.")
        return
    t = table("NAME", "URL", "TOKEN")
    for r in settings.remotes:
        t.add_row(
            r.name + (" (default)" if r.name == settings.default else ""), r.url, mask(r.token)
        )
    console().print(t)


def mask(token: str) -> str:
    """`abcd…wxyz` for long tokens, `****` otherwise: enough to tell tokens apart."""
    return f"{token[:4]}…{token[-4:]}" if len(token) >= 16 else "****"
