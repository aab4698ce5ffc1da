"""What every scenario gets: the sizes of this run and a way to make warm workspaces."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import Row
from benchmarks.workspace import Workspace


@dataclass(frozen=True)
class Sizes:
    """How big and how often. `quick()` keeps the harness working in CI in well under a
    minute; `full()` is what the budgets are stated for."""

    runs: int
    big_mib: int
    small_files: int
    log_lines: int
    parallel_jobs: int
    queued_runs: int
    sim_runners: int
    api_clients: int
    api_requests: int
    scale_runs: int
    """S10: finished runs in the database (10 jobs and 1 KiB of logs each)."""
    scale_requests: int
    """S10: timed requests of each kind."""

    @classmethod
    def full(cls, runs: int = 5) -> Sizes:
        return cls(runs, 1024, 10_000, 1_000_000, 16, 1000, 50, 50, 20, 100_000, 300)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(1, 16, 300, 20_000, 4, 60, 10, 10, 5, 1000, 20)


@dataclass
class Bench:
    """Sizes plus the folder to work in (its disk is the one measured)."""

    sizes: Sizes
    work_dir: Path | None = None
    shared: bool = False
    databases: tuple[str, ...] = ("sqlite",)
    """The databases S7, S9 and S10 run on (`--db`); others always run on SQLite."""
    """Reuse one warm process-executor workspace across scenarios (quick mode: the server
    start would otherwise be most of its time)."""
    _kept: Workspace | None = None

    @contextlib.contextmanager
    def workspace(self, *, executor: str = "process", warm: bool = True) -> Iterator[Workspace]:
        """A fresh repository and home; the local server warm when `warm`; all of it
        stopped and removed at the end (with `shared`, at `close()`)."""
        if self.shared and executor == "process" and warm:
            if self._kept is None:
                self._kept = Workspace.create(self.work_dir, executor=executor)
                self._kept.warm_server()
            yield self._kept
            return
        ws = Workspace.create(self.work_dir, executor=executor)
        try:
            if warm:
                ws.warm_server()
            yield ws
        finally:
            ws.close()

    def close(self) -> None:
        """Stop and remove the shared workspace, if any."""
        if self._kept is not None:
            self._kept.close()
            self._kept = None


Scenario = Callable[[Bench], list[Row]]
