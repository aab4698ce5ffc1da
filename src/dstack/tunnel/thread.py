"""`LoopThread`: an asyncio event loop on a daemon thread, for callers that are not async
(the thread-based runner daemon, the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

_T = TypeVar("_T")


class LoopThread:
    """Runs coroutines on its own loop. `stop()` cancels whatever still runs and joins."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> Future[_T]:
        """Schedule `coro` on the loop; never blocks."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run `coro` on the loop and wait for its result (or its exception)."""
        return self.submit(coro).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task, stop the loop and join the thread (up to `timeout` seconds).
        Idempotent; a loop that was never started is just closed."""
        if not self._thread.is_alive():
            if not self._loop.is_closed() and not self._loop.is_running():
                self._loop.close()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._cancel_all()
            self._loop.close()

    def _cancel_all(self) -> None:
        # Cancelled tasks may start others (a connection accepted just before): repeat.
        for _ in range(10):
            tasks = asyncio.all_tasks(self._loop)
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            gathered = asyncio.gather(*tasks, return_exceptions=True)
            self._loop.run_until_complete(gathered)
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        # A few more turns, so transports aborted by the cancelled tasks finish closing
        # (their sockets are closed by a callback the loop runs on its next turn).
        for _ in range(3):
            self._loop.run_until_complete(asyncio.sleep(0))
