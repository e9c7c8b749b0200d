"""DNS message primitives, once for every module that reads or writes messages: the header, its
flag bits and rcodes, the limits of names and messages, walking names, and TCP length framing
(RFC 1035 4.1 and 4.2.2, RFC 6891 for EDNS).

`wire` (queries and our replies), `zone` (prepared answers), `upstream` (upstream answers),
and the shell's listeners and forwarder all use these; none defines its own.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!HHHHHH")  # ID, flags, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT
FIXED_RR = struct.Struct("!HHIH")  # a record after its owner name: TYPE, CLASS, TTL, RDLENGTH
TTL = struct.Struct("!I")
LENGTH_PREFIX = struct.Struct("!H")  # RFC 1035 4.2.2: a TCP message's length, first

# Header flag bits (RFC 1035 4.1.1; AD and CD: RFC 4035 3.2)
QR = 0x8000  # a response
OPCODE_MASK = 0x7800
AA = 0x0400  # authoritative answer
TC = 0x0200  # truncated: ask again over TCP
RD = 0x0100  # recursion desired
RA = 0x0080  # recursion available
AD = 0x0020  # authentic data, passed on from a validating upstream
CD = 0x0010  # checking disabled
RCODE_MASK = 0x000F

# Response codes (RFC 1035 4.1.1; BADVERS is an extended rcode, RFC 6891 6.1.3)
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16  # an EDNS version we do not speak

HEADER_LENGTH = 12
MAX_LABEL = 63  # RFC 1035 2.3.4
MAX_NAME_WIRE = 255  # RFC 1035 2.3.4, counting length bytes and the root
CLASSIC_UDP_LIMIT = 512  # RFC 1035 2.3.4: the limit without EDNS
TCP_LIMIT = 65535  # RFC 1035 4.2.2: the 2-byte length prefix
DEFAULT_MAX_UDP = 1232  # DNS Flag Day 2020: the largest UDP payload that avoids fragmentation
DO_BIT = 0x8000  # RFC 3225, in the OPT record's TTL field


class MalformedName(ValueError):
    """A name in a message that does not parse (RFC 1035 4.1.4)."""


def name_end(message: bytes, offset: int) -> int:
    """The offset just past the uncompressed name at `offset`, or -1 when there is no such name
    (a label type other than a plain length, a label past the message, over 255 bytes).

    For questions, where a compression pointer could only point back into the header."""
    start = offset
    size = len(message)
    while offset < size:
        length = message[offset]
        if length > MAX_LABEL:  # 0b01/0b10 prefixes are not labels; 0b11 is a pointer
            return -1
        offset += length + 1
        if offset - start > MAX_NAME_WIRE:
            return -1
        if length == 0:
            return offset
    return -1


def read_name(message: bytes, offset: int) -> int:
    """Check the (possibly compressed) name at `offset` and return the offset after it, or raise
    `MalformedName`.

    RFC 1035 4.1.4: a pointer points at an earlier name in the message. Each pointer must point
    strictly before the one that led to it, which rules out loops, and the name it makes must be
    made of plain labels and fit in 255 bytes.
    """
    size = len(message)
    after = -1  # the offset after the name as written here, known at its first pointer
    total = 0
    limit = offset  # a pointer must point before this
    while True:
        if offset >= size:
            raise MalformedName("name runs past the message")
        length = message[offset]
        if length >= 0xC0:
            if offset + 2 > size:
                raise MalformedName("pointer runs past the message")
            target = (length & 0x3F) << 8 | message[offset + 1]
            if after < 0:
                after = offset + 2
            if target >= limit:
                raise MalformedName("compression pointer does not point backwards")
            limit = target
            offset = target
            continue
        if length > MAX_LABEL:
            raise MalformedName("reserved label type")
        total += length + 1
        if total > MAX_NAME_WIRE:
            raise MalformedName("name longer than 255 bytes")
        if length == 0:
            return after if after >= 0 else offset + 1
        offset += length + 1


def skip_name(message: bytes, offset: int) -> int:
    """The offset after a (possibly compressed) name, without following pointers; -1 if it runs
    off the message or holds a reserved label type. For records kdns only steps over."""
    size = len(message)
    while offset < size:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length >= 0xC0:
            return offset + 2 if offset + 2 <= size else -1
        if length > MAX_LABEL:
            return -1
        offset += length + 1
    return -1


def frame(message: bytes) -> bytes:
    """A message as it goes on a TCP stream: its length first (RFC 1035 4.2.2)."""
    return LENGTH_PREFIX.pack(len(message)) + message


def framed_length(buffer: bytes | bytearray) -> int | None:
    """The length of the first message in a TCP buffer, once its prefix is in; else None."""
    if len(buffer) < 2:
        return None
    return int(buffer[0] << 8 | buffer[1])
