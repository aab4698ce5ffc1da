"""scripts/refresh-aws-catalog.py: its transforms on answers recorded from AWS (the script
itself needs real credentials), and that what it builds is a catalog dstack reads."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dstack.backends.aws.catalog import load_catalog

Sample = dict[str, Any]
ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "refresh-aws-catalog.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("refresh_aws_catalog", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(__file__).parent / "data/aws-sample.json").read_text())
    for record in data["describe_spot_price_history"]["SpotPriceHistory"]:
        record["Timestamp"] = datetime.fromisoformat(record["Timestamp"])  # as boto3 gives it
    return data


def test_on_demand_prices_come_from_the_price_list(script: ModuleType, sample: Sample) -> None:
    found = [script.on_demand_price(item) for item in sample["get_products"]["PriceList"]]
    assert found == [("g4dn.xlarge", 0.526), None, ("m5.large", 0.096)]  # a $0 line is none


def test_spot_price_is_the_median_of_each_zones_latest(script: ModuleType, sample: Sample) -> None:
    history = sample["describe_spot_price_history"]["SpotPriceHistory"]
    # g4dn.xlarge: 1a latest 0.16 (not 0.17), 1b 0.21, 1c 0.19 -> median 0.19
    assert script.recent_spot_prices(history) == {"g4dn.xlarge": 0.19, "m5.large": 0.038}


def test_built_catalog_is_one_dstack_reads(
    script: ModuleType, sample: Sample, tmp_path: Path
) -> None:
    types = {
        t["InstanceType"]: script.type_entry(t)
        for t in sample["describe_instance_types"]["InstanceTypes"]
    }
    assert types["g4dn.xlarge"]["gpu"] == {"name": "T4", "memory_mib": 16384, "count": 1}
    assert "gpu" not in types["m5.large"]
    region = script.region_entry(
        {"gpu": "ami-0123456789abcdef0", "cpu": "ami-0fedcba9876543210"},
        {"g4dn.xlarge": 0.526, "m5.large": 0.096},
        {"g4dn.xlarge": 0.19},
    )
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(script.build_catalog("2026-12-01", types, {"us-east-1": region})))

    catalog = load_catalog(path)
    assert catalog.as_of == "2026-12-01"
    prices = catalog.region("us-east-1").prices
    assert (prices["g4dn.xlarge"].on_demand, prices["g4dn.xlarge"].spot) == (0.526, 0.19)
    assert (prices["m5.large"].on_demand, prices["m5.large"].spot) == (0.096, None)


def test_help_runs_without_credentials() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "--regions" in done.stdout
    assert "pricing:GetProducts" in done.stdout
