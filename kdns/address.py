"""An IP address and port as given on the command line: `ADDR`, `ADDR:PORT` or `[V6ADDR]:PORT`."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from kdns.errors import KdnsError

# The address a query came in on, for a log format's `{local}` (CoreDNS's `state.LocalIP()`: the
# UDP socket's bound address, a TCP connection's own). Set once by each UDP listener's task and
# each TCP connection's, inherited by the tasks they start, read only when a query log line is
# written: nothing on the hot path.
LOCAL_ADDRESS: ContextVar[str] = ContextVar("kdns_local_address", default="")


@dataclass(frozen=True, slots=True)
class SocketAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @classmethod
    def parse(cls, text: str, flag: str, lowest_port: int = 1) -> SocketAddress:
        """Parse `text` given for `flag` (named in errors); port 53 when none is given. Port 0
        (any free port) is allowed only where `lowest_port` is 0."""
        host, port_text = text.strip(), "53"
        if host.startswith("["):
            host, sep, rest = host[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise KdnsError(f"{flag} {text!r}: expected [ADDRESS]:PORT")
            port_text = rest[1:] or "53"
        elif host.count(":") == 1:
            host, port_text = host.split(":")
        try:
            address = ipaddress.ip_address(host)
            port = int(port_text)
        except ValueError:
            raise KdnsError(f"{flag} {text!r}: expected an IP address and an optional port") from None
        if not lowest_port <= port <= 65535:
            raise KdnsError(f"{flag} {text!r}: port {port} is out of range")
        return cls(str(address), port)


def can_listen_on_ipv6() -> bool:
    """Whether this host (or network namespace) can bind an IPv6 socket."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::", 0))
    except OSError:
        return False
    return True


def listen_addresses(
    texts: Sequence[str], flag: str, ipv6: Callable[[], bool] = can_listen_on_ipv6
) -> tuple[SocketAddress, ...]:
    """`--listen` values: `ADDR:PORT`, `[ADDR]:PORT`, or `:PORT`, every address of both families
    (`0.0.0.0` and `[::]` where the host has IPv6), as CoreDNS's `.:53` listens."""
    out: list[SocketAddress] = []
    for text in texts:
        if text.startswith(":") and text[1:].isdigit():
            out.append(SocketAddress.parse(f"0.0.0.0{text}", flag, lowest_port=0))
            if ipv6():
                out.append(SocketAddress.parse(f"[::]{text}", flag, lowest_port=0))
        else:
            out.append(SocketAddress.parse(text, flag, lowest_port=0))
    return tuple(out)
