"""Spot interruptions on the runner: the metadata client and watcher against a fake IMDS on
loopback, and a runner that saves and hands back its job when a notice comes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.infra.imds import ACTION_PATH, TOKEN_PATH, FakeImds
from tests.runner.artifact_helpers import assign, running, stored_manifest
from tests.runner.conftest import FakeRunnerApi

from dstack.api.runner import InstanceMetadataClient
from dstack.errors import ServerError, ServerUnreachableError
from dstack.models.job import JobStatus, TerminationReason
from dstack.models.repo import RepoRef
from dstack.models.runner import SpotNotice
from dstack.runner.interruption import InterruptionWatcher
from dstack.storage.memory import MemoryBlobStore


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds().up()
    yield fake
    fake.down()


def test_no_notice_reads_none_with_a_session_token(imds: FakeImds) -> None:
    client = InstanceMetadataClient(imds.url)
    assert client.spot_notice() is None
    assert client.spot_notice() is None
    # One token, then reads that carry it.
    assert imds.requests == [
        ("PUT", TOKEN_PATH, False),
        ("GET", ACTION_PATH, True),
        ("GET", ACTION_PATH, True),
    ]
    client.close()


def test_a_posted_notice_is_read(imds: FakeImds) -> None:
    client = InstanceMetadataClient(imds.url)
    imds.post_notice("terminate", "2026-12-07T04:30:00Z")
    notice = client.spot_notice()
    assert notice == SpotNotice(action="terminate", time=datetime(2026, 12, 7, 4, 30, tzinfo=UTC))
    assert notice.describe() == "spot instance interrupted: terminate at 2026-12-07 04:30:00 UTC"
    client.close()


def test_a_refused_token_is_fetched_again(imds: FakeImds) -> None:
    client = InstanceMetadataClient(imds.url)
    assert client.spot_notice() is None
    imds.revoke_tokens()
    imds.post_notice("stop")
    notice = client.spot_notice()
    assert notice is not None
    assert notice.action == "stop"
    assert [m for m, _, _ in imds.requests].count("PUT") == 2
    client.close()


def test_an_unanswering_service_raises_unreachable(imds: FakeImds) -> None:
    client = InstanceMetadataClient(imds.url, timeout=1.0)
    imds.down()
    with pytest.raises(ServerUnreachableError):
        client.spot_notice()
    client.close()


def test_an_unreadable_notice_is_a_server_error(imds: FakeImds) -> None:
    imds.notice = {"time": "soon"}  # no action
    client = InstanceMetadataClient(imds.url)
    with pytest.raises(ServerError):
        client.spot_notice()
    client.close()


def test_the_watcher_rides_out_an_outage_quietly_then_reports_the_notice_once(
    imds: FakeImds, caplog: pytest.LogCaptureFixture
) -> None:
    port = imds.port
    imds.down()
    notices: list[SpotNotice] = []
    came = threading.Event()

    def on_notice(notice: SpotNotice) -> None:
        notices.append(notice)
        came.set()

    client = InstanceMetadataClient(imds.url, timeout=0.5)
    watcher = InterruptionWatcher(client, on_notice, interval=0.02).start()
    deadline = time.monotonic() + 10
    while caplog.text.count("cannot read the instance metadata service") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)  # several more failed polls
    assert not came.is_set()
    assert caplog.text.count("cannot read the instance metadata service") == 1
    restarted = FakeImds(port=port).up()
    try:
        restarted.post_notice()
        assert came.wait(10)
        assert watcher.join(5)
        assert [n.action for n in notices] == ["terminate"]
    finally:
        restarted.down()
        client.close()


def test_an_interrupted_job_syncs_its_artifacts_and_logs_then_is_reported_interrupted(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef, imds: FakeImds
) -> None:
    store = MemoryBlobStore()
    # The job loses its checkpoint when stopped: only a sync before the stop can save it.
    job = assign(
        repo_ref,
        "trap 'rm -f out/ckpt; exit 143' TERM",
        "mkdir -p out && echo epoch-3 > out/ckpt && echo wrote",
        "while true; do sleep 0.1; done",
        artifacts=["out"],
    )
    with running(
        tmp_path, fake_api, store, metadata_url=imds.url, metadata_interval=0.05
    ) as runner:
        fake_api.assignments.put(job)
        fake_api.wait_status("job-1", lambda s: s is JobStatus.RUNNING)
        deadline = time.monotonic() + 20
        while "wrote" not in fake_api.text("job-1"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        imds.post_notice()
        final = fake_api.wait_final("job-1", timeout=30)
        assert final.status is JobStatus.FAILED
        assert final.reason is TerminationReason.INTERRUPTED
        assert final.message is not None
        assert "spot instance interrupted: terminate" in final.message
        saved = fake_api.wait_manifest("job-1", lambda m: any(f.path == "ckpt" for f in m.files))
        assert b"".join(store.open(saved.files[0].digest)) == b"epoch-3\n"
        assert "interrupted: spot instance interrupted: terminate" in fake_api.text("job-1")
        # Taking no more jobs: the next one stays in the queue.
        fake_api.assignments.put(assign(repo_ref, "echo never", job_id="job-2"))
        time.sleep(0.5)
        assert fake_api.statuses.get("job-2", []) == []
        assert runner.interruption is not None


def test_a_resumed_job_finds_its_last_attempts_artifacts(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef
) -> None:
    store = MemoryBlobStore()
    job = assign(repo_ref, "cat out/ckpt && echo epoch-4 >> out/ckpt", artifacts=["out"])
    job.resume = [stored_manifest(store, "out", {"ckpt": b"epoch-3\n"})]
    with running(tmp_path, fake_api, store):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1")
        assert final.status is JobStatus.DONE, final
    assert "epoch-3" in fake_api.text("job-1")
    assert "resumed out from the last attempt: 1 file" in fake_api.text("job-1")
    latest = fake_api.latest("job-1", "out")
    assert b"".join(store.open(latest.files[0].digest)) == b"epoch-3\nepoch-4\n"
