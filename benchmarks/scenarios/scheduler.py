"""S7: the scheduler alone — queued single-job runs against simulated runners.

The real server runs in its own process (uvicorn, no local runner): on SQLite the local
server, on PostgreSQL (`--db postgres`) `dstack server` on a throwaway cluster, so its CPU
time is the server's and nothing else's. Simulated runners are asyncio tasks in this process
speaking the runner API over loopback: register, then claim, report `running` and `done` at
once, and claim again. The runs are submitted (untimed) before any runner claims; the clock
runs from the first claim until every job is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from benchmarks.harness import Budget, Row
from benchmarks.scenarios.base import Bench
from benchmarks.workspace import BenchError, Workspace


def assignments(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    for kind in bench.databases:
        rows += _assignments(bench, kind)
    return rows


def _assignments(bench: Bench, kind: str) -> list[Row]:
    import psutil

    sizes = bench.sizes
    # Each timed round drains the queue twice, in turn: with the runners speaking as
    # `dstack-runner` does (its final report claims its next job: two requests per job),
    # and with a claim of its own for every job (three).
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu_ms: dict[bool, list[float]] = {True: [], False: []}
    with bench.workspace(warm=False) as ws, server_on(ws, kind) as (url, token, pid):
        server = psutil.Process(pid)
        runner_token = asyncio.run(_runner_token(url, token))
        runners = asyncio.run(_register_all(url, runner_token, sizes.sim_runners))
        rounds = [(max(1, sizes.queued_runs // 10), True, False)]  # (jobs, next_job, timed)
        for _ in range(min(sizes.runs, 3)):
            rounds += [(sizes.queued_runs, True, True), (sizes.queued_runs, False, True)]
        for count, next_job, timed in rounds:
            asyncio.run(_submit_all(url, token, count))
            before = _cpu(server)
            seconds = asyncio.run(_drain(url, runners, count, next_job=next_job))
            used = _cpu(server) - before
            if timed:
                rates[next_job].append(count / seconds)
                cpu_ms[next_job].append(used / count * 1000)
    label = f"{sizes.queued_runs:,} runs, {sizes.sim_runners} runners, {kind}"
    return [
        Row(
            "S7",
            f"assignments ({label})",
            rates[True],
            unit="jobs/s",
            budget=Budget(200, at_least=True),
            note="runners as dstack-runner: the final report claims the next job",
        ),
        Row(
            "S7",
            f"server CPU per job ({kind})",
            cpu_ms[True],
            unit="ms",
            note="running + done-and-next reports; server process only (psutil)",
        ),
        Row("S7", f"assignments, a claim per job ({label})", rates[False], unit="jobs/s"),
        Row(
            "S7",
            f"server CPU per job, a claim per job ({kind})",
            cpu_ms[False],
            unit="ms",
            note="claim + running + done reports; server process only (psutil)",
        ),
    ]


@contextlib.contextmanager
def server_on(
    ws: Workspace, kind: str, *, local_runner: bool = False
) -> Iterator[tuple[str, str, int]]:
    """(URL, admin token, pid) of a server on database `kind`: on SQLite the workspace's
    local server (its runner only with `local_runner`); on PostgreSQL `dstack server` on a
    throwaway cluster, made the workspace's default remote."""
    from benchmarks.teamserver import add_remote, database, serve

    if kind == "sqlite":
        from dstack.server.local import ensure_local_server

        url, token = ensure_local_server(ws.home, start_runner=local_runner)
        pid = ws.server_pid()
        if pid is None:
            raise BenchError("the local server wrote no pid")
        yield url, token, pid
        return
    with (
        database(kind, ws.root / "db") as db,
        serve(db, local_runner=local_runner, env=ws.environ()) as server,
    ):
        add_remote(ws.home, server)
        yield server.url, server.token, server.pid


def _cpu(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _client(url: str, token: str) -> Any:
    import httpx

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60, limits=limits
    )


async def _runner_token(url: str, token: str) -> str:
    """A runner registration token, where the server has them (else the server's token)."""
    async with _client(url, token) as http:
        response = await http.post("/api/runners/tokens")
        if response.status_code in (404, 405):
            return token
        response.raise_for_status()
        return str(response.json()["token"])


async def _register_all(url: str, token: str, count: int) -> list[tuple[str, str]]:
    """(id, own credential) of `count` new runners registered with registration token `token`."""
    host = {"cpus": 1, "memory_mib": 4096, "disk_mib": 10240, "gpus": []}
    async with _client(url, token) as http:
        ids = []
        for index in range(count):
            body = {
                "name": f"sim-{index}",
                "host": "sim",
                "resources": host,
                "executors": ["process"],
            }
            response = await http.post("/api/runners/register", json=body)
            response.raise_for_status()
            answer = response.json()
            ids.append((str(answer["runner_id"]), str(answer.get("runner_token") or token)))
        return ids


async def _submit_all(url: str, token: str, count: int) -> None:
    async with _client(url, token) as http:
        queue = iter(range(count))

        async def worker() -> None:
            for _ in queue:
                response = await http.post("/api/runs", json=_submission())
                if response.is_error:
                    raise BenchError(f"submit failed: {response.status_code} {response.text}")

        await asyncio.gather(*(worker() for _ in range(8)))


def _submission() -> dict[str, Any]:
    spec = {"provider": "bash", "commands": ["true"], "workflow_name": "sim"}
    return {
        "repo": {"repo_id": "bench/sim", "tree": "0" * 40, "commit": "1" * 40, "branch": "main"},
        "workflow_name": "sim",
        "jobs": [{"workflow_name": "sim", "spec": spec}],
    }


async def _drain(
    url: str, runners: list[tuple[str, str]], count: int, *, next_job: bool = True
) -> float:
    """Seconds until the runners have taken and finished `count` jobs.

    Each simulated runner speaks as `dstack-runner` does: it claims only when it holds no
    job, and its final report asks for its next job (`next_job`), which the answer carries
    when one fits; without `next_job`, every job is claimed apart (a request more per job).

    The simulated runners speak HTTP with aiohttp: they share the 2 cores with the server,
    and httpx spends about three times its CPU per request, so with it this process, not
    the server, set the pace.
    """
    import aiohttp

    done = 0
    finished = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(url, connector=connector) as http:

        async def runner(runner_id: str, token: str) -> None:
            nonlocal done
            headers = {"Authorization": f"Bearer {token}"}  # the runner's own credential
            job_id: str | None = None
            while not finished.is_set():
                if job_id is None:
                    async with http.post(
                        f"/api/runners/{runner_id}/claim",
                        json={"wait_seconds": 0.5},
                        headers=headers,
                    ) as response:
                        response.raise_for_status()
                        if response.status == 204:
                            continue
                        job_id = (await response.json())["job_id"]
                running = {"status": "running"}
                final = {"status": "done", "reason": "done", "exit_code": 0, "next_job": next_job}
                await _report(http, job_id, running, headers)
                job_id = await _report(http, job_id, final, headers)
                done += 1
                if done >= count:
                    finished.set()

        start = time.perf_counter()
        tasks = [asyncio.create_task(runner(r, t)) for r, t in runners]
        waiter = asyncio.create_task(finished.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=600)
        seconds = time.perf_counter() - start
        finished.set()
        await asyncio.gather(*tasks)
        if done < count:
            raise BenchError(f"only {done} of {count} jobs were assigned and finished")
        return seconds


async def _report(http: Any, job_id: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    """Post a status report; the id of the next job its answer hands over, if any."""
    async with http.post(f"/api/jobs/{job_id}/status", json=body, headers=headers) as reply:
        if reply.status >= 400:
            text = await reply.text()
            raise BenchError(f"status report failed: {reply.status} {text}")
        return (await reply.json())["job_id"] if reply.status == 200 else None
