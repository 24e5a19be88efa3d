"""Shared fixtures for tests that build network namespaces (marked `netns`).

Such tests need root; without it they are skipped, not failed. Each test gets
its own topology (unique `kvl<id>` names), so pytest-xdist workers run side by
side; the fixture tears it down whatever the test body does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

try:
    from kcpvpn_lab.topology import Topology, clean
except ImportError:  # the lab package is not installed: netns tests skip below
    Topology = None  # type: ignore[assignment,misc]
    clean = None  # type: ignore[assignment]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if Topology is None:
        return "kcpvpn_lab is not installed: run `make build` (maturin develop in lab/)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    try:
        from kcpvpn_lab._emulator import LinkEmulator  # noqa: F401
    except ImportError:
        return "kcpvpn_lab has no native emulator (kcpvpn_lab._emulator): run `make build`"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("netns"):
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_sessionstart(session: pytest.Session) -> None:
    # Leftovers of crashed runs only: live runs (other xdist workers) are kept.
    if _skip_reason() is None:
        clean()


@pytest.fixture
def make_topology() -> Iterator[Callable[..., Topology]]:
    """`make_topology(clients=2, impair={...})` → a running Topology, removed after the test."""
    made: list[Topology] = []

    def make(**kwargs: Any) -> Topology:
        t = Topology(**kwargs)
        made.append(t)
        t.up()
        return t

    yield make
    errors = []
    for t in reversed(made):
        try:
            t.down()
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def topo(make_topology: Callable[..., Topology]) -> Topology:
    """One client, one server, an emulated wan with no impairment."""
    return make_topology(clients=1)
