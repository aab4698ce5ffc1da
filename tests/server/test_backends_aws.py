"""An AWS backend added against moto_server as EC2: the real `AwsCompute` checks the
credentials with a real call, and its offers come from `describe_instance_types`."""

from __future__ import annotations

import pytest
from tests.infra.moto import MotoServer

from dstack.models.backends import BackendConfig, BackendCredentials, BackendType
from dstack.models.backends_api import AddBackendRequest
from dstack.models.resources import GpuRequest, ResourcesSpec
from dstack.server.app import running_context
from dstack.server.services import backends as service
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

from .conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_an_aws_backend_is_checked_and_offers_gpus(
    settings: ServerSettings, clock: FakeClock, moto_s3: MotoServer
) -> None:
    config = BackendConfig(
        name="aws", type=BackendType.AWS, region="us-east-1", endpoint_url=moto_s3.endpoint
    )
    keys = BackendCredentials(access_key_id="testing", secret_access_key="testing")
    async with running_context(
        settings, blobs=MemoryBlobStore(), clock=clock, background=False
    ) as ctx:
        added = await service.add_backend(
            ctx, request=AddBackendRequest(config=config, credentials=keys), created_by="alice"
        )
        answer = await service.offers(ctx, ResourcesSpec(gpu=GpuRequest(count=1, name="T4")))

    assert (added.config.endpoint_url, added.auth) == (moto_s3.endpoint, "access keys")
    assert answer.backends[0].error is None
    assert answer.offers
    assert all(o.resources.gpus[0].name == "T4" for o in answer.offers)
