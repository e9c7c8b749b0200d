"""The logs a Corefile configures (kdns/logs.py): `errors { consolidate }` counting what its
pattern finds and writing the count once a period, on trio's virtual clock; the `log` plugin's
line as CoreDNS writes it (against CoreDNS itself in tests/test_coredns_differential.py)."""

from __future__ import annotations

import logging

import dns.message
import trio
import trio.testing

from kdns.config import Consolidate
from kdns.core.logformat import rules
from kdns.logs import CONSOLIDATED_LOGGER, QUERY_LOGGER, Consolidating, QueryLog


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.getMessage()))


async def test_consolidate_counts_what_its_pattern_finds_and_writes_it_once_a_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lines = Lines()
    consolidating = Consolidating()
    lines.addFilter(consolidating)
    log = logging.getLogger("kdns.test-consolidate")
    log.addHandler(lines)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    rule = Consolidate(5.0, "5s", r"i/o timeout$", logging.WARNING)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(consolidating.consolidated, [rule])
            for _ in range(3):
                log.error("read udp 10.0.0.2:53: i/o timeout")
            log.error("something else")
            log.info("an info line that happens to end in i/o timeout")  # below WARNING: written
            assert lines.lines == [
                ("ERROR", "something else"),
                ("INFO", "an info line that happens to end in i/o timeout"),
            ]
            logging.getLogger(CONSOLIDATED_LOGGER).addHandler(lines)
            await trio.sleep(4.5)
            assert len(lines.lines) == 2  # the period is not over
            await trio.sleep(1.0)
            assert lines.lines[2:] == [("WARNING", "3 errors like 'i/o timeout$' occurred in last 5s")]
            log.warning("again: i/o timeout")
            nursery.cancel_scope.cancel()  # what was counted is written when it stops
        assert lines.lines[3:] == [("WARNING", "1 errors like 'i/o timeout$' occurred in last 5s")]
        log.error("after: i/o timeout")  # no rules any more: written as it is
        assert lines.lines[-1] == ("ERROR", "after: i/o timeout")
    finally:
        log.removeHandler(lines)
        logging.getLogger(CONSOLIDATED_LOGGER).removeHandler(lines)


def test_the_log_plugins_line_is_corednss_common_log_format() -> None:
    lines = Lines()
    logger = logging.getLogger(QUERY_LOGGER)
    logger.addHandler(lines)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        query = dns.message.make_query("Web.Example.org", "AAAA", use_edns=0, payload=1232, want_dnssec=True)
        query.id = 4242
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA | dns.flags.RA
        packet, answer = query.to_wire(), reply.to_wire()
        QueryLog(rules([])).record(("10.1.2.3", 53053), packet, answer, False, 0.000125)
        QueryLog(rules([])).record(("fd00::1", 53054, 0, 0), packet, answer, True, 0.5)
        QueryLog(rules(["example.com"])).record(("10.1.2.3", 53053), packet, answer, False, 0.1)  # out of scope
        expected_udp = (
            f'10.1.2.3:53053 - 4242 "AAAA IN web.example.org. udp {len(packet)} true 1232" '
            f"NOERROR qr,aa,rd,ra {len(answer)} 0.000125s"
        )
        expected_tcp = f'[fd00::1]:53054 - 4242 "AAAA IN web.example.org. tcp {len(packet)} true 65535" NOERROR'
        assert lines.lines[0] == ("INFO", expected_udp)
        assert lines.lines[1][1].startswith(expected_tcp) and lines.lines[1][1].endswith(" 0.5s")
        assert len(lines.lines) == 2
    finally:
        logger.removeHandler(lines)
        logger.setLevel(previous)
