"""Request and response bodies of the backend endpoints (`/api/backends`, `/api/offers`;
docs/api.md, "Cloud backends and offers"). Credentials go in, never out: `BackendInfo` has
none."""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from dstack.models.backends import BackendConfig, BackendCredentials, BackendType, InstanceOffer
from dstack.models.bounds import INT32_MAX
from dstack.models.common import Model
from dstack.models.names import check_name_message, name_problem
from dstack.models.resources import ResourcesSpec

OFFERS_MAX = 1000
"""Offers one answer lists at most (cheapest first)."""
_REGION = re.compile(r"[a-z0-9][a-z0-9-]*")
_CLOUD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds of `5m`, `300s`, `1h`, `1d` or a bare number of seconds; `ValueError` else."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a duration such as 300s, 5m or 1h")
    number, unit = match.groups()
    return float(number) * _SECONDS[(unit or "").lower()]


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as an http(s) endpoint (None: nothing)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 — raises ValueError on a port out of range
    except ValueError:
        return f"'{url}' is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"'{url}' is not an http:// or https:// URL"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "a URL must not carry a user, a password, a query or a fragment"
    return None


class AddBackendRequest(Model):
    """`POST /api/backends`: a backend's settings and its credentials (kept on the server,
    encrypted, never shown back). No credentials at all: the server's own default chain."""

    config: BackendConfig
    credentials: BackendCredentials = Field(default_factory=BackendCredentials)

    @field_validator("config")
    @classmethod
    def _check_config(cls, config: BackendConfig) -> BackendConfig:
        if name_problem(config.name) is not None:
            raise ValueError(check_name_message(config.name, "backend"))
        if not _REGION.fullmatch(config.region):
            raise ValueError(f"invalid region '{config.region}': use lowercase letters, digits, -")
        if config.endpoint_url is not None and (problem := url_problem(config.endpoint_url)):
            raise ValueError(problem)
        for what, value in (("subnet", config.subnet), ("ami", config.ami)):
            if value is not None and not _CLOUD_ID.fullmatch(value):
                raise ValueError(f"invalid {what} '{value}': expected an id such as {what}-0abc")
        return config

    @model_validator(mode="after")
    def _check_credentials(self) -> AddBackendRequest:
        creds = self.credentials
        keys = (creds.access_key_id is not None, creds.secret_access_key is not None)
        if keys[0] != keys[1]:
            raise ValueError("give both an access key id and a secret access key, or neither")
        if keys[0] and creds.profile is not None:
            raise ValueError("give either access keys or a profile, not both")
        for value in (creds.access_key_id, creds.secret_access_key, creds.profile):
            if value is not None and (not value or not value.isprintable() or " " in value):
                # The value itself is never repeated: the answer could be logged.
                raise ValueError("a credential is empty or holds blanks or control characters")
        return self


class BackendInfo(Model):
    """A configured backend as admins see it: its settings, never its credentials."""

    config: BackendConfig
    auth: str = Field(
        description="Where its credentials come from: `access keys`, `profile NAME` or "
        "`default` (the server's own credential chain). Never the credentials themselves."
    )
    instances: int = Field(description="Its instances not yet terminated.")
    created_by: str
    created_at: datetime


class OffersRequest(Model):
    """`POST /api/offers`: the machines the configured backends offer for `resources`."""

    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    spot: bool | None = Field(None, description="True: spot only; False: on-demand only.")
    max_price: float | None = Field(None, gt=0, le=10_000, description="USD per hour.")
    limit: int = Field(100, ge=1, le=OFFERS_MAX, description="Offers listed at most.")

    @field_validator("resources")
    @classmethod
    def _bounded(cls, spec: ResourcesSpec) -> ResourcesSpec:
        # `ResourcesSpec` is the workflows' model; a request bounds it further.
        if (spec.cpu or 0) > 100_000 or (spec.memory_mib or 0) > INT32_MAX:
            raise ValueError("cpu is at most 100000 and memory at most 2 PiB")
        gpu = spec.gpu
        if gpu is not None and (
            gpu.count > 1024 or len(gpu.name or "") > 100 or (gpu.memory_mib or 0) > INT32_MAX
        ):
            raise ValueError("gpu: at most 1024 GPUs, a name of 100 characters, 2 PiB each")
        return spec


class BackendOffers(Model):
    """How one backend answered an offers request."""

    name: str
    type: BackendType
    region: str
    prices_as_of: str | None = Field(
        None, description="The date of the price catalog; None: the cloud's live prices."
    )
    offers: int = Field(0, description="Offers of this backend that fit (before `limit`).")
    error: str | None = Field(None, description="Why it gave none, when it failed.")


class OffersResponse(Model):
    offers: list[InstanceOffer] = Field(description="Cheapest first, at most `limit`.")
    total: int = Field(description="Offers that fit, before `limit`.")
    backends: list[BackendOffers]
