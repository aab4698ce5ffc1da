"""Full disks, for real: small tmpfs mounts under the runner's work dir and the server's folder.

A job that fills its runner's disk — through its output (the log spool) or through its files
(its artifacts) — ends `failed` with the reason `disk_full`, a message naming the path, and
the log lines it printed before; it is never killed by its own log. A server whose disk is
full — its SQLite database or its blob store — answers 507 with a message, keeps answering
`/api/health`, and takes the next request once there is room. A runner short of disk is shown
as such by `dstack runners` and gets no job; the job waits `pending`, saying why.

Needs root (mount); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import Env, _stop_server, make_env

from dstack.models.digests import digest_bytes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

MiB = 1 << 20


@contextlib.contextmanager
def tmpfs(path: Path, size_mib: int) -> Iterator[Path]:
    """A tmpfs of `size_mib` MiB at `path`; lazily unmounted at the end (a process that still
    holds a file there, the server, lets it go when it exits)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_mib}m"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """A file taking all the free space of `directory`'s disk but `leave` bytes (all of it,
    when the server wrote meanwhile: the file's last bytes then fail, on write or close)."""
    filler = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with contextlib.suppress(OSError), filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


@pytest.fixture
def disk_env(tmp_path: Path) -> Iterator[Env]:
    """A process-executor user whose local runner keeps its jobs in its work dir (jobs run as
    root here, not as the job user under /var/lib) and takes jobs down to 0 free disk."""
    env = make_env(tmp_path, "process")
    env.extra_env.update(DSTACK_RUNNER_JOB_USER="root", DSTACK_RUNNER_MIN_FREE_DISK="0")
    try:
        yield env
    finally:
        _stop_server(env.home)


def job_of(env: Env, run: str) -> dict[str, object]:
    job: dict[str, object] = env.run_json(run)["jobs"][0]
    return job


def run_name(output: str) -> str:
    for word in output.split():
        if word.count("-") == 2 and word.rsplit("-", 1)[1].isdigit():
            return word.strip("'\".,:")
    raise AssertionError(f"no run name in {output!r}")


def test_output_filling_the_runner_disk_fails_the_job_disk_full(disk_env: Env) -> None:
    """12 MiB of output into an 8 MiB work dir: the job is not killed by SIGPIPE (it runs
    to its end: its last line is in the log), ends `disk_full`, and keeps its first lines."""
    env = disk_env
    env.workflows(
        """
        workflows:
          - name: chatty
            provider: bash
            commands:
              - echo first-line-kept
              - python3 -c "print(('x' * 1023 + '\\n') * 12 * 1024)"
              - echo survived-its-log
        """
    )
    env.commit()
    with tmpfs(env.home / "runner", 8):
        result = env.dstack("run", "chatty", timeout=180)
        assert result.code != 0, result
        assert "HTTP 500" not in result.out + result.err
        name = run_name(result.out + result.err)
        job = job_of(env, name)
        assert job["status"] == "failed", job
        assert job["reason"] == "disk_full", job
        assert "spool.jsonl" in str(job["message"]), job
        assert "lost" in str(job["message"]), job
        assert job["exit_code"] == 0, job  # it ran to its end: no SIGPIPE (141)
        logs = env.dstack("logs", name)
        assert "first-line-kept" in logs.out, logs
        assert "bytes of output were lost" in logs.out + logs.err, logs
        assert "survived-its-log" in logs.out, logs  # the tail held in memory is kept


def test_artifacts_filling_the_runner_disk_fail_the_job_disk_full(disk_env: Env) -> None:
    """The job's own file fills the disk: its write fails, and the job's end names the
    full folder instead of a bare exit code."""
    env = disk_env
    env.workflows(
        """
        workflows:
          - name: writer
            provider: bash
            commands:
              - echo before-the-big-file
              - mkdir -p out
              - head -c 20971520 /dev/zero > out/big.bin
            artifacts:
              - path: out
        """
    )
    env.commit()
    with tmpfs(env.home / "runner", 8):
        result = env.dstack("run", "writer", timeout=180)
        assert result.code != 0, result
        name = run_name(result.out + result.err)
        job = job_of(env, name)
        assert job["status"] == "failed", job
        assert job["reason"] == "disk_full", job
        message = str(job["message"])
        assert "no space left on device in" in message
        assert str(env.home / "runner") in message
        assert "free of" in message, job  # the space, not only the path
        logs = env.dstack("logs", name)
        assert "before-the-big-file" in logs.out, logs


def _server(env: Env) -> tuple[str, str]:
    from dstack.server.local import read_local_server

    found = read_local_server(env.home)
    assert found is not None
    return found.url, (env.home / "server" / "token").read_text().strip()


def _start_server(env: Env) -> tuple[str, str]:
    result = env.dstack("ps")
    assert result.code == 0, result
    return _server(env)


def test_server_database_on_a_full_disk_answers_507_and_recovers(disk_env: Env) -> None:
    """The SQLite file's disk fills: writes get 507 with a message, reads and /api/health go
    on, and the next write after freeing space succeeds."""
    env = disk_env
    with tmpfs(env.home / "server", 8) as server_dir:
        url, token = _start_server(env)
        filler = fill(server_dir)
        headers = {"Authorization": f"Bearer {token}"}
        answers = []
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            for index in range(200):  # 200 x 60 KB > 8 MiB: the database must hit the wall
                body = {"name": f"S{index}", "value": "v" * 60_000}
                answer = http.post("/api/secrets", json=body)
                answers.append(answer.status_code)
                if answer.status_code != 201:
                    break
            assert answer.status_code == 507, (answers, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "disk_full"
            assert "disk is full" in error["message"]
            assert "/api/secrets" in error["message"]
            assert http.get("/api/health").status_code == 200
            assert http.get("/api/secrets").status_code == 200
            filler.unlink()
            again = http.post("/api/secrets", json={"name": "AFTER", "value": "v"})
            assert again.status_code == 201, again.text
        listed = env.dstack("secrets", "list")
        assert "AFTER" in listed.out, listed
        _stop_server(env.home)  # while its server.json is still on the tmpfs


def test_server_blob_store_on_a_full_disk_answers_507(disk_env: Env) -> None:
    """The blob store's disk fills: an upload gets 507 with a message (the server answers
    afterwards), and `dstack tags add -a`, which writes a local server's store itself, prints
    one line saying so, not a traceback."""
    env = disk_env
    data = env.repo / "data"
    data.mkdir()
    (data / "weights.bin").write_bytes(os.urandom(3 * MiB))
    url, token = _start_server(env)
    blob = os.urandom(3 * MiB)
    digest = digest_bytes(blob)
    with tmpfs(env.home / "server" / "blobs", 2):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            answer = http.put(f"/api/blobs/{digest}", content=blob)
            assert answer.status_code == 507, answer.text
            error = answer.json()["error"]
            assert error["code"] == "disk_full"
            assert f"/api/blobs/{digest}" in error["message"]
            assert http.get("/api/health").status_code == 200
        result = env.dstack("tags", "add", "weights", "-a", "data", timeout=120)
        assert result.code == 1, result
        text = result.out + result.err
        assert "No space left on device" in text, result
        assert "HTTP 500" not in text, result
        assert "Traceback" not in text, result
    ps = env.dstack("ps")
    assert ps.code == 0, ps


def test_runners_show_free_disk_and_a_low_runner_gets_no_job(disk_env: Env) -> None:
    """A runner whose jobs' disk has less free than its minimum is shown `low` and takes no
    job: the job stays `pending`, its message naming the runner and the space."""
    env = disk_env
    env.extra_env["DSTACK_RUNNER_MIN_FREE_DISK"] = "16MB"
    env.workflows(
        """
        workflows:
          - name: hello
            provider: bash
            commands:
              - echo hello
        """
    )
    env.commit()
    with tmpfs(env.home / "runner", 8):
        result = env.dstack("run", "hello", "-d", timeout=120)
        assert result.code == 0, result
        name = run_name(result.out + result.err)
        run = env.wait_for(name, {"pending"}, timeout=60)
        job = run["jobs"][0]
        deadline_checks = 0
        while "free disk" not in str(job["message"]) and deadline_checks < 100:
            deadline_checks += 1
            job = job_of(env, name)
        assert job["status"] == "pending", job
        assert "runner 'local'" in str(job["message"]), job
        assert "below its minimum of 16 MiB" in str(job["message"]), job
        runners = env.dstack("runners")
        assert runners.code == 0, runners
        assert "DISK FREE" in runners.out, runners
        assert "(low)" in runners.out, runners
        listed = json.loads(env.dstack("runners", "--json").out)
        assert listed[0]["resources"]["disk_mib"] <= 8
        assert listed[0]["resources"]["min_free_disk_mib"] == 16
        env.dstack("stop", name)
