"""`dstack backends add aws ... | list [--json] | delete [-y] NAME` (admin): the clouds a
server creates runners in. Credentials go to the server and stay there, encrypted; they are
never printed, also not in an error."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from dstack.cli.context import client_for, confirm_or_stop, remote_option
from dstack.cli.render import ago, console, table
from dstack.errors import ConfigError

if TYPE_CHECKING:
    from dstack.models.backends_api import AddBackendRequest, BackendInfo

SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"


class Duration(click.ParamType):  # type: ignore[type-arg]
    """`5m`, `300s`, `1h` or a number of seconds → seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float | int):
            return float(value)
        from dstack.models.backends_api import parse_duration  # ~80 ms: see aws_request

        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group()
def backends() -> None:
    """Manage the cloud backends a server creates runners in (admin only)."""


@backends.group("add")
def add() -> None:
    """Add a backend; its credentials are checked with the cloud first."""


@add.command("aws")
@click.option("--region", required=True, help="The AWS region, e.g. us-east-1.")
@click.option("--access-key-id", default=None, help="An access key id (with --secret-access-key).")
@click.option(
    "--secret-access-key",
    default=None,
    help=f"Its secret key; default: ${SECRET_KEY_ENV}, else asked for (hidden).",
)
@click.option("--profile", default=None, help="A profile of the server's own AWS configuration.")
@click.option("--endpoint-url", default=None, metavar="URL", help="An EC2-compatible endpoint.")
@click.option("--subnet", default=None, metavar="ID", help="The subnet instances start in.")
@click.option("--ami", default=None, metavar="ID", help="The image instances boot.")
@click.option("--max-instances", default=4, show_default=True, type=click.IntRange(0, 10_000))
@click.option(
    "--max-price",
    default=None,
    type=click.FloatRange(min=0, min_open=True, max=10_000),
    metavar="USD",
    help="Most USD per hour for one instance (default: no cap).",
)
@click.option(
    "--idle-timeout",
    default="5m",
    show_default=True,
    type=Duration(),
    metavar="DURATION",
    help="Terminate an instance idle this long (300s, 5m, 1h).",
)
@click.option("--name", default="aws", show_default=True, help="The backend's name.")
@remote_option
def add_aws(
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    profile: str | None,
    endpoint_url: str | None,
    subnet: str | None,
    ami: str | None,
    max_instances: int,
    max_price: float | None,
    idle_timeout: float,
    name: str,
    remote: str | None,
) -> None:
    """Add an AWS backend. Credentials: --access-key-id with --secret-access-key (or
    $AWS_SECRET_ACCESS_KEY, or asked for), or --profile, or none: the server's own
    credential chain (its instance role)."""
    if secret_access_key is not None and access_key_id is None:
        raise ConfigError("--secret-access-key needs --access-key-id")
    if access_key_id is not None and profile is not None:
        raise ConfigError("give either --access-key-id or --profile, not both")
    if access_key_id is not None and secret_access_key is None:
        secret_access_key = os.environ.get(SECRET_KEY_ENV) or click.prompt(
            "AWS secret access key", hide_input=True
        )
    request = aws_request(
        name=name,
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        profile=profile,
        endpoint_url=endpoint_url,
        subnet=subnet,
        ami=ami,
        max_instances=max_instances,
        max_price=max_price,
        idle_timeout=idle_timeout,
    )
    add_backend(request, remote)


def aws_request(**fields: Any) -> AddBackendRequest:
    """The request adding an AWS backend, checked here (`ConfigError` naming the field, never
    its value: it may be a secret)."""
    # pydantic and the backends' models (~80 ms): `--help` and `delete` skip them
    from pydantic import ValidationError

    from dstack.models.backends_api import AddBackendRequest

    keys = ("access_key_id", "secret_access_key", "profile")
    limits = ("max_instances", "max_price", "idle_timeout")
    config = {k: v for k, v in fields.items() if k not in keys + limits}
    try:
        return AddBackendRequest.model_validate(
            {
                "config": {**config, "type": "aws", "limits": {k: fields[k] for k in limits}},
                "credentials": {k: fields[k] for k in keys},
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("config", "limits"))
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid backend: {where or 'credentials'}: {reason}") from None


def add_backend(request: AddBackendRequest, remote: str | None) -> None:
    config = request.config
    added = client_for(remote).add_backend(config, request.credentials)
    click.echo(
        f"Backend '{added.config.name}' added ({added.config.type}, {added.config.region}, "
        f"credentials: {added.auth}); the cloud accepted its credentials."
    )


@backends.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@remote_option
def list_backends(as_json: bool, remote: str | None) -> None:
    """List the backends: type, region, where the credentials come from (never the
    credentials), limits, and their instances not yet terminated."""
    items = client_for(remote).list_backends()
    if as_json:
        click.echo(json.dumps([b.model_dump(mode="json") for b in items], indent=2))
        return
    if not items:
        click.echo("No backends yet: add one with `dstack backends add aws --region REGION`.")
        return
    t = table("NAME", "TYPE", "REGION", "CREDENTIALS", "LIMITS", "INSTANCES", "CREATED")
    for b in items:
        c = b.config
        t.add_row(c.name, c.type, c.region, b.auth, _limits(b), str(b.instances), ago(b.created_at))
    console().print(t)


def _limits(backend: BackendInfo) -> str:
    limits = backend.config.limits
    parts = [f"{limits.max_instances} instances"]
    if limits.max_price is not None:
        parts.append(f"≤ ${limits.max_price:g}/h")
    idle = limits.idle_timeout
    parts.append(f"idle {idle / 60:g}m" if idle >= 60 else f"idle {idle:g}s")
    return ", ".join(parts)


@backends.command("delete")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.argument("name")
@remote_option
def delete(name: str, yes: bool, remote: str | None) -> None:
    """Delete backend NAME (refused while it has instances not yet terminated)."""
    if not yes:
        confirm_or_stop(f"Delete backend '{name}' and its stored credentials?")
    client_for(remote).delete_backend(name)
    click.echo(f"Backend '{name}' deleted.")
