#!/usr/bin/env python3
"""Regenerate dstack's AWS price catalog (src/dstack/backends/aws/catalog.json) from AWS.

Needs real AWS credentials (boto3's usual chain) allowed to call pricing:GetProducts,
ec2:DescribeSpotPriceHistory, ec2:DescribeInstanceTypes and ssm:GetParameter. For each
region it records the Linux on-demand list price (Pricing API), a recent spot price (the
median over availability zones of each zone's latest price in the last day), and the
default AMIs (the latest Deep Learning Base AMI for GPU types and Ubuntu for CPU types, from
AWS's public SSM parameters). The instance types are those of the current catalog unless
--types names others.

    python scripts/refresh-aws-catalog.py --regions us-east-1,us-west-2,eu-west-1
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DESCRIPTION = __doc__ or ""
CATALOG = Path(__file__).resolve().parent.parent / "src/dstack/backends/aws/catalog.json"
DEFAULT_REGIONS = "us-east-1,us-west-2,eu-west-1"
AMI_PARAMETERS = {
    "gpu": "/aws/service/deeplearning/ami/x86_64/"
    "base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id",
    "cpu": "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
}
AMI_NAMES = {
    "gpu": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)",
    "cpu": "Ubuntu Server 24.04 LTS (HVM), SSD Volume Type",
}
SOURCE = (
    "AWS Pricing API (Linux, shared tenancy, on-demand) and describe_spot_price_history "
    "(median over zones of the latest price), USD per hour; scripts/refresh-aws-catalog.py"
)
# Pricing API filters for a plain Linux on-demand instance.
PRICE_FILTERS = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
}


# --- pure transforms (tested on a recorded sample) -----------------------------------------


def on_demand_price(price_item: str) -> tuple[str, float] | None:
    """(instance type, USD per hour) of one `get_products` PriceList entry (a JSON string);
    None when it has no hourly USD on-demand price."""
    product = json.loads(price_item)
    instance_type = product.get("product", {}).get("attributes", {}).get("instanceType")
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if instance_type and dimension.get("unit") == "Hrs" and usd and float(usd) > 0:
                return str(instance_type), float(usd)
    return None


def recent_spot_prices(history: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Instance type → median over zones of each zone's latest spot price, from
    `describe_spot_price_history` records."""
    latest: dict[tuple[str, str], tuple[datetime.datetime, float]] = {}
    for record in history:
        key = (str(record["InstanceType"]), str(record["AvailabilityZone"]))
        stamp, price = record["Timestamp"], float(record["SpotPrice"])
        if key not in latest or stamp > latest[key][0]:
            latest[key] = (stamp, price)
    by_type: dict[str, list[float]] = {}
    for (instance_type, _), (_, price) in sorted(latest.items()):
        by_type.setdefault(instance_type, []).append(price)
    return {t: round(statistics.median(p), 4) for t, p in by_type.items()}


def type_entry(described: Mapping[str, Any]) -> dict[str, Any]:
    """The catalog's entry for one `describe_instance_types` type: CPUs, memory, GPUs."""
    entry: dict[str, Any] = {
        "cpus": described["VCpuInfo"]["DefaultVCpus"],
        "memory_mib": described["MemoryInfo"]["SizeInMiB"],
    }
    gpus = described.get("GpuInfo", {}).get("Gpus", [])
    if gpus:
        entry["gpu"] = {
            "name": gpus[0]["Name"],
            "memory_mib": gpus[0]["MemoryInfo"]["SizeInMiB"],
            "count": sum(g["Count"] for g in gpus),
        }
    return entry


def region_entry(
    amis: Mapping[str, str], on_demand: Mapping[str, float], spot: Mapping[str, float]
) -> dict[str, Any]:
    """One region of the catalog: its AMIs, and a price for each type that has an
    on-demand one (spot where known)."""
    prices: dict[str, dict[str, float]] = {}
    for instance_type in sorted(on_demand):
        price = {"on_demand": round(on_demand[instance_type], 4)}
        if instance_type in spot:
            price["spot"] = spot[instance_type]
        prices[instance_type] = price
    return {"amis": dict(amis), "prices": prices}


def build_catalog(
    as_of: str, types: Mapping[str, dict[str, Any]], regions: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """The whole catalog, in the shape `dstack.backends.aws.catalog.Catalog` reads."""
    return {
        "as_of": as_of,
        "source": SOURCE,
        "ami_names": AMI_NAMES,
        "instance_types": {name: types[name] for name in sorted(types)},
        "regions": {name: regions[name] for name in sorted(regions)},
    }


# --- AWS calls ----------------------------------------------------------------------------


def fetch_on_demand(session: Any, region: str, types: list[str]) -> dict[str, float]:
    pricing = session.client("pricing", region_name="us-east-1")  # the API lives there
    prices: dict[str, float] = {}
    for instance_type in types:
        filters = {**PRICE_FILTERS, "regionCode": region, "instanceType": instance_type}
        pages = pricing.get_paginator("get_products").paginate(
            ServiceCode="AmazonEC2",
            Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
        )
        for page in pages:
            for item in page["PriceList"]:
                found = on_demand_price(item)
                if found is not None:
                    prices[found[0]] = found[1]
    return prices


def fetch_spot(ec2: Any, types: list[str]) -> dict[str, float]:
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=types, ProductDescriptions=["Linux/UNIX"], StartTime=since
    )
    return recent_spot_prices(r for page in pages for r in page["SpotPriceHistory"])


def fetch_types(ec2: Any, types: list[str]) -> dict[str, dict[str, Any]]:
    pages = ec2.get_paginator("describe_instance_types").paginate(
        Filters=[{"Name": "instance-type", "Values": types}]
    )
    return {t["InstanceType"]: type_entry(t) for page in pages for t in page["InstanceTypes"]}


def fetch_amis(ssm: Any) -> dict[str, str]:
    return {
        kind: str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
        for kind, name in AMI_PARAMETERS.items()
    }


def refresh(regions: list[str], types: list[str], as_of: str) -> dict[str, Any]:
    import boto3

    session = boto3.session.Session()
    described: dict[str, dict[str, Any]] = {}
    entries: dict[str, dict[str, Any]] = {}
    for region in regions:
        print(f"{region}: prices, spot history, instance types, AMIs", file=sys.stderr)
        ec2 = session.client("ec2", region_name=region)
        here = fetch_types(ec2, types)
        described.update(here)
        on_demand = {t: p for t, p in fetch_on_demand(session, region, types).items() if t in here}
        spot = fetch_spot(ec2, sorted(on_demand))
        amis = fetch_amis(session.client("ssm", region_name=region))
        entries[region] = region_entry(amis, on_demand, spot)
    return build_catalog(as_of, described, entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--regions", default=DEFAULT_REGIONS, help="comma-separated regions")
    parser.add_argument(
        "--types", help="comma-separated instance types (default: those of the current catalog)"
    )
    parser.add_argument("--output", type=Path, default=CATALOG, help="where to write the JSON")
    parser.add_argument(
        "--as-of", default=datetime.date.today().isoformat(), help="the catalog's date"
    )
    args = parser.parse_args(argv)
    types = (
        args.types.split(",")
        if args.types
        else sorted(json.loads(CATALOG.read_text())["instance_types"])
    )
    catalog = refresh(args.regions.split(","), types, args.as_of)
    args.output.write_text(json.dumps(catalog, indent=1) + "\n")
    print(f"wrote {args.output} ({len(catalog['instance_types'])} types)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
