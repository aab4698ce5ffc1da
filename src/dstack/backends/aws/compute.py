"""`AwsCompute`: EC2 instances in one region of one account, on boto3.

Offers are the instance types EC2 describes in the region (`describe_instance_types`, read
once per object) that the price catalog (`catalog.json`) has a price for. Instances boot the
catalog's default AMI for the region (a Deep Learning AMI for GPU types, Ubuntu for CPU
types) unless the backend names its own (`--ami`), with the launch request's user data,
IMDSv2 required, and terminate (not stop) when they shut themselves down. Spot instances
are one-time requests that terminate on interruption.

Every call blocks (boto3 retries in "standard" mode, 3 attempts); the server runs them in a
thread. boto3 clients are thread-safe, and so is this class.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

import dstack
from dstack.backends.aws.catalog import Catalog, CatalogPrice, CatalogType, load_catalog
from dstack.backends.aws.errors import NOT_FOUND_CODES, error_code, translate
from dstack.backends.base import BackendAuthError
from dstack.backends.offers import select
from dstack.errors import BackendError
from dstack.models.backends import (
    BackendConfig,
    BackendCredentials,
    CloudInstance,
    InstanceOffer,
    InstanceState,
    LaunchRequest,
    OfferResources,
)
from dstack.models.resources import GpuInfo, ResourcesSpec

# EC2 takes at most 16 KB of user data (before base64).
MAX_USER_DATA = 16 * 1024
SPOT_TERMINATION = "Server.SpotInstanceTermination"
NAME_TAG = "Name"
_AWS_ERRORS = (ClientError, BotoCoreError)

_STATES = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "shutting-down": InstanceState.TERMINATING,
    "stopping": InstanceState.TERMINATING,
    "stopped": InstanceState.TERMINATED,
    "terminated": InstanceState.TERMINATED,
}
# `list_instances`: what a crashed server may have left behind (stopped ones cost disk).
_LISTED_STATES = ["pending", "running", "stopping", "stopped"]


class AwsCompute:
    """One AWS backend: `config.region` of the account `credentials` open.

    `client` (a boto3 EC2 client) and `catalog` are injected by tests; by default a client
    is made from the credentials (keys, else a profile of the server's AWS configuration,
    else boto3's default chain) for `config.endpoint_url` (moto in tests), and the
    package's catalog is used.
    """

    def __init__(
        self,
        config: BackendConfig,
        credentials: BackendCredentials,
        *,
        client: Any = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.catalog = catalog if catalog is not None else load_catalog()
        self.prices_as_of: str | None = self.catalog.as_of
        self._owns_client = client is None
        self._ec2 = client if client is not None else make_client(config, credentials)
        self._types: dict[str, dict[str, Any]] = {}  # describe_instance_types, by name
        self._types_loaded = False
        self._lock = threading.Lock()

    # --- Compute --------------------------------------------------------------------------

    def check(self) -> None:
        """`describe_regions` for the backend's region: read-only, needs the credentials."""
        with self._translated("check the credentials"):
            self._ec2.describe_regions(RegionNames=[self.config.region])

    def offers(self, request: ResourcesSpec, *, spot: bool | None = None) -> list[InstanceOffer]:
        return select(self._all_offers(), request, spot=spot)

    def create(self, request: LaunchRequest) -> CloudInstance:
        offer = request.offer
        if offer.backend != self.name or offer.region != self.config.region:
            raise BackendError(
                f"backend '{self.name}' (aws, {self.config.region}): cannot create an offer "
                f"of backend '{offer.backend}' in {offer.region}"
            )
        params = self._run_params(request)
        market = "spot" if offer.spot else "on-demand"
        with self._translated(f"create {offer.instance_type} ({market})"):
            reply = self._ec2.run_instances(**params)
        return self._instance(reply["Instances"][0])

    def describe(self, instance_id: str) -> CloudInstance | None:
        """None for an id EC2 does not know (or that is not an instance id); EC2 keeps a
        terminated instance about an hour, described as `TERMINATED`."""
        try:
            reply = self._ec2.describe_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES or error_code(exc).endswith(".Malformed"):
                return None
            raise translate(exc, self.name, f"describe {instance_id}") from exc
        except BotoCoreError as exc:
            raise translate(exc, self.name, f"describe {instance_id}") from exc
        found = [i for r in reply["Reservations"] for i in r["Instances"]]
        return self._instance(found[0]) if found else None

    def list_instances(self, tags: Mapping[str, str]) -> list[CloudInstance]:
        """Pending, running, stopping and stopped instances with all of `tags`: everything
        that still costs and was not asked to terminate (a stopped one keeps its disk)."""
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        filters.append({"Name": "instance-state-name", "Values": _LISTED_STATES})
        with self._translated("list instances"):
            raw = list(self._paginate("describe_instances", "Reservations", Filters=filters))
        return [self._instance(i) for r in raw for i in r["Instances"]]

    def terminate(self, instance_id: str) -> None:
        """`InvalidInstanceID.NotFound` (already gone) is success; terminating a terminated
        instance is too (EC2 answers it)."""
        try:
            self._ec2.terminate_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return
            raise translate(exc, self.name, f"terminate {instance_id}") from exc
        except BotoCoreError as exc:
            raise translate(exc, self.name, f"terminate {instance_id}") from exc

    def close(self) -> None:
        """Close the connections of the client this object made (not of an injected one)."""
        if self._owns_client:
            self._ec2.close()

    # --- offers ---------------------------------------------------------------------------

    def _all_offers(self) -> list[InstanceOffer]:
        prices = self.catalog.region(self.config.region).prices
        types = self._instance_types()
        return [
            offer
            for name, price in prices.items()
            if name in types
            for offer in self._priced(name, types[name], price)
        ]

    def _priced(
        self, name: str, described: dict[str, Any], price: CatalogPrice
    ) -> Iterator[InstanceOffer]:
        resources = offer_resources(described, self.catalog.instance_types.get(name))
        yield self._offer(name, resources, spot=False, price=price.on_demand)
        if price.spot is not None and "spot" in described.get("SupportedUsageClasses", []):
            yield self._offer(name, resources, spot=True, price=price.spot)

    def _offer(
        self, name: str, resources: OfferResources, *, spot: bool, price: float
    ) -> InstanceOffer:
        return InstanceOffer(
            backend=self.name,
            instance_type=name,
            region=self.config.region,
            spot=spot,
            price=price,
            resources=resources,
        )

    def _instance_types(self) -> dict[str, dict[str, Any]]:
        """The catalog's types EC2 describes in the region (once; then from memory)."""
        with self._lock:
            if not self._types_loaded:
                names = sorted(self.catalog.region(self.config.region).prices)
                self._types.update(self._describe_types(names))
                self._types_loaded = True
            return dict(self._types)

    def _describe_types(self, names: list[str]) -> dict[str, dict[str, Any]]:
        filters = [{"Name": "instance-type", "Values": names}]
        with self._translated("list instance types"):
            pages = self._paginate("describe_instance_types", "InstanceTypes", Filters=filters)
            return {t["InstanceType"]: t for t in pages}

    def _offer_of(self, name: str, spot: bool) -> InstanceOffer:
        """The offer an existing instance was made from (price 0 when the catalog has none)."""
        with self._lock:
            described = self._types.get(name)
        if described is None:
            described = self._describe_types([name]).get(name, {})
            with self._lock:
                self._types[name] = described
        resources = offer_resources(described, self.catalog.instance_types.get(name))
        price = self.catalog.regions.get(self.config.region)
        known = price.prices.get(name) if price is not None else None
        amount = (known.spot if spot else known.on_demand) if known is not None else None
        return self._offer(name, resources, spot=spot, price=amount or 0.0)

    # --- instances ------------------------------------------------------------------------

    def _run_params(self, request: LaunchRequest) -> dict[str, Any]:
        offer = request.offer
        if len(request.user_data.encode()) > MAX_USER_DATA:
            raise BackendError(
                f"backend '{self.name}' (aws): the user data is over {MAX_USER_DATA} bytes"
            )
        tags = [{"Key": k, "Value": v} for k, v in request.tags.items() if k != NAME_TAG]
        tags.append({"Key": NAME_TAG, "Value": request.name})
        params: dict[str, Any] = {
            "ImageId": self._ami(offer),
            "InstanceType": offer.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "UserData": request.user_data,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if self.config.subnet:
            params["SubnetId"] = self.config.subnet
        if offer.spot:
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        return params

    def _ami(self, offer: InstanceOffer) -> str:
        if self.config.ami:
            return self.config.ami
        amis = self.catalog.region(self.config.region).amis
        return amis.gpu if offer.resources.gpus else amis.cpu

    def _instance(self, raw: dict[str, Any]) -> CloudInstance:
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        launched = raw.get("LaunchTime") or datetime.now(UTC)
        return CloudInstance(
            id=raw["InstanceId"],
            name=tags.pop(NAME_TAG, raw["InstanceId"]),
            offer=self._offer_of(raw["InstanceType"], raw.get("InstanceLifecycle") == "spot"),
            state=instance_state(raw),
            tags=tags,
            created_at=(launched if launched.tzinfo else launched.replace(tzinfo=UTC)).astimezone(
                UTC
            ),
        )

    # --- boto3 ----------------------------------------------------------------------------

    def _paginate(self, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        for page in self._ec2.get_paginator(operation).paginate(**kwargs):
            yield from page.get(key, [])

    def _translated(self, action: str) -> AbstractContextManager[None]:
        return translated(self.name, action)


@contextlib.contextmanager
def translated(backend: str, action: str) -> Iterator[None]:
    """Within it, boto3's errors become the project's (`errors.translate`)."""
    try:
        yield
    except _AWS_ERRORS as exc:
        raise translate(exc, backend, action) from exc


def instance_state(raw: Mapping[str, Any]) -> InstanceState:
    """EC2's state of an instance in the project's words; a spot instance EC2 took back
    (`StateReason` `Server.SpotInstanceTermination`) is `INTERRUPTED`."""
    reason = raw.get("StateReason") or {}
    if raw.get("InstanceLifecycle") == "spot" and reason.get("Code") == SPOT_TERMINATION:
        return InstanceState.INTERRUPTED
    return _STATES.get(raw.get("State", {}).get("Name", ""), InstanceState.PENDING)


def offer_resources(described: Mapping[str, Any], known: CatalogType | None) -> OfferResources:
    """A machine from `describe_instance_types`; what it lacks (GPUs on an emulator, or
    the whole type) comes from the catalog."""
    cpus = described.get("VCpuInfo", {}).get("DefaultVCpus") or (known.cpus if known else 0)
    memory = described.get("MemoryInfo", {}).get("SizeInMiB") or (known.memory_mib if known else 0)
    return OfferResources(cpus=cpus, memory_mib=memory, gpus=_gpus(described, known))


def _gpus(described: Mapping[str, Any], known: CatalogType | None) -> list[GpuInfo]:
    listed = described.get("GpuInfo", {}).get("Gpus", [])
    pairs = [
        (g["Name"], g.get("MemoryInfo", {}).get("SizeInMiB", 0))
        for g in listed
        for _ in range(g.get("Count", 1))
    ]
    if not pairs and known is not None and known.gpu is not None:
        pairs = [(known.gpu.name, known.gpu.memory_mib)] * known.gpu.count
    return [GpuInfo(index=i, name=name, memory_mib=mib) for i, (name, mib) in enumerate(pairs)]


def make_client(config: BackendConfig, credentials: BackendCredentials) -> Any:
    """A boto3 EC2 client for the backend (no API call is made)."""
    try:
        session = _session(credentials, config.region)
    except BotoCoreError as exc:
        raise translate(exc, config.name, "open the AWS session") from exc
    return session.client(
        "ec2",
        endpoint_url=config.endpoint_url,
        config=BotoConfig(
            retries={"mode": "standard", "total_max_attempts": 3},  # the first one included
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra=f"dstack/{dstack.__version__}",
        ),
    )


def _session(credentials: BackendCredentials, region: str) -> Any:
    keys = (credentials.access_key_id, credentials.secret_access_key)
    if any(keys):
        if not all(keys):
            raise BackendAuthError(
                "AWS credentials need both an access key id and a secret access key"
            )
        return boto3.session.Session(
            aws_access_key_id=keys[0], aws_secret_access_key=keys[1], region_name=region
        )
    if credentials.profile:
        return boto3.session.Session(profile_name=credentials.profile, region_name=region)
    return boto3.session.Session(region_name=region)
