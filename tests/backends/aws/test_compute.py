"""What only AWS does: capacity and credential errors as EC2 answers them (botocore's
Stubber plays EC2's error answers, which moto cannot be made to give), the AMI, subnet and
launch options sent (read back from moto), interruption, and the cached instance types."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from tests.infra.moto import MotoServer

from dstack.backends.aws.catalog import CatalogGpu, CatalogType, load_catalog
from dstack.backends.aws.compute import AwsCompute, instance_state, offer_resources
from dstack.backends.base import BackendAuthError, NoCapacityError
from dstack.errors import BackendError
from dstack.models.backends import BackendCredentials, InstanceState, LaunchRequest
from dstack.models.resources import GpuRequest, ResourcesSpec

from ..conftest import FAKE_KEYS, AwsFactory, aws_config

CPU = ResourcesSpec(cpu=2)
GPU = ResourcesSpec(gpu=GpuRequest(count=1, name="T4"))


@pytest.fixture
def stubbed() -> Iterator[tuple[AwsCompute, Stubber]]:
    """An `AwsCompute` whose EC2 answers come from a Stubber (no network)."""
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("ec2")
    with Stubber(client) as stubber:
        yield AwsCompute(aws_config(None), FAKE_KEYS, client=client), stubber
        stubber.assert_no_pending_responses()
    client.close()


def described_type(name: str = "g4dn.xlarge") -> dict[str, Any]:
    return {
        "InstanceType": name,
        "VCpuInfo": {"DefaultVCpus": 4},
        "MemoryInfo": {"SizeInMiB": 16384},
        "SupportedUsageClasses": ["on-demand", "spot"],
        "GpuInfo": {"Gpus": [{"Name": "T4", "Count": 1, "MemoryInfo": {"SizeInMiB": 16384}}]},
    }


def request_for(compute: AwsCompute, spec: ResourcesSpec, *, spot: bool) -> LaunchRequest:
    offer = compute.offers(spec, spot=spot)[0]
    return LaunchRequest(name="job-1", offer=offer, user_data="#!/bin/sh\n", tags={"a": "b"})


# --- errors ----------------------------------------------------------------------------------


CAPACITY = [
    "InsufficientInstanceCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "Unsupported",
]


@pytest.mark.parametrize("code", CAPACITY)
def test_capacity_errors_are_no_capacity(stubbed: tuple[AwsCompute, Stubber], code: str) -> None:
    compute, stubber = stubbed
    stubber.add_response("describe_instance_types", {"InstanceTypes": [described_type()]})
    request = request_for(compute, GPU, spot=True)
    stubber.add_client_error("run_instances", code, "We currently do not have capacity")
    with pytest.raises(NoCapacityError) as caught:
        compute.create(request)
    assert "backend 'aws-test'" in caught.value.message
    assert "create g4dn.xlarge (spot)" in caught.value.message
    assert code in caught.value.message


def test_other_errors_are_backend_errors(stubbed: tuple[AwsCompute, Stubber]) -> None:
    compute, stubber = stubbed
    stubber.add_response("describe_instance_types", {"InstanceTypes": [described_type()]})
    request = request_for(compute, GPU, spot=False)
    stubber.add_client_error("run_instances", "InvalidAMIID.NotFound", "no such AMI")
    with pytest.raises(BackendError) as caught:
        compute.create(request)
    assert not isinstance(caught.value, NoCapacityError | BackendAuthError)
    assert "InvalidAMIID.NotFound: no such AMI" in caught.value.message


@pytest.mark.parametrize(
    "code",
    ["AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch"],
)
def test_refused_credentials_are_auth_errors(
    stubbed: tuple[AwsCompute, Stubber], code: str
) -> None:
    compute, stubber = stubbed
    stubber.add_client_error("describe_regions", code, "refused", http_status_code=403)
    with pytest.raises(BackendAuthError) as caught:
        compute.check()
    assert "check the credentials" in caught.value.message
    assert caught.value.hint
    assert "IAM policy" in caught.value.hint


def test_an_unreachable_endpoint_is_a_backend_error() -> None:
    from tests.infra.postgres import free_port

    compute = AwsCompute(aws_config(f"http://127.0.0.1:{free_port()}"), FAKE_KEYS)
    try:
        with pytest.raises(BackendError) as caught:
            compute.check()
    finally:
        compute.close()
    assert not isinstance(caught.value, BackendAuthError)
    assert "cannot reach EC2" in caught.value.message


def test_a_server_error_is_tried_three_times_in_all() -> None:
    from botocore.awsrequest import AWSResponse

    from dstack.backends.aws.compute import make_client

    sent: list[str] = []

    class Body:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield b"<Response><Errors><Error><Code>InternalError</Code></Error></Errors></Response>"

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.url)
        return AWSResponse(request.url, 500, {}, Body())

    client = make_client(aws_config("http://127.0.0.1:9"), FAKE_KEYS)
    client.meta.events.register("before-send.ec2.DescribeRegions", answer)
    compute = AwsCompute(aws_config(None), FAKE_KEYS, client=client)
    try:
        with pytest.raises(BackendError, match="InternalError"):
            compute.check()
    finally:
        client.close()
    assert len(sent) == 3


def test_half_a_key_pair_is_refused() -> None:
    with pytest.raises(BackendAuthError):
        AwsCompute(aws_config(None), BackendCredentials(access_key_id="AKIA"))


def test_an_unknown_profile_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").write_text("[default]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with pytest.raises(BackendAuthError) as caught:
        AwsCompute(aws_config(None), BackendCredentials(profile="nobody"))
    assert "nobody" in caught.value.message


def test_a_region_without_prices_says_so(stubbed: tuple[AwsCompute, Stubber]) -> None:
    compute = AwsCompute(aws_config(None, region="ap-south-2"), FAKE_KEYS, client=stubbed[0]._ec2)
    with pytest.raises(BackendError) as caught:
        compute.offers(CPU)
    assert "ap-south-2" in caught.value.message
    assert caught.value.hint
    assert "refresh-aws-catalog.py" in caught.value.hint


# --- states ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("pending", InstanceState.PENDING),
        ("running", InstanceState.RUNNING),
        ("shutting-down", InstanceState.TERMINATING),
        ("stopping", InstanceState.TERMINATING),
        ("stopped", InstanceState.TERMINATED),
        ("terminated", InstanceState.TERMINATED),
    ],
)
def test_states(name: str, state: InstanceState) -> None:
    assert instance_state({"State": {"Name": name}}) == state


def test_a_spot_instance_taken_back_is_interrupted(stubbed: tuple[AwsCompute, Stubber]) -> None:
    compute, stubber = stubbed
    reason = {"Code": "Server.SpotInstanceTermination", "Message": "Spot instance termination"}
    instance = {
        "InstanceId": "i-0123456789abcdef0",
        "InstanceType": "g4dn.xlarge",
        "InstanceLifecycle": "spot",
        "State": {"Code": 32, "Name": "shutting-down"},
        "StateReason": reason,
        "LaunchTime": datetime(2026, 12, 1, tzinfo=UTC),
        "Tags": [{"Key": "Name", "Value": "job-1"}, {"Key": "a", "Value": "b"}],
    }
    stubber.add_response("describe_instances", {"Reservations": [{"Instances": [instance]}]})
    stubber.add_response("describe_instance_types", {"InstanceTypes": [described_type()]})
    described = compute.describe("i-0123456789abcdef0")
    assert described is not None
    assert described.state == InstanceState.INTERRUPTED
    assert (described.name, described.tags) == ("job-1", {"a": "b"})
    assert described.offer.spot
    assert described.offer.price > 0
    # an on-demand instance stopped for the same reason code is not "interrupted"
    assert instance_state({**instance, "InstanceLifecycle": None}) == InstanceState.TERMINATING


# --- offers ---------------------------------------------------------------------------------


def test_instance_types_are_described_once(stubbed: tuple[AwsCompute, Stubber]) -> None:
    compute, stubber = stubbed
    stubber.add_response("describe_instance_types", {"InstanceTypes": [described_type()]})
    first = compute.offers(GPU)
    assert compute.offers(GPU) == first  # no second answer queued: the Stubber would raise
    assert [(o.instance_type, o.spot) for o in first] == [
        ("g4dn.xlarge", True),
        ("g4dn.xlarge", False),
    ]
    prices = load_catalog().regions["us-east-1"].prices["g4dn.xlarge"]
    assert [o.price for o in first] == [prices.spot, prices.on_demand]


def test_a_type_without_spot_has_no_spot_offer(stubbed: tuple[AwsCompute, Stubber]) -> None:
    compute, stubber = stubbed
    on_demand_only = {**described_type(), "SupportedUsageClasses": ["on-demand"]}
    stubber.add_response("describe_instance_types", {"InstanceTypes": [on_demand_only]})
    assert compute.offers(GPU, spot=True) == []
    assert compute.offers(GPU, spot=False)


def test_the_catalog_fills_gpus_ec2_does_not_describe() -> None:
    known = CatalogType(
        cpus=8, memory_mib=62464, gpu=CatalogGpu(name="V100", memory_mib=16384, count=2)
    )
    resources = offer_resources({"VCpuInfo": {"DefaultVCpus": 8}}, known)
    assert resources.cpus == 8
    assert resources.memory_mib == 62464
    assert [(g.index, g.name, g.memory_mib) for g in resources.gpus] == [
        (0, "V100", 16384),
        (1, "V100", 16384),
    ]


@pytest.mark.ec2
def test_moto_offers_only_the_catalog_types_it_describes(make_aws: AwsFactory) -> None:
    offered = {o.instance_type for o in make_aws().offers(ResourcesSpec())}
    assert "p3.2xlarge" not in offered  # in the catalog, not in moto's EC2
    assert {"g4dn.xlarge", "p4d.24xlarge", "t3.medium"} <= offered
    assert offered <= set(load_catalog().regions["us-east-1"].prices)


# --- what create sends (read back from moto) --------------------------------------------------


def _raw(moto: MotoServer, instance_id: str, region: str = "us-east-1") -> dict[str, Any]:
    ec2 = moto.ec2_client(region)
    try:
        reply = ec2.describe_instances(InstanceIds=[instance_id])
        return dict(reply["Reservations"][0]["Instances"][0])
    finally:
        ec2.close()


@pytest.mark.ec2
@pytest.mark.parametrize(("spec", "kind"), [(CPU, "cpu"), (GPU, "gpu")])
def test_the_catalog_ami_matches_the_machine(
    make_aws: AwsFactory, moto_ec2: MotoServer, spec: ResourcesSpec, kind: str
) -> None:
    compute = make_aws(region="eu-west-1")
    instance = compute.create(request_for(compute, spec, spot=False))
    raw = _raw(moto_ec2, instance.id, "eu-west-1")
    compute.terminate(instance.id)
    amis = load_catalog().regions["eu-west-1"].amis
    assert raw["ImageId"] == (amis.gpu if kind == "gpu" else amis.cpu)
    assert raw["MetadataOptions"]["HttpTokens"] == "required"
    assert {"Key": "Name", "Value": "job-1"} in raw["Tags"]
    assert {"Key": "a", "Value": "b"} in raw["Tags"]


@pytest.mark.ec2
def test_the_backends_ami_and_subnet_are_used(make_aws: AwsFactory, moto_ec2: MotoServer) -> None:
    ec2 = moto_ec2.ec2_client("us-west-2")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    ec2.close()
    compute = make_aws(region="us-west-2", ami="ami-0123456789abcdef0", subnet=subnet)
    instance = compute.create(request_for(compute, GPU, spot=True))
    raw = _raw(moto_ec2, instance.id, "us-west-2")
    compute.terminate(instance.id)
    assert (raw["ImageId"], raw["SubnetId"]) == ("ami-0123456789abcdef0", subnet)
    assert raw["InstanceLifecycle"] == "spot"


@pytest.mark.ec2
def test_an_offer_of_another_backend_is_refused(make_aws: AwsFactory) -> None:
    compute = make_aws()
    request = request_for(compute, CPU, spot=False)
    other = request.offer.model_copy(update={"region": "eu-west-1"})
    with pytest.raises(BackendError, match="cannot create an offer"):
        compute.create(request.model_copy(update={"offer": other}))


def test_user_data_over_16_kb_is_refused(stubbed: tuple[AwsCompute, Stubber]) -> None:
    compute, stubber = stubbed
    stubber.add_response("describe_instance_types", {"InstanceTypes": [described_type()]})
    request = request_for(compute, GPU, spot=False)
    with pytest.raises(BackendError, match="over 16384 bytes"):
        compute.create(request.model_copy(update={"user_data": "#" * 16385}))
