"""Provisioning of cloud runners, at the scheduler's level: the in-memory twin as the cloud,
a clock moved by hand, runners registered as an instance's user data would."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from dstack.backends.memory import MemoryCompute
from dstack.models.backends import (
    BackendConfig,
    BackendCredentials,
    BackendLimits,
    BackendType,
    InstanceState,
    InstanceStatus,
    LaunchRequest,
)
from dstack.models.job import Job, JobStatus, TerminationReason
from dstack.models.protocol import JobStatusUpdate, RegisterRunnerRequest
from dstack.models.resources import HostResources
from dstack.server.app import create_app, running_context
from dstack.server.context import ServerContext
from dstack.server.db.models import BackendRow, InstanceRow, RunnerRow
from dstack.server.scheduler.loop import Scheduler
from dstack.server.services import claims, runs
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service
from dstack.server.services.secrets import cipher
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

from .conftest import FakeClock, job, submission

pytestmark = pytest.mark.anyio


class Cloud:
    """The twins of the test's backends, by name (what `compute_factory` hands out)."""

    def __init__(self) -> None:
        self.twins: dict[str, MemoryCompute] = {}

    def twin(self, name: str) -> MemoryCompute:
        return self.twins.setdefault(name, MemoryCompute(name))

    def __call__(self, config: BackendConfig, credentials: BackendCredentials) -> MemoryCompute:
        return self.twin(config.name)


@pytest.fixture
def cloud() -> Cloud:
    return Cloud()


@pytest.fixture
async def ctx(
    settings: ServerSettings, clock: FakeClock, cloud: Cloud
) -> AsyncIterator[ServerContext]:
    async with running_context(
        settings, blobs=MemoryBlobStore(), clock=clock, background=False, compute_factory=cloud
    ) as context:
        yield context


async def add_backend(
    ctx: ServerContext,
    name: str = "memory",
    kind: BackendType = BackendType.MEMORY,
    **limits: float | None,
) -> None:
    config = BackendConfig(name=name, type=kind, region="local", limits=BackendLimits(**limits))
    secret = cipher(ctx.settings).encrypt(BackendCredentials().model_dump_json().encode())
    async with ctx.transaction() as session:
        session.add(
            BackendRow(
                name=name,
                type=config.type.value,
                config=config.model_dump(mode="json", exclude={"name", "type"}),
                credentials=secret.decode(),
                created_by="alice",
                created_at=ctx.clock(),
            )
        )


def cloud_job(
    cpu: int = 2, *, gpus: int = 0, interruptible: bool = False, memory_mib: int | None = None
) -> object:
    submitted = job(cpu=cpu, gpus=gpus)
    resources = submitted.spec.resources.model_copy(
        update={"interruptible": interruptible, "memory_mib": memory_mib}
    )
    spec = submitted.spec.model_copy(update={"resources": resources})
    return submitted.model_copy(update={"spec": spec})


async def submit(ctx: ServerContext, *jobs: object) -> str:
    run = await runs.submit_run(ctx, request=submission(*jobs))  # type: ignore[arg-type]
    return run.name


async def step(scheduler: Scheduler, clock: FakeClock, seconds: float = 1.0) -> None:
    clock.advance(seconds)
    await scheduler.tick()


async def the_job(ctx: ServerContext, run_name: str, index: int = 0) -> Job:
    return (await runs.get_run(ctx, name=run_name)).jobs[index]


async def instances(ctx: ServerContext) -> list[InstanceRow]:
    async with ctx.read() as session:
        # by price: instances made in one step share the fake clock's time
        query = select(InstanceRow).order_by(InstanceRow.created_at, InstanceRow.price)
        return list((await session.scalars(query)).all())


async def register_instance(
    ctx: ServerContext, row: InstanceRow, *, memory_mib: int | None = None
) -> str:
    """Register the instance's runner, as its user data does (with its credential),
    reporting the offer's resources (or `memory_mib`)."""
    offer = row.offer["resources"]
    resources = HostResources(
        cpus=offer["cpus"], memory_mib=memory_mib or offer["memory_mib"], disk_mib=100 * 1024
    )
    request = RegisterRunnerRequest(
        name=row.name, host="10.0.0.1", resources=resources, executors=["process"]
    )
    answer = await runner_service.register(ctx, runner_id=None, request=request, instance=row.name)
    return answer.runner_id


async def test_the_cheapest_fitting_on_demand_offer_is_created(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx)
    name = await submit(ctx, cloud_job(cpu=4))
    scheduler = Scheduler(ctx)

    await step(scheduler, clock)
    await step(scheduler, clock)

    twin = cloud.twins["memory"]
    assert [(r.offer.instance_type, r.offer.spot) for r in twin.launches] == [("cpu.large", False)]
    waiting = await the_job(ctx, name)
    assert (waiting.status, waiting.reason) == (
        JobStatus.PENDING,
        TerminationReason.WAITING_FOR_INSTANCE,
    )
    assert waiting.message == "provisioning cpu.large (on-demand, $0.40/h) on memory"
    assert waiting.instance is not None
    assert waiting.instance.instance_type == "cpu.large"
    [row] = await instances(ctx)
    assert (row.state, row.job_id) == ("booting", waiting.id)
    assert row.cloud_id is not None
    assert twin.instances[row.cloud_id].tags["dstack-instance"] == row.name


async def test_an_interruptible_job_gets_spot(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx)
    name = await submit(ctx, cloud_job(cpu=2, interruptible=True))
    await step(Scheduler(ctx), clock)

    [launch] = cloud.twins["memory"].launches
    assert (launch.offer.instance_type, launch.offer.spot) == ("cpu.small", True)
    assert (await the_job(ctx, name)).message == "provisioning cpu.small (spot, $0.030/h) on memory"


@pytest.mark.parametrize("interruptible", [True, False])
async def test_an_aws_spot_runner_watches_the_metadata_service(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud, interruptible: bool
) -> None:
    """Spot instances of AWS start their runner with EC2's metadata service to watch for an
    interruption notice; on-demand ones do not poll it."""
    await add_backend(ctx, "aws", BackendType.AWS)
    await submit(ctx, cloud_job(cpu=2, interruptible=interruptible))
    await step(Scheduler(ctx), clock)

    [launch] = cloud.twins["aws"].launches
    watched = "export DSTACK_RUNNER_METADATA_URL=http://169.254.169.254" in launch.user_data
    assert watched == interruptible


async def test_max_price_leaves_no_offer_and_the_job_fails(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx, max_price=0.5)
    name = await submit(ctx, cloud_job(cpu=1, gpus=1))
    await step(Scheduler(ctx), clock)

    failed = await the_job(ctx, name)
    assert (failed.status, failed.reason) == (JobStatus.FAILED, TerminationReason.NO_CAPACITY)
    message = failed.message or ""
    assert "every on-demand offer that fits is over its backend's max price (memory $0.50/h)" in (
        message
    )
    assert "the cheapest: " in message
    assert message.endswith(" on memory (see `dstack offers`)")
    assert cloud.twins["memory"].launches == []


async def test_a_job_no_offer_fits_fails_naming_the_backends(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx)
    name = await submit(ctx, cloud_job(cpu=512, interruptible=True))
    await step(Scheduler(ctx), clock)

    failed = await the_job(ctx, name)
    assert (failed.status, failed.reason) == (JobStatus.FAILED, TerminationReason.NO_CAPACITY)
    assert "no spot offer of the backends (memory) does (see `dstack offers`)" in (
        failed.message or ""
    )
    assert cloud.twins["memory"].launches == []


async def test_max_instances_is_never_exceeded(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx, max_instances=1)
    name = await submit(ctx, cloud_job(cpu=4), cloud_job(cpu=4))
    scheduler = Scheduler(ctx)
    for _ in range(3):
        await step(scheduler, clock)

    assert len(cloud.twins["memory"].launches) == 1
    second = await the_job(ctx, name, 1)
    assert (second.status, second.reason) == (
        JobStatus.PENDING,
        TerminationReason.WAITING_FOR_INSTANCE,
    )
    assert "instance limit: memory (1)" in (second.message or "")


async def test_a_capacity_error_moves_to_the_next_offer(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx)
    cloud.twin("memory").set_capacity("cpu.small", spot=False, available=False)
    name = await submit(ctx, cloud_job(cpu=2))

    await step(Scheduler(ctx), clock)

    assert [r.offer.instance_type for r in cloud.twins["memory"].launches] == [
        "cpu.small",
        "cpu.large",
    ]
    rows = await instances(ctx)
    assert [(r.instance_type, r.state) for r in rows] == [
        ("cpu.small", "terminated"),
        ("cpu.large", "booting"),
    ]
    assert rows[0].reason == "backend 'memory': no on-demand capacity for cpu.small"
    assert "cpu.large" in ((await the_job(ctx, name)).message or "")


async def test_without_capacity_the_job_waits_then_fails_listing_the_offers(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    ctx.settings.no_capacity_backoff = 10.0
    ctx.settings.no_capacity_timeout = 60.0
    await add_backend(ctx)
    twin = cloud.twin("memory")
    for machine in ("cpu.large", "gpu.a100x2"):
        twin.set_capacity(machine, spot=True, available=False)
    name = await submit(ctx, cloud_job(cpu=8, interruptible=True))
    scheduler = Scheduler(ctx)

    await step(scheduler, clock)
    waiting = await the_job(ctx, name)
    assert (waiting.status, waiting.reason) == (JobStatus.PENDING, TerminationReason.NO_CAPACITY)
    assert "tried cpu.large (spot, $0.12/h) on memory, gpu.a100x2 (spot" in (waiting.message or "")
    assert len(twin.launches) == 2

    await step(scheduler, clock, 5)  # within the backoff: no new try
    assert len(twin.launches) == 2
    await step(scheduler, clock, 6)  # a second round
    assert len(twin.launches) == 4
    assert "round 2" in ((await the_job(ctx, name)).message or "")

    await step(scheduler, clock, 60)
    failed = await the_job(ctx, name)
    assert (failed.status, failed.reason) == (JobStatus.FAILED, TerminationReason.NO_CAPACITY)
    assert failed.message == (
        "no capacity within 60s; offers tried: cpu.large (spot, $0.12/h) on memory, "
        "gpu.a100x2 (spot, $1.95/h) on memory"
    )
    assert twin.alive() == []


async def test_an_instance_that_does_not_register_is_terminated_and_the_next_offer_tried(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    ctx.settings.instance_registration_timeout = 120.0
    await add_backend(ctx)
    name = await submit(ctx, cloud_job(cpu=2))
    scheduler = Scheduler(ctx)
    await step(scheduler, clock)
    [first] = await instances(ctx)

    await step(scheduler, clock, 100)
    assert len(cloud.twins["memory"].launches) == 1
    await step(scheduler, clock, 30)

    rows = await instances(ctx)
    assert [(r.instance_type, r.state) for r in rows] == [
        ("cpu.small", "terminated"),
        ("cpu.large", "booting"),
    ]
    assert rows[0].reason == "its runner did not register within 120s"
    assert cloud.twins["memory"].instances[first.cloud_id or ""].state is InstanceState.TERMINATED
    assert "cpu.large" in ((await the_job(ctx, name)).message or "")


async def test_the_job_runs_on_its_instance_which_goes_once_idle(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx, idle_timeout=300)
    name = await submit(ctx, cloud_job(cpu=2, interruptible=True))
    scheduler = Scheduler(ctx)
    await step(scheduler, clock)
    [row] = await instances(ctx)
    runner_id = await register_instance(ctx, row)
    await step(scheduler, clock)

    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None
    clock.advance(3600)  # an hour on a $0.03/h runner
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    await job_service.report_status(ctx, job_id=assignment.job_id, update=done, runner_id=runner_id)
    finished = await runs.get_run(ctx, name=name)
    assert finished.status is JobStatus.DONE
    assert finished.cost == pytest.approx(0.03)
    assert finished.jobs[0].instance is not None
    assert finished.jobs[0].instance.spot

    [runner] = await runner_service.list_runners(ctx)
    assert runner.backend == "memory"
    assert runner.labels["instance-type"] == "cpu.small"
    assert runner.instance is not None
    assert runner.instance.cloud_id == row.cloud_id

    await step(scheduler, clock, 200)
    assert (await instances(ctx))[0].state == "ready"
    await step(scheduler, clock, 200)
    [gone] = await instances(ctx)
    assert (gone.state, gone.reason) == ("terminated", "idle for 300s")
    assert await runner_service.list_runners(ctx) == []
    assert cloud.twins["memory"].alive() == []


async def test_a_cloud_runner_has_its_instance_types_resources(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx)
    name = await submit(ctx, cloud_job(cpu=2, memory_mib=4096))
    scheduler = Scheduler(ctx)
    await step(scheduler, clock)
    [row] = await instances(ctx)
    assert row.instance_type == "cpu.small"  # 2 CPU, 4096 MiB
    # The kernel keeps some of it: the machine reports less than its type's memory.
    runner_id = await register_instance(ctx, row, memory_mib=3800)
    await step(scheduler, clock)

    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None
    assert (await the_job(ctx, name)).status is JobStatus.PROVISIONING
    [runner] = await runner_service.list_runners(ctx)
    assert (runner.resources.cpus, runner.resources.memory_mib) == (2, 4096)
    assert runner.resources.disk_mib == 100 * 1024  # the runner's own


async def test_stopping_a_job_terminates_its_booting_instance(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx)
    name = await submit(ctx, cloud_job(cpu=2))
    scheduler = Scheduler(ctx)
    await step(scheduler, clock)

    await runs.stop_run(ctx, name=name)
    await step(scheduler, clock)

    [row] = await instances(ctx)
    assert (row.state, row.reason) == (
        "terminated",
        "its job ended before the instance was ready",
    )
    assert cloud.twins["memory"].alive() == []


async def test_an_interrupted_instance_loses_its_jobs(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx)
    name = await submit(ctx, cloud_job(cpu=2, interruptible=True))
    scheduler = Scheduler(ctx)
    await step(scheduler, clock)
    [row] = await instances(ctx)
    runner_id = await register_instance(ctx, row)
    await step(scheduler, clock)
    assert await claims.try_claim(ctx, runner_id=runner_id) is not None

    cloud.twins["memory"].interrupt(row.cloud_id or "")
    await step(scheduler, clock, ctx.settings.instance_poll_interval)

    lost = await the_job(ctx, name)
    assert (lost.status, lost.reason) == (JobStatus.FAILED, TerminationReason.RUNNER_LOST)
    assert "interrupted" in (lost.message or "")
    [gone] = await instances(ctx)
    assert gone.state == InstanceStatus.TERMINATED.value
    async with ctx.read() as session:
        assert await session.get(RunnerRow, runner_id) is None


async def test_a_runner_reporting_an_interruption_has_its_instance_replaced_at_once(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    """The runner synced and handed its job back: its instance goes at the next step (not
    when the cloud takes it, nor when idle), which frees the backend's only slot for a new
    instance of the cheapest offer again, the one the job was interrupted on included."""
    await add_backend(ctx, max_instances=1, idle_timeout=300)
    name = await submit(ctx, cloud_job(cpu=2, interruptible=True))
    scheduler = Scheduler(ctx)
    await step(scheduler, clock)
    [first] = await instances(ctx)
    runner_id = await register_instance(ctx, first)
    await step(scheduler, clock)
    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None
    running = JobStatusUpdate(status=JobStatus.RUNNING)
    await job_service.report_status(
        ctx, job_id=assignment.job_id, update=running, runner_id=runner_id
    )

    interrupted = JobStatusUpdate(
        status=JobStatus.FAILED,
        reason=TerminationReason.INTERRUPTED,
        message="spot instance interrupted: terminate",
    )
    await job_service.report_status(
        ctx, job_id=assignment.job_id, update=interrupted, runner_id=runner_id
    )
    assert await claims.try_claim(ctx, runner_id=runner_id) is None
    await step(scheduler, clock)
    await step(scheduler, clock)

    gone, new = await instances(ctx)
    assert (gone.id, gone.state) == (first.id, InstanceStatus.TERMINATED.value)
    assert gone.reason == "its runner reported a spot interruption"
    assert (new.state, new.instance_type, new.spot) == ("booting", "cpu.small", True)
    assert [i.id for i in cloud.twins["memory"].alive()] == [new.cloud_id]
    async with ctx.read() as session:
        assert await session.get(RunnerRow, runner_id) is None
    waiting = await the_job(ctx, name)
    assert (waiting.status, waiting.attempt) == (JobStatus.PENDING, 1)
    assert waiting.message == "provisioning cpu.small (spot, $0.030/h) on memory"


async def test_a_restarted_server_terminates_what_it_does_not_know(
    ctx: ServerContext, clock: FakeClock, cloud: Cloud
) -> None:
    await add_backend(ctx)
    twin = cloud.twin("memory")
    server = await runner_service.server_id(ctx)
    offer = twin.catalog[0]
    mine = twin.create(
        LaunchRequest(name="dstack-lost", offer=offer, user_data="", tags={"dstack-server": server})
    )
    other = twin.create(
        LaunchRequest(name="other", offer=offer, user_data="", tags={"dstack-server": "x"})
    )

    await step(Scheduler(ctx), clock)

    assert twin.instances[mine.id].state is InstanceState.TERMINATED
    assert twin.instances[other.id].state is InstanceState.RUNNING


def _registration_token(launch: LaunchRequest) -> str:
    words = shlex.split(launch.user_data.split("set -- ", 1)[1].splitlines()[0])
    return words[words.index("--token") + 1]


async def test_the_instance_credential_registers_its_own_runner_once(
    settings: ServerSettings, clock: FakeClock, cloud: Cloud
) -> None:
    app = create_app(settings, blobs=MemoryBlobStore(), clock=clock, compute_factory=cloud)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        ctx: ServerContext = app.state.ctx
        await add_backend(ctx)
        await submit(ctx, cloud_job(cpu=2))
        # the app's own scheduler runs too: the launch is whichever tick makes it
        scheduler = Scheduler(ctx)
        for _ in range(200):
            twin = cloud.twins.get("memory")
            if twin is not None and twin.launches:
                break
            await step(scheduler, clock, 0.0)
            await asyncio.sleep(0.05)
        [launch] = cloud.twins["memory"].launches
        headers = {"Authorization": f"Bearer {_registration_token(launch)}"}

        def body(name: str) -> dict[str, object]:
            return {
                "name": name,
                "host": "h",
                "resources": {"cpus": 2, "memory_mib": 4096, "disk_mib": 1024},
                "executors": ["process"],
                "labels": {"backend": "elsewhere"},
            }

        other = await http.post("/api/runners/register", json=body("impostor"), headers=headers)
        assert other.status_code == 403
        ok = await http.post("/api/runners/register", json=body(launch.name), headers=headers)
        assert ok.status_code == 200, ok.text
        again = await http.post("/api/runners/register", json=body(launch.name), headers=headers)
        assert again.status_code == 403
        elsewhere = await http.get("/api/runners", headers=headers)
        assert elsewhere.status_code == 403

        own = {"Authorization": f"Bearer {ok.json()['runner_token']}"}
        restarted = await http.post("/api/runners/register", json=body(launch.name), headers=own)
        assert restarted.status_code == 200
        [runner] = await runner_service.list_runners(ctx)
        assert runner.labels["backend"] == "memory"
        assert runner.labels["instance"] == launch.name
        [row] = await instances(ctx)
        assert (row.state, row.runner_id) == ("ready", runner.id)
