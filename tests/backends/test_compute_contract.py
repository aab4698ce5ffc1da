"""One contract, every `Compute`: the in-memory twin and AWS (against moto_server as EC2).

What only a cloud can show (the instance's lifecycle, its user data) is read back from the
cloud itself through `Subject`, not through the `Compute` under test.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import pytest
from tests.infra.moto import MotoServer

from dstack.backends.base import BackendAuthError, Compute
from dstack.backends.memory import MemoryCompute
from dstack.backends.offers import fits
from dstack.models.backends import CloudInstance, InstanceOffer, InstanceState, LaunchRequest
from dstack.models.resources import GpuRequest, ResourcesSpec

from .conftest import AwsFactory

SMALL = ResourcesSpec(cpu=2, memory_mib=4096)
T4 = ResourcesSpec(gpu=GpuRequest(count=1, name="t4"))
ALIVE = {InstanceState.PENDING, InstanceState.RUNNING}
GONE = {InstanceState.TERMINATING, InstanceState.TERMINATED}


@dataclass
class Subject:
    compute: Compute
    never_existed: str  # an id of the cloud's shape that no instance has
    user_data: Callable[[str], str]  # as the cloud keeps it
    is_spot: Callable[[str], bool]  # as the cloud says
    refusing_credentials: Callable[[], AbstractContextManager[None]]


def _memory() -> Subject:
    compute = MemoryCompute()

    def user_data(instance_id: str) -> str:
        name = compute.instances[instance_id].name
        return next(r.user_data for r in compute.launches if r.name == name)

    @contextlib.contextmanager
    def refusing() -> Iterator[None]:
        compute.refuse_credentials = True
        try:
            yield
        finally:
            compute.refuse_credentials = False

    return Subject(
        compute,
        "m-7fffffff",
        user_data,
        lambda i: compute.instances[i].offer.spot,
        refusing,
    )


def _aws(request: pytest.FixtureRequest) -> Iterator[Subject]:
    moto: MotoServer = request.getfixturevalue("moto_ec2")
    make: AwsFactory = request.getfixturevalue("make_aws")
    ec2 = moto.ec2_client("us-east-1")

    def user_data(instance_id: str) -> str:
        reply = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        return base64.b64decode(reply["UserData"]["Value"]).decode()

    def is_spot(instance_id: str) -> bool:
        reply = ec2.describe_instances(InstanceIds=[instance_id])
        return bool(reply["Reservations"][0]["Instances"][0].get("InstanceLifecycle") == "spot")

    yield Subject(make(), "i-0123456789abcdef0", user_data, is_spot, moto.refusing_credentials)
    ec2.close()


@pytest.fixture(params=["memory", pytest.param("aws", marks=pytest.mark.ec2)])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "memory":
        yield _memory()
    else:
        yield from _aws(request)


@pytest.fixture
def tags() -> dict[str, str]:
    """Tags no other test's instances carry (moto is shared by the session)."""
    return {"dstack-test": uuid.uuid4().hex, "dstack-backend": "contract"}


def launch(
    subject: Subject, tags: dict[str, str], *, spot: bool = False, user_data: str = "#!/bin/sh\n"
) -> CloudInstance:
    offer = subject.compute.offers(SMALL, spot=spot)[0]
    name = f"contract-{uuid.uuid4().hex[:8]}"
    return subject.compute.create(
        LaunchRequest(name=name, offer=offer, user_data=user_data, tags=tags)
    )


def prices(offers: list[InstanceOffer]) -> list[float]:
    return [o.price for o in offers]


# --- offers -------------------------------------------------------------------------------


def test_offers_fit_and_come_cheapest_first(subject: Subject) -> None:
    offers = subject.compute.offers(SMALL)
    assert offers
    assert all(fits(SMALL, o.resources) for o in offers)
    assert prices(offers) == sorted(prices(offers))
    assert {o.spot for o in offers} == {True, False}  # both markets when none is asked


def test_offers_respect_the_market(subject: Subject) -> None:
    spot = subject.compute.offers(SMALL, spot=True)
    on_demand = subject.compute.offers(SMALL, spot=False)
    assert spot
    assert all(o.spot for o in spot)
    assert on_demand
    assert not any(o.spot for o in on_demand)
    listed = {o.instance_type: o.price for o in on_demand}
    assert all(o.price < listed[o.instance_type] for o in spot if o.instance_type in listed)


def test_gpu_offers_have_the_gpu(subject: Subject) -> None:
    offers = subject.compute.offers(T4)
    assert offers
    assert all(any(g.name.upper() == "T4" for g in o.resources.gpus) for o in offers)


def test_nothing_fits_an_impossible_request(subject: Subject) -> None:
    assert subject.compute.offers(ResourcesSpec(cpu=100_000)) == []


def test_offers_carry_their_prices_date_or_none(subject: Subject) -> None:
    as_of = subject.compute.prices_as_of
    assert as_of is None or len(as_of) == len("2026-11-30")


# --- instances ----------------------------------------------------------------------------


def test_create_describe_list_terminate(subject: Subject, tags: dict[str, str]) -> None:
    compute = subject.compute
    instance = launch(subject, tags)
    assert instance.state in ALIVE
    assert instance.tags == tags
    described = compute.describe(instance.id)
    assert described is not None
    assert described.state in ALIVE
    assert described.name == instance.name
    assert described.offer.instance_type == instance.offer.instance_type
    assert described.offer.spot is False
    assert [i.id for i in compute.list_instances(tags)] == [instance.id]

    compute.terminate(instance.id)
    after = compute.describe(instance.id)
    assert after is None or after.state in GONE
    assert compute.list_instances(tags) == []
    compute.terminate(instance.id)  # again: not an error


def test_list_instances_needs_every_tag(subject: Subject, tags: dict[str, str]) -> None:
    first = launch(subject, tags)
    other = launch(subject, {**tags, "dstack-backend": "another"})
    try:
        assert [i.id for i in subject.compute.list_instances(tags)] == [first.id]
        assert [i.id for i in subject.compute.list_instances(other.tags)] == [other.id]
        both = subject.compute.list_instances({"dstack-test": tags["dstack-test"]})
        assert sorted(i.id for i in both) == sorted([first.id, other.id])
    finally:
        subject.compute.terminate(first.id)
        subject.compute.terminate(other.id)


def test_an_unknown_instance_is_gone(subject: Subject) -> None:
    assert subject.compute.describe(subject.never_existed) is None
    subject.compute.terminate(subject.never_existed)  # not an error


def test_a_spot_offer_makes_a_spot_instance(subject: Subject, tags: dict[str, str]) -> None:
    instance = launch(subject, tags, spot=True)
    assert instance.offer.spot is True
    assert subject.is_spot(instance.id)
    described = subject.compute.describe(instance.id)
    assert described is not None
    assert described.offer.spot is True
    subject.compute.terminate(instance.id)


def test_an_on_demand_offer_makes_an_on_demand_instance(
    subject: Subject, tags: dict[str, str]
) -> None:
    instance = launch(subject, tags, spot=False)
    assert not subject.is_spot(instance.id)
    subject.compute.terminate(instance.id)


def test_user_data_survives(subject: Subject, tags: dict[str, str]) -> None:
    script = "#!/bin/bash\nset -eu\necho 'dstack-runner start --name \"x y\"' > /tmp/é\n"
    instance = launch(subject, tags, user_data=script)
    assert subject.user_data(instance.id) == script
    subject.compute.terminate(instance.id)


# --- credentials --------------------------------------------------------------------------


def test_check_accepts_good_credentials(subject: Subject) -> None:
    subject.compute.check()


def test_check_refuses_refused_credentials(subject: Subject) -> None:
    with subject.refusing_credentials(), pytest.raises(BackendAuthError) as caught:
        subject.compute.check()
    assert caught.value.message  # says what happened
