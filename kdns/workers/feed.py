"""The pipes between the supervisor and its workers: frames (a 4-byte length and a pickle), and
the messages they carry. Both ends are this program.

Supervisor to worker: a spawned worker's `Start`, its `Objects` and `Loaded`, then the store's
journal, one `Change` a frame (pickled once however many workers are fed), with `Synced` whenever
the cluster's first sync changes, and a `Reconfigure` where a reload comes; where a reload changes
the cluster source, a `NewSource` and that source's `Objects`, and from there on its journal.
Worker to supervisor: its `WorkerFigures`, every REPORT_INTERVAL.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, NamedTuple

from kdns.address import SocketAddress
from kdns.config import ServeConfig
from kdns.core.model import ClusterObject, IPAddress

REPORT_INTERVAL = 1.0  # seconds between a worker's figures sent to the supervisor
READ_SIZE = 1 << 16  # bytes read from a pipe at once
OBJECTS_PER_FRAME = 2000  # objects pickled at once for a spawned worker: the GIL is let go between
_LENGTH = struct.Struct("!I")


class Start(NamedTuple):
    """Supervisor to a spawned worker, first: all it needs to answer as the others do, but the
    cluster's objects, which follow in `chunks` `Objects` frames."""

    config: ServeConfig
    addresses: tuple[SocketAddress, ...]  # with the ports the supervisor bound
    fallback_ns_addresses: tuple[IPAddress, ...]
    serial: int
    synced: bool
    chunks: int


class Objects(NamedTuple):
    """Some of the cluster's objects, for a spawned worker to load."""

    objects: list[ClusterObject]


class Reconfigure(NamedTuple):
    """A reload: the configuration to serve from here on, its cluster source unchanged (the
    operations endpoints in it are the supervisor's to serve)."""

    config: ServeConfig


class NewSource(NamedTuple):
    """A reload that changed the cluster source (`live.SOURCE_SETTINGS`): the configuration to
    serve from here on, and the new store's objects, which follow in `chunks` `Objects` frames;
    every change after them is that store's. The worker loads them beside the store it serves
    and swaps both at once."""

    config: ServeConfig
    fallback_ns_addresses: tuple[IPAddress, ...]
    serial: int
    synced: bool
    chunks: int


class Synced(NamedTuple):
    """Whether every watcher has listed the cluster once (a worker answers SERVFAIL for missing
    cluster names until then)."""

    synced: bool


def frame(message: object) -> bytes:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class FrameReader:
    """Whole messages out of the bytes of a pipe, however they were split."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages, offset, buffer = [], 0, self._buffer
        while len(buffer) - offset >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            end = offset + _LENGTH.size + length
            if end > len(buffer):
                break
            messages.append(pickle.loads(buffer[offset + _LENGTH.size : end]))
            offset = end
        del buffer[:offset]
        return messages
