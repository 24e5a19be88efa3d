"""Entering a network namespace from the calling thread only.

A socket belongs to the namespace it was created in, so the lab creates probe
sockets inside a host's namespace and uses them from the main namespace:
no helper process, no fork, and scapy is only needed to build and parse bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)} (entering a namespace needs root)")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the body with this thread in network namespace `ns`, then come back."""
    path = NETNS_RUN_DIR / ns
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFoundError(f"no network namespace {ns!r} ({path} is missing)") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def ns_socket(ns: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace `ns` (usable from any namespace)."""
    with inside(ns):
        return socket.socket(family, type_, proto)


def sysctl(ns: str, key: str, value: str | int) -> None:
    """Write a sysctl of namespace `ns` (/proc/sys/net follows the opening thread's namespace)."""
    path = Path("/proc/sys") / key.replace(".", "/")
    with inside(ns):
        path.write_text(f"{value}\n")


def read_sysctl(ns: str, key: str) -> str:
    path = Path("/proc/sys") / key.replace(".", "/")
    with inside(ns):
        return path.read_text().strip()
