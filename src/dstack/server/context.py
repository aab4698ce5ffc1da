"""`ServerContext`: what every service needs — DB sessions, blobs, clock, change events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from dstack.backends.base import Compute
from dstack.backends.registry import ComputeFactory, make_compute
from dstack.models.backends import BackendConfig
from dstack.server.principals import Principal
from dstack.server.settings import ServerSettings
from dstack.storage.base import AdminBlobStore
from dstack.tunnel.hub import TunnelHub

Clock = Callable[[], datetime]
K = TypeVar("K")
V = TypeVar("V")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Notifier:
    """Wakes every waiter at once when something changed (a status, a log line, a runner).

    Waiters re-check their condition after waking; a notify between two checks is never lost
    because each waiter captures the current event before checking.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        """The event the next `notify` sets; take it *before* checking the condition."""
        return self._event

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        """Wait until `event` is set or `timeout` seconds passed.

        Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives as the
        event is set, and the scheduler loop then never stops; it also starts a task per wait.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout, 0)):
                await event.wait()


class OpenClaims:
    """The runners whose claim long-poll waits in this process, and when each one's last
    claim here ended: a runner waiting on a claim is alive, however long it waits (it
    stops waiting if it dies: see `services/claims.claim`). In-process knowledge: another
    server sharing the database does not have it, so only a server that is the only
    process on its database lets runners lean on it (`ServerContext.single_process`)."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._until: dict[str, datetime] = {}
        self._ended: dict[str, datetime] = {}

    def enter(self, runner_id: str, until: datetime | None = None) -> None:
        """A claim of `runner_id` waits, at the latest `until` (its deadline)."""
        self._open[runner_id] = self._open.get(runner_id, 0) + 1
        if until is not None:
            self._until[runner_id] = max(until, self._until.get(runner_id, until))

    def leave(self, runner_id: str, at: datetime) -> None:
        left = self._open.get(runner_id, 0) - 1
        if left > 0:
            self._open[runner_id] = left
        else:
            self._open.pop(runner_id, None)
            self._until.pop(runner_id, None)
        self._ended[runner_id] = at

    def until(self, runner_id: str) -> datetime | None:
        """When the latest open claim of `runner_id` ends at the latest (None: none waits,
        or its deadline is unknown)."""
        return self._until.get(runner_id)

    def waiting(self, runner_id: str) -> bool:
        return runner_id in self._open

    def ended(self, runner_id: str) -> datetime | None:
        return self._ended.get(runner_id)

    def alive_since(self, cutoff: datetime) -> list[str]:
        """The runners waiting now, or whose last claim ended at `cutoff` or later."""
        recent = [r for r, at in self._ended.items() if at >= cutoff]
        return sorted({*self._open, *recent})


class ExpiringCache(Generic[K, V]):
    """Values kept for `ttl` seconds of this process's monotonic time; at most `size` of
    them (when full, everything is forgotten: the entries are cheap to look up again).

    `generation` changes with every `clear`: a value looked up before a clear is stale, and
    `put` drops it when given the generation its lookup started in.
    """

    def __init__(self, ttl: float, size: int = 1024) -> None:
        self._ttl = ttl
        self._size = size
        self._entries: dict[K, tuple[float, V]] = {}
        self.generation = 0

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, *, generation: int) -> None:
        if self._ttl <= 0 or generation != self.generation:
            return
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self._ttl, value)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1


@dataclass
class BuiltBackend:
    """A configured backend as this process built it from its stored row (`fingerprint`):
    its `Compute`, or why there is none (`error`: the credentials cannot be decrypted, the
    factory refused the settings)."""

    fingerprint: str
    config: BackendConfig
    compute: Compute | None
    error: str | None = None


class ServerContext:
    """One server's shared state; built by `create_app` (or by tests, with a fake clock)."""

    def __init__(
        self,
        settings: ServerSettings,
        engine: AsyncEngine,
        blobs: AdminBlobStore,
        *,
        clock: Clock = utcnow,
        compute_factory: ComputeFactory = make_compute,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.blobs = blobs
        self.clock = clock
        self.notifier = Notifier()
        # Builds the `Compute` of each configured backend (`services/backends.py`); tests
        # pass one that returns their in-memory twin.
        self.compute_factory = compute_factory
        # Backend name → its `Compute`, built once and reused, rebuilt when its row changes,
        # closed when dropped or when the server stops (`services/backends.py`).
        self.computes: dict[str, BuiltBackend] = {}
        # Woken only by changes that can give a runner something to claim or the scheduler
        # something to judge: new or re-queued jobs, finished jobs (freed resources, met
        # dependencies), runners that came or changed. A job's `running` report is not one.
        self.work = Notifier()
        # Woken by work that is not routine (`mark_changed`): anything but jobs done. The
        # scheduler judges a change of this kind after a short pause; jobs done alone (their
        # dependents' messages, a provisioning) wait for more changes a little longer.
        self.judge = Notifier()
        self.judge_soon = True
        self.claims = OpenClaims()
        self.started_at = clock()
        self.claim_lock = asyncio.Lock()
        # Runners' tunnel connections live in this process (see docs/api.md, "App tunnels").
        self.tunnels = TunnelHub()
        # Token digest → principal (`services/users.authenticate`), so that a request does
        # not cost a database lookup of its token. Cleared whenever users or tokens change
        # in this process; another process's change takes effect within the TTL.
        self.principals: ExpiringCache[str, Principal] = ExpiringCache(settings.auth_cache_seconds)
        # This server's id (`server_meta`), read or made once by `services/runners.server_id`.
        self.server_id: str | None = None
        # SQLite allows one writer, and a transaction that read before another one committed
        # cannot write at all (SQLITE_BUSY_SNAPSHOT, which no busy timeout cures). This
        # process is the only client, so its transactions simply take turns.
        self._serialize = engine.dialect.name == "sqlite"
        self._turn = asyncio.Lock()
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Set once the server was asked to exit (`drain`): long-polls answer at once.
        self.draining = False

    def drain(self) -> None:
        """The server is about to exit: every long-poll (a runner's claim, a log follow)
        answers now with what it has, instead of holding the graceful shutdown until its
        wait ends or it is cancelled. No claim hands out a job from now on (the runner
        claims again from the next server)."""
        self.draining = True
        self.work.notify()
        self.notifier.notify()

    @property
    def single_process(self) -> bool:
        """Whether this process is the only one using its database (SQLite): what it
        knows in memory (`claims`) is all there is to know."""
        return self._serialize

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success.

        Services that changed something waiters care about call `mark_changed`; waiters are
        woken only after the commit, so they never read the old state.
        """
        async with self._maybe_turn(), self._session() as session, session.begin():
            yield session
        if session.info.pop("changed", False):
            self.notifier.notify()
        if session.info.pop("judge", False):
            self.judge_soon = True
            self.judge.notify()
        if session.info.pop("work", False):
            self.work.notify()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading only, rolled back at the end.

        It does not wait for the writers' turn: in WAL mode a SQLite reader sees the last
        commit and never blocks a writer, so requests that only read (authentication,
        listings, log pages) proceed while a claim or a report is being written.
        """
        async with self._session() as session:  # closing it rolls the transaction back
            yield session

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading with Core statements, rolled back at the end, like
        `read`: for the busiest reads (listings, log pages), it skips the ORM session's
        work per statement (identity map, loading objects) that rows read once do not need.
        """
        if not self._serialize:
            async with self.engine.connect() as connection:
                yield connection
            return
        connection = await self.engine.connect()
        try:
            yield connection
        finally:
            await connection.close()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        # SQLAlchemy's async context managers close in a task of their own (so that a
        # cancellation cannot cut the close short) and the connection goes back to the pool
        # only once that task ran: meanwhile each concurrent request checks out a connection
        # of its own, and those beyond the pool's size are opened and closed every time. On
        # SQLite (run on this thread, see `db/sqlite.py`) closing never suspends, so it is
        # done in place and gives the connection back at once.
        if not self._serialize:
            async with self._sessions() as session:
                yield session
            return
        session = self._sessions()
        try:
            yield session
        finally:
            await session.close()

    @contextlib.asynccontextmanager
    async def _maybe_turn(self) -> AsyncIterator[None]:
        if not self._serialize:
            yield
            return
        async with self._turn:
            yield


def mark_changed(session: AsyncSession, *, work: bool = False, routine: bool = False) -> None:
    """Wake long-polls once this session's transaction commits; with `work`, also claims
    and the scheduler (see `ServerContext.work`). `routine` work is a job done (a freed
    slot, a dependency met): claims take what follows at once, and the scheduler may judge
    it with the next changes (`ServerContext.judge`)."""
    session.info["changed"] = True
    if work:
        session.info["work"] = True
        if not routine:
            session.info["judge"] = True
