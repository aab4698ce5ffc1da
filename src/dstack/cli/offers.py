"""`dstack offers [--cpu N] [--memory M] [--gpu N] [--gpu-name NAME] [--gpu-memory M]
[--spot | --on-demand] [--max-price P] [--json]`: the machines the server's backends can
create for those resources, cheapest first."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from dstack.cli.context import client_for, remote_option
from dstack.cli.render import console, table
from dstack.errors import ConfigError

if TYPE_CHECKING:
    from dstack.models.backends import InstanceOffer
    from dstack.models.backends_api import OffersResponse
    from dstack.models.resources import ResourcesSpec


@click.command()
@click.option("--cpu", type=click.IntRange(1, 100_000), default=None, help="CPUs at least.")
@click.option("--memory", default=None, metavar="SIZE", help="Memory at least (16GB, 512MB).")
@click.option("--gpu", "gpus", type=click.IntRange(0, 1024), default=None, help="GPUs at least.")
@click.option("--gpu-name", default=None, metavar="NAME", help="GPU model, e.g. A100, T4.")
@click.option("--gpu-memory", default=None, metavar="SIZE", help="Memory per GPU at least.")
@click.option(
    "--spot/--on-demand", "spot", default=None, help="Only spot, or only on-demand (default: both)."
)
@click.option(
    "--max-price",
    type=click.FloatRange(min=0, min_open=True, max=10_000),
    default=None,
    metavar="USD",
    help="Most USD per hour.",
)
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Offers shown."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@remote_option
def offers(
    cpu: int | None,
    memory: str | None,
    gpus: int | None,
    gpu_name: str | None,
    gpu_memory: str | None,
    spot: bool | None,
    max_price: float | None,
    limit: int,
    as_json: bool,
    remote: str | None,
) -> None:
    """List the instance types the server's backends offer for these resources, cheapest
    first: vCPUs, memory, GPUs, spot or on-demand, USD per hour, region."""
    spec = _spec(cpu, memory, gpus, gpu_name, gpu_memory)
    answer = client_for(remote).offers(spec, spot=spot, max_price=max_price, limit=limit)
    if as_json:
        click.echo(json.dumps(_as_json(answer), indent=2))
        return
    _print(answer)


def _spec(
    cpu: int | None,
    memory: str | None,
    gpus: int | None,
    gpu_name: str | None,
    gpu_memory: str | None,
) -> ResourcesSpec:
    # pydantic models (~75 ms): `dstack offers --help` answers without them
    from dstack.models.resources import GpuRequest, ResourcesSpec, parse_memory_mib

    def mib(flag: str, value: str | None) -> int | None:
        try:
            return None if value is None else parse_memory_mib(value)
        except ValueError as exc:
            raise ConfigError(f"invalid {flag}: {exc}") from None

    if gpu_name is not None and len(gpu_name) > 100:
        raise ConfigError("invalid --gpu-name: at most 100 characters")
    gpu = None
    if gpus or gpu_name or gpu_memory:  # a name or a memory alone means one GPU
        count = gpus if gpus is not None else 1
        gpu = GpuRequest(count=count, name=gpu_name, memory_mib=mib("--gpu-memory", gpu_memory))
    return ResourcesSpec(cpu=cpu, memory_mib=mib("--memory", memory), gpu=gpu)


def _row(offer: InstanceOffer) -> dict[str, Any]:
    gpus = offer.resources.gpus
    return {
        "backend": offer.backend,
        "region": offer.region,
        "instance_type": offer.instance_type,
        "cpus": offer.resources.cpus,
        "memory_mib": offer.resources.memory_mib,
        "gpu_name": gpus[0].name if gpus else None,
        "gpu_memory_mib": gpus[0].memory_mib if gpus else None,
        "gpu_count": len(gpus),
        "spot": offer.spot,
        "price": offer.price,
    }


def _as_json(answer: OffersResponse) -> dict[str, Any]:
    return {
        "offers": [_row(o) for o in answer.offers],
        "total": answer.total,
        "backends": [b.model_dump(mode="json") for b in answer.backends],
    }


def _print(answer: OffersResponse) -> None:
    from dstack.models.resources import format_memory  # see _spec

    if not answer.backends:
        click.echo("No backends are configured: an admin adds one with `dstack backends add aws`.")
        return
    for failed in (b for b in answer.backends if b.error):
        click.echo(f"Backend '{failed.name}' gave no offers: {failed.error}", err=True)
    if not answer.offers:
        click.echo("No offer fits these resources.")
        return
    t = table("BACKEND", "REGION", "INSTANCE TYPE", "CPUS", "MEMORY", "GPUS", "MARKET", "$/H")
    for o in answer.offers:
        r = _row(o)
        gpu = "-"
        if r["gpu_count"]:
            gpu = f"{r['gpu_count']}x{r['gpu_name']} ({format_memory(r['gpu_memory_mib'])})"
        market = "spot" if o.spot else "on-demand"
        price = f"{o.price:.4f}".rstrip("0").rstrip(".")
        t.add_row(
            o.backend,
            o.region,
            o.instance_type,
            str(r["cpus"]),
            format_memory(r["memory_mib"]),
            gpu,
            market,
            price,
        )
    console().print(t)
    if answer.total > len(answer.offers):
        click.echo(f"{len(answer.offers)} of {answer.total} offers shown (--limit).")
    _print_dates(answer)


def _print_dates(answer: OffersResponse) -> None:
    dates: dict[str, list[str]] = {}
    for b in answer.backends:
        if b.offers:
            dates.setdefault(b.prices_as_of or "", []).append(b.name)
    for date, names in sorted(dates.items()):
        where = f" ({', '.join(names)})" if len(dates) > 1 else ""
        if date:
            click.echo(f"Prices as of {date} (catalog){where}.")
        else:
            click.echo(f"Live prices{where}.")
