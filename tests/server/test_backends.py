"""Configuring cloud backends on a server, and the offers they make: the service, then the
HTTP surface (who may call what, bounds, error codes). Every backend is a `MemoryCompute`
twin injected through `compute_factory`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from dstack.errors import BackendError, ConflictError, NotFoundError
from dstack.models.protocol import CreateUserRequest
from dstack.models.resources import GpuRequest, ResourcesSpec
from dstack.server.app import create_app, running_context
from dstack.server.context import ServerContext
from dstack.server.db.models import BackendRow, InstanceRow
from dstack.server.errors import InvalidRequestError
from dstack.server.services import backends as service
from dstack.server.services import users as user_service
from dstack.server.services.secrets import cipher
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

from .backend_twins import SECRET, Twins, aws_body, aws_request, instance_row, text_of
from .conftest import FakeClock

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": "Bearer secret-token"}


@pytest.fixture
def twins() -> Twins:
    return Twins()


@pytest.fixture
async def bctx(
    settings: ServerSettings, clock: FakeClock, twins: Twins
) -> AsyncIterator[ServerContext]:
    async with running_context(
        settings, blobs=MemoryBlobStore(), clock=clock, background=False, compute_factory=twins
    ) as context:
        yield context


async def stored_rows(ctx: ServerContext) -> list[str]:
    async with ctx.read() as session:
        rows = (await session.execute(text("SELECT * FROM backends"))).mappings().all()
    return [text_of(dict(row)) for row in rows]


# --- the service ---------------------------------------------------------------------------------


async def test_added_backend_is_listed_without_its_credentials(
    bctx: ServerContext, twins: Twins
) -> None:
    added = await service.add_backend(bctx, request=aws_request(), created_by="alice")

    listed = await service.list_backends(bctx)
    assert [(b.config.name, b.config.region, b.auth, b.instances) for b in listed] == [
        ("aws", "us-east-1", "access keys", 0)
    ]
    assert listed[0].created_by == "alice"
    for answer in (added, *listed):
        assert SECRET not in answer.model_dump_json()
    rows = await stored_rows(bctx)
    assert len(rows) == 1
    assert SECRET not in rows[0]
    assert "AKIAEXAMPLE" not in rows[0]
    async with bctx.read() as session:
        row = await session.get(BackendRow, "aws")
    assert row is not None
    assert SECRET in cipher(bctx.settings).decrypt(row.credentials.encode()).decode()
    assert [t.credentials.secret_access_key for t in twins.built] == [SECRET]


async def test_a_taken_name_is_a_conflict_and_the_cloud_is_not_asked(
    bctx: ServerContext, twins: Twins
) -> None:
    await service.add_backend(bctx, request=aws_request(), created_by="alice")

    with pytest.raises(ConflictError, match="backend 'aws' already exists"):
        await service.add_backend(bctx, request=aws_request(region="eu-west-1"), created_by="a")

    assert len(twins.built) == 1
    assert [b.config.region for b in await service.list_backends(bctx)] == ["us-east-1"]


async def test_refused_credentials_store_nothing_and_never_echo_the_secret(
    bctx: ServerContext, twins: Twins
) -> None:
    twins.refuse.add("aws")

    with pytest.raises(InvalidRequestError) as refused:
        await service.add_backend(bctx, request=aws_request(), created_by="alice")

    assert "was not able to validate the provided access credentials" in refused.value.message
    assert SECRET not in str(refused.value)
    assert refused.value.__cause__ is None
    assert await stored_rows(bctx) == []
    assert twins.built[0].closed
    assert bctx.computes == {}


async def test_an_unreachable_cloud_stores_nothing(bctx: ServerContext, twins: Twins) -> None:
    twins.unreachable.add("aws")

    with pytest.raises(BackendError, match="could not connect"):
        await service.add_backend(bctx, request=aws_request(), created_by="alice")

    assert await stored_rows(bctx) == []


async def test_a_backend_module_that_fails_is_a_backend_error(
    bctx: ServerContext, twins: Twins
) -> None:
    twins.buggy.add("aws")

    with pytest.raises(BackendError, match=r"checking the credentials failed \(KeyError\)"):
        await service.add_backend(bctx, request=aws_request(), created_by="alice")

    assert await stored_rows(bctx) == []


async def test_delete_is_refused_while_an_instance_is_alive(bctx: ServerContext) -> None:
    await service.add_backend(bctx, request=aws_request(), created_by="alice")
    async with bctx.transaction() as session:
        session.add(instance_row("aws", "ready", name="i-ready"))
        session.add(instance_row("aws", "terminated", name="i-gone"))

    assert [b.instances for b in await service.list_backends(bctx)] == [1]
    with pytest.raises(ConflictError, match="still has 1 instance") as refused:
        await service.delete_backend(bctx, name="aws")
    assert "idle instances" in (refused.value.hint or "")

    async with bctx.transaction() as session:
        row = await session.scalar(select(InstanceRow).filter_by(id="i-ready"))
        assert row is not None
        row.state = "terminated"
    await service.delete_backend(bctx, name="aws")
    assert await service.list_backends(bctx) == []
    with pytest.raises(NotFoundError):
        await service.delete_backend(bctx, name="aws")


async def test_configured_builds_each_compute_once_and_closes_dropped_ones(
    bctx: ServerContext, twins: Twins
) -> None:
    await service.add_backend(bctx, request=aws_request("a"), created_by="alice")
    await service.add_backend(bctx, request=aws_request("b"), created_by="alice")

    async with bctx.read() as session:
        first = await service.configured(bctx, session)
        again = await service.configured(bctx, session)
    assert [c.name for c, _ in first] == ["a", "b"]
    assert [id(x) for _, x in first] == [id(x) for _, x in again] == [id(t) for t in twins.built]

    await service.delete_backend(bctx, name="a")
    await service.add_backend(bctx, request=aws_request("a", region="eu-west-1"), created_by="x")
    async with bctx.read() as session:
        now = await service.configured(bctx, session)
    assert [(c.name, c.region) for c, _ in now] == [("a", "eu-west-1"), ("b", "us-east-1")]
    assert twins.built[0].closed
    assert not twins.built[1].closed
    assert now[0][1] is twins.built[2]

    await service.close_all(bctx)
    assert twins.alive() == []


async def test_a_backend_deleted_elsewhere_is_dropped_and_closed(
    bctx: ServerContext, twins: Twins
) -> None:
    await service.add_backend(bctx, request=aws_request(), created_by="alice")
    async with bctx.transaction() as session:  # another server on the same database
        await session.execute(text("DELETE FROM backends"))

    async with bctx.read() as session:
        assert await service.configured(bctx, session) == []
    assert twins.alive() == []


async def test_offers_are_cheapest_first_within_each_backends_price_limit(
    bctx: ServerContext, twins: Twins
) -> None:
    await service.add_backend(bctx, request=aws_request("cheap", max_price=1.0), created_by="a")
    await service.add_backend(bctx, request=aws_request("any"), created_by="a")

    answer = await service.offers(bctx, ResourcesSpec(cpu=4))

    prices = [o.price for o in answer.offers]
    assert prices == sorted(prices)
    assert {o.instance_type for o in answer.offers if o.backend == "cheap"} == {
        "cpu.large",
        "gpu.t4",
    }
    assert {o.instance_type for o in answer.offers if o.backend == "any"} >= {"gpu.a100x2"}
    assert [(b.name, b.prices_as_of, b.error) for b in answer.backends] == [
        ("any", "2026-11-30", None),
        ("cheap", "2026-11-30", None),
    ]
    assert answer.total == len(answer.offers)


async def test_offers_filter_market_price_and_gpus(bctx: ServerContext) -> None:
    await service.add_backend(bctx, request=aws_request(), created_by="alice")
    gpu = ResourcesSpec(gpu=GpuRequest(count=1, name="a100"))

    spot = await service.offers(bctx, gpu, spot=True)
    capped = await service.offers(bctx, ResourcesSpec(), spot=False, max_price=0.2)
    limited = await service.offers(bctx, ResourcesSpec(), limit=2)

    assert [(o.instance_type, o.spot) for o in spot.offers] == [("gpu.a100x2", True)]
    assert [o.instance_type for o in capped.offers] == ["cpu.small"]
    assert (len(limited.offers), limited.total) == (2, 8)


async def test_a_failing_backend_is_reported_and_the_others_answer(
    bctx: ServerContext, twins: Twins
) -> None:
    await service.add_backend(bctx, request=aws_request("good"), created_by="alice")
    await service.add_backend(bctx, request=aws_request("bad"), created_by="alice")
    twins.broken.add("bad")

    answer = await service.offers(bctx, ResourcesSpec())

    assert {o.backend for o in answer.offers} == {"good"}
    errors = {b.name: b.error for b in answer.backends}
    assert errors == {"bad": "backend 'bad': DescribeInstanceTypes failed", "good": None}


async def test_a_backend_whose_credentials_cannot_be_decrypted_is_left_out(
    settings: ServerSettings, clock: FakeClock, twins: Twins
) -> None:
    settings.secret_key = "one key"
    async with running_context(settings, clock=clock, background=False, compute_factory=twins) as c:
        await service.add_backend(c, request=aws_request(), created_by="alice")
    settings.secret_key = "another key"
    async with running_context(settings, clock=clock, background=False, compute_factory=twins) as c:
        async with c.read() as session:
            assert await service.configured(c, session) == []
        answer = await service.offers(c, ResourcesSpec())
        listed = await service.list_backends(c)
    assert "cannot be decrypted" in (answer.backends[0].error or "")
    assert listed[0].auth == "unreadable (the secret key changed)"


# --- HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
async def http(settings: ServerSettings, twins: Twins) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, blobs=MemoryBlobStore(), compute_factory=twins)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
    assert twins.alive() == []  # the server closed every compute when it stopped


async def user_headers(http: httpx.AsyncClient) -> dict[str, str]:
    ctx = http.app.state.ctx  # type: ignore[attr-defined]
    created = await user_service.create_user(ctx, request=CreateUserRequest(name="bob"))
    return {"Authorization": f"Bearer {created.token}"}


def body(name: str = "aws", **config: Any) -> dict[str, object]:
    return aws_body(name, **config)


async def test_http_add_list_delete(http: httpx.AsyncClient) -> None:
    added = await http.post("/api/backends", json=body(), headers=ADMIN)
    again = await http.post("/api/backends", json=body(), headers=ADMIN)
    listed = await http.get("/api/backends", headers=ADMIN)
    deleted = await http.delete("/api/backends/aws", headers=ADMIN)

    assert added.status_code == 201, added.text
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert listed.status_code == 200
    assert [b["config"]["name"] for b in listed.json()] == ["aws"]
    for answer in (added, listed):
        assert SECRET not in answer.text
        assert "secret_access_key" not in answer.text
    assert deleted.status_code == 204
    assert (await http.get("/api/backends", headers=ADMIN)).json() == []


async def test_http_refusals_map_to_4xx_and_5xx(http: httpx.AsyncClient, twins: Twins) -> None:
    twins.refuse.add("refused")
    twins.unreachable.add("away")

    refused = await http.post("/api/backends", json=body("refused"), headers=ADMIN)
    away = await http.post("/api/backends", json=body("away"), headers=ADMIN)

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid"
    assert SECRET not in refused.text
    assert "***" in refused.text
    assert away.status_code == 502
    assert away.json()["error"]["code"] == "backend"
    assert (await http.get("/api/backends", headers=ADMIN)).json() == []


async def test_only_admins_manage_backends(http: httpx.AsyncClient) -> None:
    user = await user_headers(http)
    await http.post("/api/backends", json=body(), headers=ADMIN)

    answers = [
        await http.post("/api/backends", json=body("mine"), headers=user),
        await http.get("/api/backends", headers=user),
        await http.delete("/api/backends/aws", headers=user),
        await http.get("/api/backends", headers={"Authorization": "Bearer runner-token"}),
    ]

    assert [a.status_code for a in answers] == [403, 403, 403, 403]
    assert len((await http.get("/api/backends", headers=ADMIN)).json()) == 1


async def test_users_may_ask_for_offers(http: httpx.AsyncClient) -> None:
    await http.post("/api/backends", json=body(), headers=ADMIN)
    user = await user_headers(http)

    answer = await http.post(
        "/api/offers", json={"resources": {"gpu": {"count": 1}}, "spot": True}, headers=user
    )
    runner = await http.post(
        "/api/offers", json={}, headers={"Authorization": "Bearer runner-token"}
    )

    assert answer.status_code == 200, answer.text
    assert [o["instance_type"] for o in answer.json()["offers"]] == ["gpu.t4", "gpu.a100x2"]
    assert SECRET not in answer.text
    assert runner.status_code == 403


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/api/backends", body("../etc")),
        ("/api/backends", body("x" * 101)),
        ("/api/backends", body(region="us east 1")),
        ("/api/backends", body(endpoint_url="file:///etc/passwd")),
        ("/api/backends", body(endpoint_url="http://user:pw@host")),
        ("/api/backends", {**body(), "credentials": {"access_key_id": "AKIA"}}),
        (
            "/api/backends",
            {
                **body(),
                "credentials": {"profile": "p", "access_key_id": "a", "secret_access_key": "s"},
            },
        ),
        ("/api/backends", body(limits={"max_instances": 10**9})),
        ("/api/offers", {"limit": 5000}),
        ("/api/offers", {"max_price": -1}),
        ("/api/offers", {"resources": {"cpu": 10**12}}),
        ("/api/offers", {"resources": {"gpu": {"count": 10**6}}}),
        ("/api/offers", {"resources": {"gpu": {"name": "x" * 1000}}}),
    ],
)
async def test_bad_requests_are_422(
    http: httpx.AsyncClient, path: str, payload: dict[str, object]
) -> None:
    answer = await http.post(path, json=payload, headers=ADMIN)

    assert answer.status_code == 422, answer.text
    assert (await http.get("/api/backends", headers=ADMIN)).json() == []


@pytest.mark.parametrize("path", ["/api/backends", "/api/offers"])
async def test_large_bodies_are_413(http: httpx.AsyncClient, path: str) -> None:
    answer = await http.post(path, content=b"{" + b" " * (64 << 10) + b"}", headers=ADMIN)

    assert answer.status_code == 413


async def test_deleting_an_unknown_backend_is_404(http: httpx.AsyncClient) -> None:
    answer = await http.delete("/api/backends/nope", headers=ADMIN)

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
