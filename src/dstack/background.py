"""`Background`: one call on a thread of its own, its answer collected later."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """`call()` on a daemon thread, started at once. `result()` waits for the answer and
    raises, in the caller's thread, what `call` raised."""

    def __init__(self, call: Callable[[], T], *, name: str | None = None) -> None:
        self._call = call
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # re-raised by `result`, in the caller's thread
            self._error = exc

    def done(self) -> bool:
        """Whether `call` returned (or raised): `result()` would not wait."""
        return not self._thread.is_alive()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
