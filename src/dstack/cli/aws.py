"""`dstack aws configure`: the questions of `dstack backends add aws`, asked one by one (the
early dstack's command); the answers become an AWS backend of the server."""

from __future__ import annotations

import os
from typing import Any

import click

from dstack.cli.backends import Duration, add_backend, aws_request
from dstack.cli.context import remote_option


@click.group()
def aws() -> None:
    """Let the server create runners in your AWS account."""


@aws.command("configure")
@remote_option
def configure(remote: str | None) -> None:
    """Ask for a region, credentials and limits, then add them as a backend of the server
    (checked with AWS first). Empty answers take the default shown."""
    answers: dict[str, Any] = {
        "region": click.prompt(
            "AWS region", default=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        ),
        "access_key_id": _optional("AWS access key ID (empty: a profile or the server's own)"),
    }
    if answers["access_key_id"]:
        answers["secret_access_key"] = click.prompt("AWS secret access key", hide_input=True)
        answers["profile"] = None
    else:
        answers["secret_access_key"] = None
        answers["profile"] = _optional("AWS profile on the server (empty: its default credentials)")
    answers["endpoint_url"] = _optional("EC2 endpoint URL (empty: AWS)")
    answers["subnet"] = _optional("Subnet ID (empty: the default VPC's)")
    answers["ami"] = _optional("AMI ID (empty: dstack's default)")
    answers["max_instances"] = click.prompt(
        "Most instances at once", default=4, type=click.IntRange(0, 10_000)
    )
    answers["max_price"] = _optional(
        "Most USD per hour per instance (empty: no cap)",
        convert=click.FloatRange(min=0, min_open=True, max=10_000),
    )
    answers["idle_timeout"] = click.prompt(
        "Terminate idle instances after", default="5m", type=Duration()
    )
    answers["name"] = click.prompt("Backend name", default="aws")
    add_backend(aws_request(**answers), remote)


def _optional(text: str, convert: click.ParamType[Any] | None = None) -> Any:
    """An answer that may be left empty (None); a wrong one is asked again."""

    def proc(value: str) -> Any:
        if not value.strip():
            return None
        return convert.convert(value, None, None) if convert is not None else value.strip()

    return click.prompt(text, default="", show_default=False, value_proc=proc)
