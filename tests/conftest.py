"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.apiserver import FakeApiServer
from tests.builders import namespace, service
from tests.fakeupstream import FakeUpstream
from tests.process import EXAMPLE, KdnsServer


@pytest.fixture(scope="module")
def example_server() -> Iterator[KdnsServer]:
    """`kdns serve` on the example cluster, shared by a module's read-only tests."""
    server = KdnsServer("--snapshot", str(EXAMPLE))
    yield server
    assert server.stop() == 0, server.log_text()


@pytest.fixture(scope="session")
def dig_installed() -> None:
    if shutil.which("dig") is None:
        pytest.fail("dig is not installed: apt-get install bind9-dnsutils (the README setup does)")


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    """The test API server with namespace prod and its Service web (10.96.0.5)."""
    server = FakeApiServer()
    server.apply(namespace("prod"))
    server.apply(service("prod", "web", ["10.96.0.5"]))
    yield server
    server.stop()


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    """Two fake upstreams answering any A question with 192.0.2.1 and 192.0.2.2."""
    first, second = FakeUpstream("192.0.2.1"), FakeUpstream("192.0.2.2")
    yield first, second
    first.close()
    second.close()
