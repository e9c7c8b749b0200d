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
from typing import Any

from dnslib import QTYPE, RCODE

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


def configure(level: str, log_format: str) -> None:
    """Log to standard error at `level`, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class QueryLog:
    """One line per answered query (`--log-queries`): client, transport, name, type, rcode and
    the seconds kdns took, as CoreDNS's `log` plugin; in JSON output they are fields too."""

    def __init__(self) -> None:
        self._log = logging.getLogger(QUERY_LOGGER)

    def record(self, client: tuple[Any, ...], packet: bytes, reply: bytes, tcp: bool, seconds: float) -> None:
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
