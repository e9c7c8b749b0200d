"""The hosts file behind `hosts` (kdns/hosts_file.py): read again when it changes, and bounded in
bytes: a file past `--hosts-max-bytes` is not read, counted as dropped, and the last table read
stays (README "Budgets")."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from kdns.config import HostsConfig
from kdns.core.names import to_wire
from kdns.hosts_file import HostsFile


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)  # the file is read on a real thread


async def test_a_file_past_its_budget_is_not_read_and_the_last_table_stays(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "NodeHosts"
    path.write_text("10.0.0.1 server-0\n")
    hosts = HostsFile(HostsConfig(path=str(path), reload=1.0, max_bytes=200))
    assert hosts.source.hosts.addresses(to_wire("server-0")) is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(hosts.run)
        path.write_text("".join(f"10.0.{i // 256}.{i % 256} node-{i}\n" for i in range(50)))  # over 200 bytes
        await trio.sleep(1.5)
        assert hosts.source.hosts.addresses(to_wire("server-0")) is not None  # the last table read
        assert hosts.source.hosts.addresses(to_wire("node-1")) is None
        figures = hosts.figures()
        assert figures.dropped == 1 and figures.budget == 200 and figures.entries == 1
        path.write_text("10.0.0.2 agent-1\n")  # within the budget again: read
        await trio.sleep(1.5)
        assert hosts.source.hosts.addresses(to_wire("agent-1")) is not None
        assert hosts.source.hosts.addresses(to_wire("server-0")) is None
        nursery.cancel_scope.cancel()
