"""A scriptable upstream resolver for tests: the misbehaviour a real one will not show on demand.

It answers UDP and TCP on a loopback port with an A record (`address`) for any name, unless told
otherwise through `mode`:
- "answer": answer normally;
- "silent": never answer (timeouts, failover);
- "servfail": answer SERVFAIL;
- "truncate": over UDP, an empty answer with TC set; over TCP, the full answer;
- "wrong-id", "wrong-question", "wrong-port": first a forged answer (another ID; another
  question; the right answer sent from another socket), then, after `forged_delay`, the real one;
- "held": answer only once the test calls `release()` (a slow upstream, with no clock in it);
- "script": `script(query, answer)` returns the datagrams to send, each after its delay in seconds
  (None: once the test calls `release()`): garbage, malformed answers, answers to other questions,
  late answers, whatever a test needs;
- "large": `records` A records for any name, the most a message holds with 3,750 (60 KB): over
  UDP truncated (TC, no records) past 1,232 bytes, so they come over TCP.
It counts queries per transport and keeps the names asked; kdns's loop probe at start is kept
apart (`probes`), so that counts are those of the queries a test made.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class FakeUpstream:
    def __init__(self, address: str = "192.0.2.1", ttl: int = 300) -> None:
        self.address = address
        self.ttl = ttl
        self.mode = "answer"
        self.script: Callable[[dns.message.Message, bytes], Sequence[tuple[bytes, float | None]]] | None = None
        self.forged_delay = 0.2
        self.records = 3750  # A records of a "large" answer
        self._released = threading.Event()  # "held" answers wait for it
        self.udp_queries = 0
        self.tcp_queries = 0
        self.names: list[str] = []
        self.asked: list[tuple[str, str, bool]] = []  # over UDP: name, type, whether RD was set
        self.probes: list[str] = []
        self._udp, self._tcp = _bind_pair()
        self.port = self._udp.getsockname()[1]
        self._other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # for "wrong-port"
        self._other.bind(("127.0.0.1", 0))
        self._closed = False
        threading.Thread(target=self._serve_udp, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    @property
    def spec(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def queries(self) -> int:
        return self.udp_queries + self.tcp_queries

    def release(self) -> None:
        """Send every answer "held" back, and answer at once from now on."""
        self._released.set()

    def close(self) -> None:
        self._closed = True
        self._released.set()  # held and silent TCP answers give up
        for sock in (self._udp, self._tcp, self._other):
            sock.close()

    def _answer(self, query: dns.message.Message, tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif self.mode == "truncate" and not tcp:
            response.flags |= dns.flags.TC
        else:
            question = query.question[0]
            if question.rdtype == dns.rdatatype.A:
                response.answer.append(dns.rrset.from_text(question.name, self.ttl, "IN", "A", self.address))
        return response

    def _serve_udp(self) -> None:
        while not self._closed:
            try:
                data, peer = self._udp.recvfrom(65535)
            except OSError:
                return
            threading.Thread(target=self._reply_udp, args=(data, peer), daemon=True).start()

    def _reply_udp(self, data: bytes, peer: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text()
        if name.endswith(".kdns-loop-probe."):
            self.probes.append(name)
        else:
            self.udp_queries += 1
            self.names.append(name)
            rdtype = dns.rdatatype.to_text(query.question[0].rdtype)
            self.asked.append((name, rdtype, bool(query.flags & dns.flags.RD)))
        mode = self.mode
        if mode == "silent":
            return
        if mode == "held":
            self._released.wait()
        if mode == "large":
            with contextlib.suppress(OSError):
                self._udp.sendto(self._large(data, udp=True), peer)
            return
        response = self._answer(query, tcp=False)
        wire = response.to_wire()
        try:
            if mode == "script" and self.script is not None:
                for datagram, delay in self.script(query, wire):
                    if delay is None:
                        self._released.wait()  # held until the test calls release()
                    else:
                        time.sleep(delay)
                    self._udp.sendto(datagram, peer)
                return
            if mode == "wrong-id":
                forged = bytearray(wire)
                struct.pack_into("!H", forged, 0, (response.id + 1) % 65536)
                self._udp.sendto(bytes(forged), peer)
                time.sleep(self.forged_delay)
            elif mode == "wrong-question":
                other = dns.message.make_query("forged.example.", "A")
                other.id = response.id
                forged_response = dns.message.make_response(other)
                forged_response.answer.append(dns.rrset.from_text("forged.example.", 300, "IN", "A", "203.0.113.66"))
                self._udp.sendto(forged_response.to_wire(), peer)
                time.sleep(self.forged_delay)
            elif mode == "wrong-port":
                forged_elsewhere = dns.message.make_response(query)
                record = dns.rrset.from_text(query.question[0].name, 300, "IN", "A", "203.0.113.66")
                forged_elsewhere.answer.append(record)
                self._other.sendto(forged_elsewhere.to_wire(), peer)
                time.sleep(self.forged_delay)
            self._udp.sendto(wire, peer)
        except OSError:
            return

    def _serve_tcp(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._reply_tcp, args=(conn,), daemon=True).start()

    def _reply_tcp(self, conn: socket.socket) -> None:
        with conn:
            try:
                length = struct.unpack("!H", read_exactly(conn, 2))[0]
                query = dns.message.from_wire(read_exactly(conn, length))
            except (OSError, ConnectionError, struct.error):
                return
            self.tcp_queries += 1
            self.names.append(query.question[0].name.to_text())
            if self.mode == "silent":
                self._released.wait()  # the connection open and unanswered until close()
                return
            if self.mode == "held":
                self._released.wait()
            wire = (
                self._large(query.to_wire(), udp=False) if self.mode == "large" else self._answer(query, True).to_wire()
            )
            with contextlib.suppress(OSError):
                conn.sendall(struct.pack("!H", len(wire)) + wire)

    def _large(self, query: bytes, udp: bool) -> bytes:
        """`records` A records for the question of `query`, built as bytes (dnspython takes a
        while for thousands): each record's owner a pointer to the question (RFC 1035 4.1.4)."""
        end = 12
        while query[end]:
            end += query[end] + 1
        question = query[12 : end + 5]
        records = b"".join(
            b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, self.ttl, 4) + struct.pack("!I", 0xC6120000 + i)
            for i in range(self.records)
        )
        if udp and 12 + len(question) + len(records) > 1232:
            return query[:2] + struct.pack("!HHHHH", 0x8380, 1, 0, 0, 0) + question  # TC: ask over TCP
        return query[:2] + struct.pack("!HHHHH", 0x8180, 1, self.records, 0, 0) + question + records


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on the same free loopback port (a port free for UDP may
    be taken for TCP: try another)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise OSError("no free port for both UDP and TCP")


def read_exactly(conn: socket.socket, size: int) -> bytes:
    """`size` bytes from a stream socket, or ConnectionError if it closes first."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data
