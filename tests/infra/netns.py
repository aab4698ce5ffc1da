"""A second "host" on this machine: a network namespace joined to the host by a veth pair.

Inside, 127.0.0.1 is the namespace's own loopback, so a service listening there cannot be
reached from the host at all — only through whatever the namespace's processes dial out
to (the host side of the pair, `host_ip`). Needs root (or CAP_NET_ADMIN and
CAP_SYS_ADMIN); `netns` skips without it, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from tests.infra.fixtures import unavailable


class NetnsUnavailable(Exception):
    """Namespaces cannot be created here (not root, no `ip`, a sandbox forbids it)."""


@dataclass(frozen=True)
class NetNs:
    name: str
    host_ip: str
    """The host's end of the veth pair: what processes inside dial to reach the host."""
    ns_ip: str
    """The namespace's end of the pair."""

    def command(self, argv: list[str]) -> list[str]:
        """`argv`, run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(argv), text=True, **kwargs)


@contextmanager
def network_namespace() -> Iterator[NetNs]:
    """A fresh namespace with loopback up and a veth pair 10.200.N.1 (host) / .2 (inside);
    removed at the end (with the pair). Raises `NetnsUnavailable` when it cannot be made."""
    subnet = _free_subnet()
    tag = f"{os.getpid() % 100000}x{subnet}"
    ns = NetNs(name=f"dstack-{tag}", host_ip=f"10.200.{subnet}.1", ns_ip=f"10.200.{subnet}.2")
    host_end, ns_end = f"vh{tag}"[:15], f"vn{tag}"[:15]
    _ip("netns", "add", ns.name)
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip("link", "set", ns_end, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/24", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.ns_ip}/24", "dev", ns_end)
        _ip("-n", ns.name, "link", "set", ns_end, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)


@pytest.fixture
def netns() -> Iterator[NetNs]:
    try:
        with network_namespace() as ns:
            yield ns
    except NetnsUnavailable as exc:
        unavailable("a network namespace (root and iproute2)", exc)


def _ip(*args: str) -> None:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise NetnsUnavailable("the `ip` command (iproute2) is not installed") from exc
    if result.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _free_subnet() -> int:
    """An N whose 10.200.N.0/24 no interface of the host uses yet."""
    try:
        shown = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    except FileNotFoundError as exc:
        raise NetnsUnavailable("the `ip` command (iproute2) is not installed") from exc
    taken = {n for n in range(256) if f" 10.200.{n}." in shown}
    return random.choice([n for n in range(1, 255) if n not in taken])
