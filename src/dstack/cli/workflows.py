"""`dstack workflows`: the workflows of the repository in the current folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dstack.cli.render import console, table
from dstack.config import RepoConfig, find_dstack_root, load_config
from dstack.config.normalize import is_builtin
from dstack.providers.registry import provider_origin


@click.command(
    help="List the workflows of this repository: name, provider, where the provider comes "
    "from (built-in, .dstack/providers.yaml, or the installed package that provides it) "
    "and help. --json prints a list of {name, provider, from, help}."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def workflows(as_json: bool) -> None:
    config = load_config(find_dstack_root(Path.cwd()))
    names = config.workflow_names()
    if as_json:
        click.echo(json.dumps([_described(config, name) for name in names], indent=2))
        return
    if not names:
        click.echo("No workflows yet: add them to .dstack/workflows.yaml.")
        return
    rows = table("NAME", "PROVIDER", "FROM", "HELP")
    for name in names:
        provider = config.provider(name)
        rows.add_row(name, provider, origin(config, provider), config.help(name) or "")
    console().print(rows)


def _described(config: RepoConfig, name: str) -> dict[str, str | None]:
    provider = config.provider(name)
    return {
        "name": name,
        "provider": provider,
        "from": origin(config, provider),
        "help": config.help(name) or None,
    }


def origin(config: RepoConfig, provider: str) -> str:
    """Where `provider` resolves to, in the order a run resolves it; imports no plugin."""
    if provider == "-":
        return "-"
    if is_builtin(provider):
        return "built-in"
    if provider in config.custom_providers:
        return "providers.yaml"
    return provider_origin(provider) or "unknown"
