"""Fixtures of the backend tests: moto_server as EC2 (one per session), and an `AwsCompute`
on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from tests.infra.fixtures import moto_ec2, moto_s3
from tests.infra.moto import CREDENTIALS, MotoServer

from dstack.backends.aws.compute import AwsCompute
from dstack.models.backends import BackendConfig, BackendCredentials, BackendType

__all__ = ["moto_ec2", "moto_s3"]  # fixtures, shared with this folder's tests

AwsFactory = Callable[..., AwsCompute]


def aws_config(endpoint: str | None, **fields: object) -> BackendConfig:
    values: dict[str, object] = {"name": "aws-test", "type": BackendType.AWS}
    values["region"] = "us-east-1"
    values["endpoint_url"] = endpoint
    values.update(fields)
    return BackendConfig.model_validate(values)


FAKE_KEYS = BackendCredentials(
    access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
    secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
)


@pytest.fixture
def make_aws(moto_ec2: MotoServer) -> Iterator[AwsFactory]:
    """`make_aws(region=..., ami=..., subnet=...)`: an `AwsCompute` on moto, closed at the
    end of the test."""
    made: list[AwsCompute] = []

    def make(**fields: object) -> AwsCompute:
        compute = AwsCompute(aws_config(moto_ec2.endpoint, **fields), FAKE_KEYS)
        made.append(compute)
        return compute

    yield make
    for compute in made:
        compute.close()
