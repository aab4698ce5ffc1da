"""`Backoff` and `Reconnect`: the clients' one retry policy, on a fake clock."""

from __future__ import annotations

import itertools

import pytest

from dstack.api.transport import Backoff, Reconnect
from dstack.errors import NotFoundError, ServerGoneError, ServerUnreachableError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def _reconnect(clock: Clock, said: list[str], **kwargs: object) -> Reconnect:
    return Reconnect(
        say=said.append,
        sleep=clock.sleep,
        clock=lambda: clock.now,
        **kwargs,  # type: ignore[arg-type]
    )


def _failing(times: int) -> object:
    calls = itertools.count()

    def call() -> str:
        if next(calls) < times:
            raise ServerUnreachableError("cannot reach the dstack server at http://x")
        return "page"

    return call


def test_backoff_doubles_up_to_its_cap() -> None:
    pauses = Backoff(0.5, 5.0).pauses()
    assert [next(pauses) for _ in range(7)] == [0.5, 1, 2, 4, 5, 5, 5]


def test_an_outage_is_said_once_and_the_call_carries_on() -> None:
    clock, said, refreshed = Clock(), list[str](), list[int]()
    reconnect = _reconnect(clock, said, give_up_after=60, refresh=lambda: refreshed.append(1))

    assert reconnect.call(_failing(5)) == "page"  # type: ignore[arg-type]
    assert said == ["server unreachable, reconnecting…", "reconnected"]
    assert clock.pauses == [0.5, 1, 2, 4, 5]
    assert len(refreshed) == 5  # before each try again: the local server may have moved
    assert not reconnect.reconnecting


def test_the_bound_ends_it_with_one_line_and_its_own_exit_code() -> None:
    clock, said = Clock(), list[str]()
    reconnect = _reconnect(clock, said, give_up_after=10, what_then="`dstack attach r`")

    with pytest.raises(ServerGoneError) as raised:
        reconnect.call(_failing(1000))  # type: ignore[arg-type]

    assert clock.now == 10  # the last pause is cut to the bound
    assert raised.value.exit_code == 75
    assert raised.value.hint is None
    assert raised.value.message.startswith("gave up after 10s without the server: cannot reach")
    assert raised.value.message.endswith("; `dstack attach r`")
    assert said == ["server unreachable, reconnecting…"]


def test_an_answer_of_the_server_is_not_waited_out() -> None:
    clock, said = Clock(), list[str]()

    def gone() -> str:
        raise NotFoundError("run r not found")

    with pytest.raises(NotFoundError):
        _reconnect(clock, said, give_up_after=10).call(gone)
    assert (said, clock.pauses) == ([], [])
