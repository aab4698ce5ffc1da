"""The price catalog shipped with the package: what it must cover, and that a broken one
is an error that names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dstack.backends.aws.catalog import load_catalog
from dstack.backends.aws.compute import AwsCompute
from dstack.errors import BackendError

from ..conftest import FAKE_KEYS, aws_config

REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]
FAMILIES = ["t3", "m5", "m6i", "c5", "c6i", "r5", "g4dn", "g5", "g6", "p3", "p4d", "p5"]
GPU_FAMILIES = {"g4dn": "T4", "g5": "A10G", "g6": "L4", "p3": "V100", "p4d": "A100", "p5": "H100"}


def test_the_catalog_covers_the_regions_and_families() -> None:
    catalog = load_catalog()
    assert set(REGIONS) <= set(catalog.regions)
    families = {name.split(".")[0] for name in catalog.instance_types}
    assert set(FAMILIES) <= families
    for region in REGIONS:
        priced = {name.split(".")[0] for name in catalog.region(region).prices}
        assert set(FAMILIES) - {"p5"} <= priced, region


def test_every_price_has_its_machine_and_spot_is_cheaper() -> None:
    catalog = load_catalog()
    for region in catalog.regions.values():
        for name, price in region.prices.items():
            assert name in catalog.instance_types
            assert price.spot is not None, name
            assert 0 < price.spot < price.on_demand, name


def test_gpu_types_name_their_gpus() -> None:
    catalog = load_catalog()
    for name, machine in catalog.instance_types.items():
        gpu_name = GPU_FAMILIES.get(name.split(".")[0])
        if gpu_name is None:
            assert machine.gpu is None, name
        else:
            assert machine.gpu is not None, name
            assert machine.gpu.name == gpu_name, name
    p4d = catalog.instance_types["p4d.24xlarge"].gpu
    assert p4d is not None
    assert (p4d.count, p4d.memory_mib) == (8, 40960)


def test_each_region_has_a_gpu_and_a_cpu_ami() -> None:
    catalog = load_catalog()
    for region in REGIONS:
        amis = catalog.region(region).amis
        assert amis.gpu != amis.cpu
    assert "Deep Learning" in catalog.ami_names["gpu"]


def test_prices_are_dated_and_the_backend_says_so() -> None:
    catalog = load_catalog()
    assert catalog.as_of >= "2026-01-01"
    compute = AwsCompute(aws_config(None), FAKE_KEYS)
    try:
        assert compute.prices_as_of == catalog.as_of
    finally:
        compute.close()


def test_a_broken_catalog_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text('{"as_of": "yesterday", "instance_types": {}, "regions": {}}')
    with pytest.raises(BackendError, match=r"catalog .*catalog\.json is not valid"):
        load_catalog(path)
