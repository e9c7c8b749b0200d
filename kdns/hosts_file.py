"""The file behind `hosts` (CoreDNS's plugin/hosts): read when the pipeline is built, and again
whenever its size or modification time changes, looked at every `reload` seconds (hostsfile.go
`readHosts`). A file that is missing or cannot be read answers nothing at start (CoreDNS warns
and serves the Corefile's entries) and keeps the last table read later; a file over its byte
budget is not read (logged, counted), so the table never grows past it."""

from __future__ import annotations

import logging
import os

import trio

from kdns.config import HostsConfig
from kdns.core.budgets import StoreSize
from kdns.core.hosts import Hosts, HostsOptions, HostsSource, HostsTable, parse_hosts
from kdns.core.names import to_wire

log = logging.getLogger(__name__)


class HostsFile:
    """The hosts of `config` (its file's table and the Corefile's entries) in `source`, kept up
    to date by `run`."""

    def __init__(self, config: HostsConfig) -> None:
        self.config = config
        zones = tuple(to_wire(zone) for zone in config.zones)
        fallthrough = None if config.fallthrough is None else tuple(to_wire(zone) for zone in config.fallthrough)
        self.options = HostsOptions(zones, config.ttl, fallthrough, config.fallthrough_unsupported)
        self._zones = zones
        self._inline = parse_hosts("\n".join(config.inline), zones, config.reverse)
        self._seen: tuple[int, int] | None = None  # (mtime in ns, size) of the version read
        self.refused = 0  # versions not read: over the budget
        table = self._read()
        if table is None:
            log.warning("hosts: %s cannot be read; answering the Corefile's entries only", config.path)
        self.source = HostsSource(Hosts(self.options, table or HostsTable.empty(), self._inline))

    def _read(self) -> HostsTable | None:
        """The file's table if it changed since the last read; None if unchanged or unreadable."""
        path, budget = self.config.path, self.config.max_bytes
        try:
            stat = os.stat(path)
            if (stat.st_mtime_ns, stat.st_size) == self._seen:
                return None
            with open(path, "rb") as file:
                data = file.read(budget + 1)
        except OSError as error:
            log.debug("hosts: %s: %s", path, error)
            return None
        self._seen = (stat.st_mtime_ns, stat.st_size)
        if len(data) > budget:
            self.refused += 1
            log.error("hosts: %s is larger than %d bytes: not read (the last version read stays)", path, budget)
            return None
        return parse_hosts(data.decode("utf-8", "replace"), self._zones, self.config.reverse)

    def figures(self) -> StoreSize:
        hosts = self.source.hosts
        return StoreSize(self.config.max_bytes, hosts.size, hosts.entries, self.refused)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Look at the file every `reload` seconds (never with 0) until cancelled."""
        task_status.started()
        if self.config.reload <= 0:
            return
        while True:
            await trio.sleep(self.config.reload)
            table = await trio.to_thread.run_sync(self._read)
            if table is not None:
                self.source.replace(Hosts(self.options, table, self._inline))
                log.info("hosts: read %s again: %d entries", self.config.path, table.entries)
