"""S10: a team server with a long history — 100,000 finished runs of 10 jobs each (1,000,000
jobs), 1 GiB of logs — on each database of `--db`.

The schema is made by the server's own migrations; the rows go in by bulk inserts straight
into its tables (SQLite: `executemany`; PostgreSQL: `COPY`), shaped as the server writes
them: runs spread over a year, 20 repositories and 10 users, each with its submission;
jobs `done` (most), `failed`, `stopped` or `aborted` with their status history, spec, cache
key, runner and the API JSON the server keeps of a finished job (`jobs.api_json`, made by
the server's own function); logs as runners ship them, chunks of output numbered by `seq` per job.
Then `dstack server` runs on that database and one client measures, request after request:

- `dstack ps`'s request (`GET /api/runs?repo_id=...`: unfinished runs and the newest
  finished ones of the current repository), and the CLI's own `dstack ps` end to end;
- the first page of a run's logs (`GET /api/runs/NAME/logs`), a different run each time;
- the runs listing API: its first page (`?limit=50`) and pages deep in the history
  (`?limit=50&before_at=...&before_name=...`, keys of runs at 90% of the history).

Each is held to p99 ≤ 100 ms. The database's size on disk is reported (SQLite: the file
and its WAL; PostgreSQL: `pg_database_size`).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import Budget, Row
from benchmarks.scenarios.base import Bench

JOBS_PER_RUN = 10
REPOS = 20
USERS = 10
RUNNERS = 20
LOG_BYTES_PER_JOB = 1 << 10  # 1 GiB over 1,000,000 jobs
PAGE = 50
_BATCH_RUNS = 2000
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_WORDS = ("brave", "calm", "cosmic", "eager", "quiet", "swift", "witty", "bold")
_ANIMALS = ("otter", "panda", "lynx", "heron", "koala", "bison", "gecko", "moose", "tapir")


@dataclass
class Filled:
    """What `fill` wrote: counts per table, and keys the measurements pick from."""

    runs: int = 0
    jobs: int = 0
    logs: int = 0
    log_bytes: int = 0
    repo_id: str = ""
    names: list[str] = field(default_factory=list)
    """Every run's name, oldest first (`submitted_at` grows with the index)."""
    submitted: list[datetime] = field(default_factory=list)


def scale(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    for kind in bench.databases:
        rows += _one_database(bench, kind)
    return rows


def _one_database(bench: Bench, kind: str) -> list[Row]:
    import tempfile

    from benchmarks.teamserver import add_remote, database, serve

    sizes = bench.sizes
    with bench.workspace(warm=False) as ws:
        repo_id = _repo_id(ws.repo)
        root = Path(tempfile.mkdtemp(prefix="dstack-scale-", dir=ws.root))
        with database(kind, root) as db:
            start = time.perf_counter()
            filled = fill(db.resolved_url(), runs=sizes.scale_runs, repo_id=repo_id)
            fill_seconds = time.perf_counter() - start
            with serve(db) as server:
                add_remote(ws.home, server)
                measured = _measure(server.url, server.token, filled, sizes.scale_requests)
                ps_cli = [
                    _timed(lambda: ws.dstack("ps", "--remote")) * 1000
                    for _ in range(max(3, sizes.runs))
                ]
            size_mib = db.size() / (1 << 20)
    label = f"{filled.runs:,} runs, {kind}"
    note = (
        f"{filled.jobs:,} jobs, {filled.logs:,} log chunks of {filled.log_bytes / (1 << 20):,.0f}"
        f" MiB; filled in {fill_seconds:.0f} s"
    )
    result = []
    for what, latencies in measured.items():
        result.append(Row("S10", f"{what} p50 ({label})", [_quantile(latencies, 50)], unit="ms"))
        result.append(
            Row(
                "S10",
                f"{what} p99 ({label})",
                [_quantile(latencies, 99)],
                unit="ms",
                budget=Budget(100),
            )
        )
    result.append(Row("S10", f"dstack ps, CLI end to end ({label})", ps_cli, unit="ms"))
    result.append(Row("S10", f"database size ({label})", [size_mib], unit="MiB", note=note))
    return result


def _repo_id(repo: Path) -> str:
    from dstack.cli.scope import current_repo_id

    return current_repo_id(repo)


def _timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _quantile(latencies: list[float], q: int) -> float:
    return statistics.quantiles(latencies, n=100)[q - 1] * 1000


def queries(filled: Filled, count: int) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The requests measured, `count` of each: (path, query parameters)."""
    rng = random.Random(7)
    deep = len(filled.names) // 10  # keys of runs at 90% of the history, newest first
    picks = [rng.randrange(len(filled.names)) for _ in range(count)]
    keys = [max(0, deep + rng.randrange(-deep // 10 - 1, deep // 10 + 1)) for _ in range(count)]
    return {
        "dstack ps request": [("/api/runs", {"repo_id": filled.repo_id})] * count,
        "logs first page": [(f"/api/runs/{filled.names[i]}/logs", {}) for i in picks],
        "runs API first page": [("/api/runs", {"limit": PAGE})] * count,
        "runs API deep page": [
            (
                "/api/runs",
                {
                    "limit": PAGE,
                    "before_at": filled.submitted[k].isoformat(),
                    "before_name": filled.names[k],
                },
            )
            for k in keys
        ],
    }


def _measure(url: str, token: str, filled: Filled, count: int) -> dict[str, list[float]]:
    """Seconds of each request, one at a time (after 5 untimed requests of each kind)."""
    import httpx

    measured: dict[str, list[float]] = {}
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        for what, requests in queries(filled, count).items():
            for path, params in requests[:5]:
                http.get(path, params=params).raise_for_status()
            latencies = []
            for path, params in requests:
                start = time.perf_counter()
                response = http.get(path, params=params)
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()
            measured[what] = latencies
    return measured


# --- the fill ----------------------------------------------------------------------------


def fill(url: str, *, runs: int, repo_id: str, seed: int = 1) -> Filled:
    """Migrate the database at `url` to the newest schema and write `runs` finished runs
    (their jobs and logs) into it; one in `REPOS` of them in `repo_id`."""
    from dstack.server.db.engine import create_engine
    from dstack.server.db.migrate import upgrade_to_head

    async def migrate() -> None:
        engine = create_engine(url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    rows = _Rows(runs, repo_id, seed)
    if url.startswith("sqlite"):
        _fill_sqlite(url, rows)
    else:
        asyncio.run(_fill_postgres(url, rows))
    return rows.filled


class _Rows:
    """The rows of each table, in its columns' order, generated batch by batch."""

    def __init__(self, runs: int, repo_id: str, seed: int) -> None:
        from dstack.server.db.models import JobRow, LogRow, RunnerRow, RunRow, UserRow
        from dstack.server.services.jobs import api_json

        self.api_json = api_json

        self.total = runs
        self.rng = random.Random(seed)
        self.repos = [repo_id] + [f"github.com/acme/project-{i}" for i in range(1, REPOS)]
        self.users = [f"user{i}" for i in range(USERS)]
        self.runner_ids = [f"{i:032x}" for i in range(1, RUNNERS + 1)]
        self.columns = {
            table.__tablename__: [c.name for c in table.__table__.columns]
            for table in (RunRow, JobRow, LogRow, RunnerRow, UserRow)
        }
        self.filled = Filled(repo_id=repo_id)
        self.counters: dict[str, int] = {}
        # Spread over the year before `_EPOCH`, oldest first.
        self.step = timedelta(days=365) / max(runs, 1)
        self.text = "".join(
            f"epoch {e} step {s} loss {1 / (s + 1):.6f} lr 0.0003 grad_norm 1.25\n"
            for e in range(4)
            for s in range(400)
        )

    def users_rows(self) -> list[tuple[Any, ...]]:
        return [
            (name, f"{index:064x}", index == 0, None, _EPOCH - timedelta(days=400))
            for index, name in enumerate(self.users)
        ]

    def runner_rows(self) -> list[tuple[Any, ...]]:
        resources = '{"cpus":8,"memory_mib":32768,"disk_mib":204800,"gpus":[]}'
        return [
            (
                rid,
                f"runner-{i}",
                f"host-{i}",
                f"10.0.0.{i}:3001",
                resources,
                '["docker","process"]',
                "{}",
                "local",
                "offline",
                _EPOCH - timedelta(days=400),
                f"{i + 1000:064x}",
                _EPOCH - timedelta(days=1),
            )
            for i, rid in enumerate(self.runner_ids)
        ]

    def batches(self) -> Iterator[tuple[list[tuple[Any, ...]], ...]]:
        for first in range(0, self.total, _BATCH_RUNS):
            runs, jobs, logs = [], [], []
            for index in range(first, min(first + _BATCH_RUNS, self.total)):
                run, run_jobs, run_logs = self._run(index)
                runs.append(run)
                jobs += run_jobs
                logs += run_logs
            yield runs, jobs, logs

    def _run(self, index: int) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[Any]]:
        rng = self.rng
        prefix = f"{rng.choice(_WORDS)}-{rng.choice(_ANIMALS)}"
        counter = self.counters[prefix] = self.counters.get(prefix, 0) + 1
        name = f"{prefix}-{counter}"
        repo_id = self.repos[index % REPOS]
        at = _EPOCH - timedelta(days=365) + self.step * index
        workflow = f"train-{index % 7}"
        commit = f"{rng.getrandbits(160):040x}"
        repo = (
            f'{{"repo_id":"{repo_id}","remote_url":"https://{repo_id}.git","branch":"main",'
            f'"commit":"{commit}","tree":"{rng.getrandbits(160):040x}","subdir":"",'
            f'"diff_digest":null}}'
        )
        spec = _spec(workflow, index)
        submitted_jobs = ",".join(
            f'{{"workflow_name":"{workflow}","spec":{spec},"deps":{_deps(job)}}}'
            for job in range(JOBS_PER_RUN)
        )
        submission = (
            f'{{"request":{{"repo":{repo},"workflow_name":"{workflow}","provider":null,'
            f'"args":[],"variables":{{}},"tag":null,"jobs":[{submitted_jobs}]}},'
            f'"externals":[{",".join(["[]"] * JOBS_PER_RUN)}],"rerun_of":null}}'
        )
        run = (
            name,
            prefix,
            counter,
            repo_id,
            repo,
            workflow,
            None,
            "[]",
            "{}",
            None,
            self.users[index % USERS],
            at,
            submission,
        )
        outcome = rng.random()
        jobs, logs = [], []
        for job_index in range(JOBS_PER_RUN):
            status, reason = "done", "done"
            if job_index == JOBS_PER_RUN - 1 and outcome < 0.08:
                status, reason = (
                    ("failed", "exit_code")
                    if outcome < 0.05
                    else ("stopped", "stopped_by_user")
                    if outcome < 0.07
                    else ("aborted", "aborted_by_user")
                )
            job_id = f"{rng.getrandbits(128):032x}"
            runner = self.runner_ids[(index + job_index) % RUNNERS]
            claimed = at + timedelta(seconds=1 + job_index)
            running = claimed + timedelta(seconds=2)
            finished = running + timedelta(seconds=30 + rng.randrange(600))
            history = (
                f'[{{"status":"submitted","at":"{_iso(at)}"}},'
                f'{{"status":"provisioning","at":"{_iso(claimed)}","runner":"{runner}"}},'
                f'{{"status":"running","at":"{_iso(running)}"}},'
                f'{{"status":"{status}","at":"{_iso(finished)}","reason":"{reason}"}}]'
            )
            job = {
                "id": job_id,
                "run_name": name,
                "index": job_index,
                "workflow_name": workflow,
                "spec": spec,
                "deps": _deps(job_index),
                "status": status,
                "reason": reason,
                "exit_code": 0 if status == "done" else 1,
                "runner_id": runner,
                "gpu_indexes": "[]",
                "host_ports": "[]",
                "cache_key": f"{rng.getrandbits(256):064x}",
                "cache_reason": "no earlier run" if job_index == 0 else "dependency will run",
                "external_artifacts": "[]",
                "history": history,
                "version": 4,
                "submitted_at": at,
                "status_at": finished,
                "finished_at": finished,
            }
            job["api_json"] = self.api_json(_decoded(job))
            jobs.append(tuple(job.get(column) for column in self.columns["jobs"]))
            logs += self._logs(job_id, running)
        self.filled.runs += 1
        self.filled.jobs += len(jobs)
        self.filled.names.append(name)
        self.filled.submitted.append(at)
        return run, jobs, logs

    def _logs(self, job_id: str, start: datetime) -> list[tuple[Any, ...]]:
        """1 to 3 chunks of about `LOG_BYTES_PER_JOB` in all (what the job wrote in one go)."""
        chunks = 1 + self.rng.randrange(3)
        size = LOG_BYTES_PER_JOB // chunks
        rows = []
        for seq in range(chunks):
            offset = self.rng.randrange(len(self.text) - size)
            data = self.text[offset : offset + size]
            rows.append((job_id, seq, start + timedelta(seconds=seq), "stdout", data))
            self.filled.log_bytes += len(data)
        self.filled.logs += chunks
        return rows


_JSON_COLUMNS = ("spec", "deps", "gpu_indexes", "host_ports", "history")


def _decoded(job: dict[str, Any]) -> dict[str, Any]:
    """A job's columns as `JobRow` holds them (JSON decoded)."""
    values = dict(job)
    for column in _JSON_COLUMNS:
        values[column] = json.loads(job[column])
    return values


def _deps(job_index: int) -> str:
    """The jobs of a run form a chain."""
    return "[]" if job_index == 0 else f"[{job_index - 1}]"


def _spec(workflow: str, index: int) -> str:
    return (
        f'{{"workflow_name":"{workflow}","provider":"bash","image":null,'
        f'"commands":["pip install -r requirements.txt","python train.py --seed {index % 97}"],'
        '"entrypoint":null,"env":{"PYTHONUNBUFFERED":"1"},"working_dir":".","python":null,'
        '"requirements":null,"artifacts":[{"path":"checkpoints","mount":false}],"cache":[],'
        '"ports":[],"apps":[],"resources":{"cpu":4,"memory_mib":16384,"gpu":null,'
        '"shm_size_mib":null,"interruptible":false,"local":false,"nodes":1},'
        '"registry_auth":null,"triggers":[],"retry":null,"labels":{},"node_rank":0}'
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _naive(value: Any) -> Any:
    return value.astimezone(UTC).replace(tzinfo=None) if isinstance(value, datetime) else value


def _fill_sqlite(url: str, rows: _Rows) -> None:
    import sqlite3

    from sqlalchemy.engine import make_url

    def text(value: Any) -> Any:
        # As SQLAlchemy's SQLite DATETIME stores it.
        if isinstance(value, datetime):
            return _naive(value).strftime("%Y-%m-%d %H:%M:%S.%f")
        return int(value) if isinstance(value, bool) else value

    connection = sqlite3.connect(make_url(url).database or "")
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")

        def insert(table: str, values: list[tuple[Any, ...]]) -> None:
            columns = rows.columns[table]
            marks = ",".join("?" * len(columns))
            names = ", ".join(f'"{column}"' for column in columns)
            statement = f"INSERT INTO {table} ({names}) VALUES ({marks})"
            connection.executemany(statement, ([text(v) for v in row] for row in values))

        with connection:
            insert("users", rows.users_rows())
            insert("runners", rows.runner_rows())
        for runs, jobs, logs in rows.batches():
            with connection:
                insert("runs", runs)
                insert("jobs", jobs)
                insert("logs", logs)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("ANALYZE")
    finally:
        connection.close()


async def _fill_postgres(url: str, rows: _Rows) -> None:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:

        async def copy(table: str, values: list[tuple[Any, ...]]) -> None:
            records = ([_naive(v) for v in row] for row in values)
            await connection.copy_records_to_table(
                table, records=records, columns=rows.columns[table]
            )

        await copy("users", rows.users_rows())
        await copy("runners", rows.runner_rows())
        for runs, jobs, logs in rows.batches():
            async with connection.transaction():
                await copy("runs", runs)
                await copy("jobs", jobs)
                await copy("logs", logs)
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


def counts(url: str) -> dict[str, int]:
    """Rows per filled table (for the tests)."""
    from sqlalchemy import func, select

    from dstack.server.db.engine import create_engine
    from dstack.server.db.models import JobRow, LogRow, RunRow

    async def read() -> dict[str, int]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                found = {}
                for name, table in (("runs", RunRow), ("jobs", JobRow), ("logs", LogRow)):
                    counted = select(func.count()).select_from(table)
                    found[name] = int(await connection.scalar(counted) or 0)
                found["log_bytes"] = int(
                    await connection.scalar(select(func.sum(func.length(LogRow.data)))) or 0
                )
                return found
        finally:
            await engine.dispose()

    return asyncio.run(read())


__all__ = ["Filled", "counts", "fill", "queries", "scale"]
