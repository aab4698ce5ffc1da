"""S9: many concurrent API clients against the real local server (uvicorn on loopback,
SQLite); on `--db postgres`, against `dstack server` with a local runner on a throwaway
PostgreSQL cluster.

Each client alternates listing runs (`GET /api/runs?all=true`) and reading the first page of a
run's logs (`GET /api/runs/NAME/logs`), one request at a time. Latency is per request;
any non-2xx answer or transport error counts as an error.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from typing import Any

from benchmarks.harness import Budget, Row
from benchmarks.scenarios.base import Bench
from benchmarks.workspace import BenchError

LOGGING = """
workflows:
  - name: chatty
    provider: bash
    commands: [seq 1 200]
"""


def concurrent_clients(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    for kind in bench.databases:
        rows += _concurrent_clients(bench, kind)
    return rows


def _concurrent_clients(bench: Bench, kind: str) -> list[Row]:
    from benchmarks.scenarios.scheduler import server_on

    sizes = bench.sizes
    p50: list[float] = []
    p99: list[float] = []
    errors = 0
    # SQLite: the local server, warm with its runner; PostgreSQL: `dstack server` with one.
    with (
        bench.workspace(warm=kind == "sqlite") as ws,
        server_on(ws, kind, local_runner=True) as (url, token, _),
    ):
        ws.workflows(LOGGING)
        remote = [] if kind == "sqlite" else ["--remote"]
        for _ in range(3):
            out = ws.dstack("run", *remote, "chatty")
            if "200" not in out:
                raise BenchError(f"the run printed no log lines: {out[-500:]!r}")
        names = _run_names(url, token)[:3]
        for index in range(sizes.runs + 1):
            # This process holds dstack, pydantic and httpx: a full collection of that heap
            # took 115-135 ms and stalled all 50 clients at once (a round's p99 went from
            # about 100 to 180 ms). A user's client is a process of its own; here what is
            # alive before a round is frozen out of the collector's sight.
            gc.collect()
            gc.freeze()
            latencies, failed = asyncio.run(
                _round(url, token, names, sizes.api_clients, sizes.api_requests)
            )
            if index:  # the first round is the warm-up
                quantiles = statistics.quantiles(latencies, n=100)
                p50.append(quantiles[49] * 1000)
                p99.append(quantiles[98] * 1000)
                errors += failed
    label = f"{sizes.api_clients} clients, {kind}"
    return [
        Row("S9", f"API p50 ({label})", p50, unit="ms", errors=errors),
        Row(
            "S9",
            f"API p99 ({label})",
            p99,
            unit="ms",
            errors=errors,
            budget=Budget(100),
            note=f"{errors} failed requests" if errors else "",
        ),
    ]


async def _round(
    url: str, token: str, names: list[str], clients: int, requests: int
) -> tuple[list[float], int]:
    import httpx

    latencies: list[float] = []
    failed = 0
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    # Every client exists before the first request: making one costs this process tens of
    # milliseconds (its TLS context), which would otherwise land in the latency of the
    # requests already in flight.
    https = [
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
        )
        for _ in range(clients)
    ]

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal failed
        for request in range(requests):
            path, params = _request(index + request, names)
            start = time.perf_counter()
            try:
                response = await http.get(path, params=params)
                ok = response.is_success
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            failed += not ok

    try:
        await asyncio.gather(*(client(i, http) for i, http in enumerate(https)))
    finally:
        await asyncio.gather(*(http.aclose() for http in https))
    return latencies, failed


def _request(counter: int, names: list[str]) -> tuple[str, dict[str, Any]]:
    if counter % 2:
        return f"/api/runs/{names[counter % len(names)]}/logs", {}
    return "/api/runs", {"all": "true"}


def _run_names(url: str, token: str) -> list[str]:
    import httpx

    response = httpx.get(
        f"{url}/api/runs",
        params={"all": "true"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    response.raise_for_status()
    return [str(run["name"]) for run in response.json() if run["workflow_name"] == "chatty"]
