"""Logging: plain text or one JSON object per line (`--log-format`), and the query log.

Every state change is one log line from the module that owns it (listening, synced, API lost
and back, upstream down and up, lameduck); the query log (`--log-queries`) adds one line per
answered query, off by default, as CoreDNS's `log` plugin.
"""

from __future__ import annotations

import json
import logging
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import trio
from dnslib import CLASS, QTYPE, RCODE, DNSError, DNSRecord

from kdns.address import LOCAL_ADDRESS
from kdns.config import Consolidate
from kdns.core import logformat, wire
from kdns.core.logformat import LogRule
from kdns.core.message import HEADER_LENGTH, RCODE_MASK, name_end
from kdns.core.names import presentation

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUERY_LOGGER = "kdns.queries"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (RFC 3339, UTC), level, logger, message, and the query fields
    of a query-log record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        query = getattr(record, "query", None)
        if isinstance(query, dict):
            entry.update(query)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


# Control characters (C0, DEL, C1) as they are written into a text log line: escaped, so that a
# value quoted from a packet or an object can neither end the line nor move the terminal.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


class TextFormatter(logging.Formatter):
    """One line per record: every control character of the message escaped (names from packets
    are in presentation format already; this holds for whatever else a message quotes)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_CONTROLS)


class Consolidating(logging.Filter):
    """A Corefile's `errors { consolidate DURATION REGEXP [LEVEL] }` (plugin/errors): a warning
    or error that REGEXP finds is counted, not written; `consolidated` writes each count once its
    period is over: `N errors like 'REGEXP' occurred in last DURATION`, at LEVEL. One filter on
    every handler `configure` makes; the running configuration's `consolidated` gives it its
    rules (a reload's new one takes over from the old, which writes what it counted)."""

    def __init__(self) -> None:
        super().__init__()
        self._counting: _Counting | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        counting = self._counting
        if counting is None or record.levelno < logging.WARNING or record.name == CONSOLIDATED_LOGGER:
            return True
        message = record.getMessage()
        for index, rule in enumerate(counting.rules):
            if rule.compiled.search(message):
                counting.counts[index] += 1
                return False
        return True

    async def consolidated(
        self, rules: Sequence[Consolidate], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Count by `rules` until cancelled (then write what was counted, as CoreDNS's stop does)."""
        counting = self._counting = _Counting(tuple(rules), [0] * len(rules))
        since: list[float | None] = [None] * len(rules)
        task_status.started()
        try:
            while True:
                await trio.sleep(CONSOLIDATE_LOOK)
                now = trio.current_time()
                for index, rule in enumerate(counting.rules):
                    if counting.counts[index] and since[index] is None:
                        since[index] = now  # the period starts with its first error (CoreDNS's timer)
                    started = since[index]
                    if started is not None and now - started >= rule.period:
                        counting.write(index)
                        since[index] = None
        finally:
            if self._counting is counting:
                self._counting = None
            for index in range(len(counting.rules)):
                counting.write(index)


@dataclass
class _Counting:
    rules: tuple[Consolidate, ...]
    counts: list[int]

    def write(self, index: int) -> None:
        count, self.counts[index] = self.counts[index], 0
        if count:
            rule = self.rules[index]
            logging.getLogger(CONSOLIDATED_LOGGER).log(
                rule.level, "%d errors like '%s' occurred in last %s", count, rule.pattern, rule.period_text
            )


CONSOLIDATED_LOGGER = "kdns.errors"
CONSOLIDATE_LOOK = 0.25  # seconds between looks at the counts: how late a period's line may come
CONSOLIDATING = Consolidating()


def configure(level: str, log_format: str) -> None:
    """Log to standard error at `level`, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CONSOLIDATING)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class QueryLog:
    """One line per answered query (`--log-queries`): client, transport, name, type, rcode and
    the seconds kdns took; in JSON output they are fields too. With `rules` (a Corefile's `log`),
    CoreDNS's: the names its scopes hold, the replies its classes take, its format (by default
    CoreDNS's common log format), so that what reads CoreDNS's query log reads kdns's."""

    def __init__(self, rules: Sequence[LogRule] = ()) -> None:
        self._log = logging.getLogger(QUERY_LOGGER)
        self._rules = tuple(rules)
        self._formats = {rule.format: logformat.parsed(rule.format) for rule in rules}

    def record(self, client: tuple[Any, ...], packet: bytes, reply: bytes, tcp: bool, seconds: float) -> None:
        if self._rules:
            self._as_coredns(client, packet, reply, tcp, seconds)
            return
        end = name_end(packet, HEADER_LENGTH)
        if end < 0 or end + 4 > len(packet):
            name, qtype = "?", 0
        else:
            name = presentation(packet[HEADER_LENGTH:end])  # escaped: a name cannot forge a line
            qtype = struct.unpack_from("!H", packet, end)[0]
        type_name = str(QTYPE.get(qtype, str(qtype)))
        rcode = str(RCODE.get(reply[3] & RCODE_MASK, "?")) if len(reply) > 3 else "?"
        transport = "tcp" if tcp else "udp"
        fields = {
            "client": str(client[0]),
            "transport": transport,
            "name": name,
            "type": type_name,
            "rcode": rcode,
            "duration": round(seconds, 6),
        }
        self._log.info(
            "%s %s %s %s %s %.6fs", client[0], transport, name, type_name, rcode, seconds, extra={"query": fields}
        )

    def _as_coredns(self, client: tuple[Any, ...], packet: bytes, reply: bytes, tcp: bool, seconds: float) -> None:
        end = name_end(packet, HEADER_LENGTH)
        if end < 0 or end + 4 > len(packet) or len(reply) < HEADER_LENGTH:
            return  # no question to log (CoreDNS answers such a packet before any plugin)
        name = presentation(packet[HEADER_LENGTH:end]).lower()
        rule = logformat.rule_for(self._rules, name)
        if rule is None:
            return
        if "all" not in rule.classes and self._reply_class(reply) not in rule.classes:
            return
        qtype, qclass = struct.unpack_from("!HH", packet, end)
        try:
            edns = wire.parse_query(packet).edns
        except wire.QueryError:
            edns = None
        address = str(client[0])
        fields = {
            "{type}": str(QTYPE.get(qtype, f"TYPE{qtype}")),
            "{name}": name,
            "{class}": str(CLASS.get(qclass, f"CLASS{qclass}")),
            "{proto}": "tcp" if tcp else "udp",
            "{size}": str(len(packet)),
            "{remote}": _rfc3986(address),
            "{port}": str(client[1]),
            "{local}": _rfc3986(LOCAL_ADDRESS.get()),
            "{>id}": str(struct.unpack_from("!H", packet)[0]),
            "{>opcode}": str(packet[2] >> 3 & 0xF),
            "{>do}": "true" if edns is not None and edns.dnssec_ok else "false",
            # request.Size: 65535 over TCP, else the EDNS size (at least 512), else 512
            "{>bufsize}": str(65535 if tcp else max(512, edns.udp_size) if edns is not None else 512),
            "{rcode}": str(RCODE.get(reply[3] & RCODE_MASK, reply[3] & RCODE_MASK)),
            "{rsize}": str(len(reply)),
            "{duration}": format(Decimal(repr(seconds)), "f") + "s",  # Go's shortest, never an exponent
            "{>rflags}": logformat.header_flags(struct.unpack_from("!H", reply, 2)[0]),
        }
        line = logformat.rendered(self._formats[rule.format], fields)
        self._log.info("%s", line, extra={"query": {key.strip("{}>"): value for key, value in fields.items()}})

    @staticmethod
    def _reply_class(reply: bytes) -> str:
        rcode = reply[3] & RCODE_MASK
        answers, authority = struct.unpack_from("!HH", reply, 6)
        delegation = False
        if rcode == 0 and not answers and authority:
            try:
                parsed = DNSRecord.parse(reply)
            except DNSError:
                parsed = None
            if parsed is not None:
                types = {rr.rtype for rr in parsed.auth}
                delegation = QTYPE.NS in types and QTYPE.SOA not in types
        return logformat.reply_class(rcode, answers, delegation)


def _rfc3986(address: str) -> str:
    """An address as a URI writes it (an IPv6 one in brackets: CoreDNS's `appendAddrToRFC3986`);
    `-` where it is not known."""
    if not address:
        return logformat.EMPTY
    return f"[{address}]" if ":" in address else address
