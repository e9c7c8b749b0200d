"""The settings of `kdns serve`, validated once so that the rest of the program can trust them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdns.core.names import InvalidName, to_wire
from kdns.core.store import PodMode
from kdns.errors import KdnsError
from kdns.serve import ListenAddress, TcpLimits

DEFAULT_TTL = 30  # kubeadm's Corefile (`ttl 30`); CoreDNS's own default is 5
MAX_TTL = 3600  # CoreDNS's kubernetes plugin accepts 0-3600


@dataclass(frozen=True, slots=True)
class ServeConfig:
    snapshot: Path | None
    listen: tuple[ListenAddress, ...]
    cluster_domain: str
    pod_mode: PodMode
    ttl: int
    max_udp: int
    tcp: TcpLimits


def cluster_domain(text: str) -> str:
    """A cluster domain, lowercased and without the trailing dot."""
    domain = text.strip().rstrip(".").lower()
    try:
        if not domain:
            raise InvalidName("empty")
        to_wire(domain)
    except (InvalidName, UnicodeEncodeError) as error:
        raise KdnsError(f"--cluster-domain {text!r}: not a valid domain name ({error})") from None
    return domain


def ttl(value: int) -> int:
    if not 0 <= value <= MAX_TTL:
        raise KdnsError(f"--ttl {value}: must be between 0 and {MAX_TTL} seconds")
    return value


def max_udp(value: int) -> int:
    if not 512 <= value <= 65535:
        raise KdnsError(f"--max-udp-size {value}: must be between 512 and 65535 bytes")
    return value
