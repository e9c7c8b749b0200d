"""The settings of `kdns serve`, validated once so that the rest of the program can trust them.

A leaf of the shell: every option record (serve, forward, cache, watch, TCP), their validation
and resolv.conf parsing. It imports only the core, `address` and `errors`, so reading a
configuration pulls in neither trio nor the kubernetes client, and the modules it configures
import it, never the other way round.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import re2

from kdns.address import SocketAddress, can_listen_on_ipv6
from kdns.core import budgets
from kdns.core.logformat import LogRule
from kdns.core.names import REVERSE_ZONES, InvalidName, to_wire
from kdns.core.rewrite_rules import Rule as RewriteRule
from kdns.core.store import AS_THE_SPEC, PodMode, PublishOptions
from kdns.core.template_rules import Template
from kdns.errors import KdnsError

log = logging.getLogger(__name__)

DEFAULT_TTL = 30  # kubeadm's Corefile (`ttl 30`); CoreDNS's own default is 5
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_POD_MODE = PodMode.INSECURE  # kubeadm's Corefile: `pods insecure`
DEFAULT_LISTEN = "0.0.0.0:53"
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"  # kubeadm's Corefile: `forward . /etc/resolv.conf`
DEFAULT_CACHE_SIZE = 10_000  # forwarded answers cached (CoreDNS's cache: 9984)
DEFAULT_SERVE_STALE = 0.0  # seconds an expired answer may still be served; 0: off (CoreDNS's cache)
DEFAULT_LOG_LEVEL = "info"
DEFAULT_LOG_FORMAT = "text"
TCP_BUFFER_LOWEST = 128 * budgets.KIB  # room for a whole largest query and a batch of replies
DEFAULT_LAMEDUCK = 5.0  # kubeadm's Corefile: `health { lameduck 5s }`
MAX_TTL = 3600  # CoreDNS's kubernetes plugin accepts 0-3600
# Seconds between looks at the configuration file for a change; a Corefile's `reload` sets its own
# (CoreDNS's default: 30 s).
DEFAULT_CONFIG_POLL = 2.0
DEFAULT_HOSTS_TTL = 3600  # CoreDNS's `hosts`: `ttl` ...
DEFAULT_HOSTS_RELOAD = 5.0  # ... and `reload`
DEFAULT_HOSTS_FILE = "/etc/hosts"  # ... and the file without one named


DEFAULT_MAX_FAILS = 2  # CoreDNS's forward `max_fails`
DEFAULT_HEALTH_CHECK = 0.5  # CoreDNS's forward `health_check`, in seconds


class Policy(enum.Enum):
    RANDOM = "random"
    ROUND_ROBIN = "round_robin"
    SEQUENTIAL = "sequential"


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    policy: Policy = Policy.RANDOM
    timeout: float = 2.0  # per try, CoreDNS's read timeout
    max_concurrent: int = 1000
    min_ttl: int = 0
    max_ttl: int = 3600
    max_negative_ttl: int | None = None  # None: `max_ttl` for negative answers too
    max_fails: int = DEFAULT_MAX_FAILS  # failures in a row that mark an upstream down; 0: never
    health_check: float = DEFAULT_HEALTH_CHECK  # seconds between health checks of an upstream that is down
    health_check_name: str = "."  # the name the health check asks NS of (`health_check ... domain`)
    health_check_recursion: bool = True  # RD in the health check (off: `health_check ... no_rec`)


@dataclass(frozen=True, slots=True)
class TcpLimits:
    idle_timeout: float = 10.0  # seconds a connection may sit without a complete query
    max_connections: int = 1000  # beyond it, the connection idle longest is closed for a new one
    # Seconds a reply may take to be written: a client that stops reading cannot hold its
    # connection (RFC 7766 6.2.3 and 10); miekg/dns, and so CoreDNS, use 2 s.
    write_timeout: float = 2.0
    # Bytes every connection holds at once (partial queries, replies not yet written); past it,
    # the connection holding the most is closed.
    buffer_bytes: int = budgets.TCP_BUFFER_BYTES


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on every HTTP listener (/health, /ready): holding them open cannot starve DNS or
    the probes. The kubelet and Prometheus each use a connection or two."""

    max_connections: int = 64  # beyond it, the connection idle longest is closed for a new one
    # One address at its cap makes room among its own connections: many tenants may share a
    # node's address (host-network Pods), and the kubelet's probes come from it too.
    max_per_address: int = 8
    max_header_bytes: int = 8192  # the request line and headers of one request
    read_timeout: float = 5.0  # seconds for a whole request to arrive (a probe's own timeout is 1 s)
    write_timeout: float = 5.0  # seconds for a response to be taken


@dataclass(frozen=True, slots=True)
class OpsListeners:
    """Where the operations endpoints listen; None turns one off. CoreDNS's defaults are
    :8080 for `health`, :8181 for `ready` and :9153 for `prometheus`."""

    health: SocketAddress | None = None
    ready: SocketAddress | None = None
    metrics: SocketAddress | None = None
    limits: HttpLimits = HttpLimits()


DEFAULT_HEALTH_LISTEN = "0.0.0.0:8080"  # CoreDNS's `health`
DEFAULT_READY_LISTEN = "0.0.0.0:8181"  # CoreDNS's `ready`
DEFAULT_METRICS_LISTEN = "0.0.0.0:9153"  # CoreDNS's `prometheus`
OFF = ("off", "none", "")
# `kdns node-cache`: NodeLocal DNSCache's address and Corefile (`cache { success 9984 30; denial
# 9984 5 }`, health on the local address, metrics on 9253).
NODE_LOCAL_ADDRESS = "169.254.20.10"
NODE_CACHE_HEALTH_LISTEN = f"{NODE_LOCAL_ADDRESS}:8080"
NODE_CACHE_READY_LISTEN = f"{NODE_LOCAL_ADDRESS}:8181"
NODE_CACHE_METRICS_LISTEN = "0.0.0.0:9253"
NODE_CACHE_SUCCESS = (9984, 30)  # capacity, longest TTL
NODE_CACHE_DENIAL = (9984, 5)
NODE_CACHE_SERVE_STALE = "1h"  # cached names keep resolving while the cluster DNS is away


def ops_address(flag: str, text: str, ipv6: Callable[[], bool] = can_listen_on_ipv6) -> SocketAddress | None:
    """`ADDR:PORT` for an operations listener, or None for `off`; `:PORT`, every address of both
    families (one dual-stack socket on `[::]` where the host has IPv6), as Go listens on `:8080`."""
    text = text.strip()
    if text.lower() in OFF:
        return None
    if text.startswith(":") and text[1:].isdigit():
        text = ("[::]" if ipv6() else "0.0.0.0") + text
    return SocketAddress.parse(text, flag, lowest_port=0)


@dataclass(frozen=True, slots=True)
class WatchOptions:
    namespaces: tuple[str, ...] = ()  # only these namespaces; empty: all of them
    label_selector: str = ""  # Services only, as CoreDNS's `labels`
    watch_endpoints: bool = True  # off: no EndpointSlices, so no endpoint records (CoreDNS's `noendpoints`)
    watch_pods: bool = False  # only `--pods verified` needs Pods
    watch_timeout: int = 300  # a watch asks the server to end it after [t, 2t) s (client-go: 5-10 min)
    request_timeout: float = 30.0  # connect and read timeout of a list; a watch adds watch_timeout
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    page_size: int = 500


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    upstreams: tuple[SocketAddress, ...]
    upstreams_from: str  # where they came from, for messages: "--upstream" or the resolv.conf path
    stubs: tuple[tuple[str, tuple[SocketAddress, ...]], ...]  # (domain, its upstreams)
    options: ForwardOptions
    cache_size: int
    serve_stale: float  # seconds an expired answer may still be served when upstreams fail; 0: never
    prefetch: bool
    denial_cache_size: int | None = None  # negative answers' own capacity (CoreDNS's cache `denial`)
    tcp_upstreams: tuple[SocketAddress, ...] = ()  # always asked over TCP (CoreDNS's forward `force_tcp`)
    cache_bytes: int = budgets.FORWARD_CACHE_BYTES  # the cache's (positive answers') bytes
    denial_cache_bytes: int = budgets.DENIAL_CACHE_BYTES  # with `denial_cache_size`: negative answers' bytes
    # Names under these the default upstreams are never asked (CoreDNS's forward `except`): SERVFAIL.
    excepted: tuple[str, ...] = ()
    keep_ttl: bool = False  # cached answers served with the TTLs they were stored with (CoreDNS's `keepttl`)


@dataclass(frozen=True, slots=True)
class Consolidate:
    """`errors { consolidate DURATION REGEXP [LEVEL] }`: warnings and errors REGEXP finds (RE2,
    Go's syntax), counted and written once a period (`logs.Consolidating`)."""

    period: float
    period_text: str  # as the Corefile wrote it, for the line (CoreDNS prints Go's duration)
    pattern: str
    level: int = logging.ERROR

    @property
    def compiled(self) -> re2._Regexp[str]:
        return _compiled_pattern(self.pattern)


@functools.lru_cache(maxsize=64)
def _compiled_pattern(text: str) -> re2._Regexp[str]:
    return re2.compile(text)


@dataclass(frozen=True, slots=True)
class HostsConfig:
    """A hosts file and entries to answer from (CoreDNS's `hosts`; `kdns.core.hosts`)."""

    path: str  # read again when it changes; a missing file answers nothing, as CoreDNS
    inline: tuple[str, ...] = ()  # entries written in the Corefile, `ADDRESS NAME...`
    zones: tuple[str, ...] = (".",)  # the names answered (the server block's zones)
    ttl: int = DEFAULT_HOSTS_TTL
    reload: float = DEFAULT_HOSTS_RELOAD  # seconds between looks at the file; 0: never again
    reverse: bool = True  # PTR records for the entries (off: `no_reverse`)
    fallthrough: tuple[str, ...] | None = None  # names handed on when absent; None: none (SERVFAIL)
    fallthrough_unsupported: bool = False  # other types than A, AAAA, PTR handed on too
    max_bytes: int = budgets.HOSTS_FILE_BYTES  # the largest file read


@dataclass(frozen=True, slots=True)
class BlockPlugins:
    """What a Corefile's server block of its own zones (a stub domain) answers with before it
    forwards, in CoreDNS's plugin order: any, loadbalance, rewrite, template, hosts. A stub
    domain given by flags has none of its own: it takes the main block's `any` and
    `loadbalance`."""

    answer_any: bool = False
    loadbalance: bool = False
    rewrite: tuple[RewriteRule, ...] = ()
    templates: tuple[Template, ...] = ()
    hosts: HostsConfig | None = None


@dataclass(frozen=True, slots=True)
class ServeConfig:
    snapshot: Path | None  # None: follow a live cluster
    kubeconfig: str | None
    context: str | None
    watch: WatchOptions
    listen: tuple[SocketAddress, ...]
    cluster_domain: str
    pod_mode: PodMode
    ttl: int
    max_udp: int
    tcp: TcpLimits
    ops: OpsListeners  # where /health and /ready are served
    forward: ForwardConfig
    lameduck: float = DEFAULT_LAMEDUCK  # seconds of answering after SIGTERM, not ready
    log_queries: bool = False  # one log line per answered query (CoreDNS's `log`)
    log_rules: tuple[LogRule, ...] = ()  # a Corefile's `log`: CoreDNS's scopes, classes and format
    consolidate: tuple[Consolidate, ...] = ()  # a Corefile's `errors { consolidate ... }`
    log_level: str = DEFAULT_LOG_LEVEL
    log_format: str = DEFAULT_LOG_FORMAT
    config_file: str | None = None  # where settings were read from, watched for changes
    workers: int = 1  # processes answering queries on the same ports (`--workers`)
    autopath: bool = False  # answer a Pod's query from its search path (`--autopath`)
    node_cache: bool = False  # `kdns node-cache`: a node-local cache, no zone and no API watch
    search: tuple[str, ...] = ()  # kdns's own resolv.conf search domains: autopath's last steps
    reply_cache_bytes: int = budgets.REPLY_CACHE_BYTES  # kept replies, UDP and TCP together
    pod_index_bytes: int = budgets.POD_INDEX_BYTES  # the Pods' addresses (`--pods verified`, `--autopath`)
    worker_queue_bytes: int = budgets.WORKER_QUEUE_BYTES  # changes queued for one worker
    config_max_bytes: int = budgets.CONFIG_FILE_BYTES  # the largest `config_file` read
    config_poll: float = DEFAULT_CONFIG_POLL  # seconds between looks at `config_file` for a change
    config_poll_jitter: float = 0.0  # ... give or take half this many, at random (a Corefile's `reload`)
    loadbalance: bool = False  # each reply's A, AAAA and MX records in turn (CoreDNS's `loadbalance`)
    hosts: HostsConfig | None = None  # answer from a hosts file first (CoreDNS's `hosts`)
    hosts_max_bytes: int = budgets.HOSTS_FILE_BYTES  # the largest hosts file read
    answer_any: bool = False  # ANY gets one HINFO record, RFC 8482 (CoreDNS's `any`)
    publish: PublishOptions = AS_THE_SPEC  # endpoint_pod_names, ignore empty_service
    api_endpoint: str | None = None  # the API server's URL over the kubeconfig's (CoreDNS's `endpoint`)
    cluster_fallthrough: bool = False  # a cluster name that does not exist goes on upstream (`fallthrough`)
    # The reverse zones the cluster zone serves (a Corefile's `kubernetes` zones), and those
    # whose names it holds nothing of go on upstream (its `fallthrough`): kubeadm's, both.
    reverse_zones: tuple[str, ...] = REVERSE_ZONES
    reverse_fallthrough: tuple[str, ...] = REVERSE_ZONES
    rewrite: tuple[RewriteRule, ...] = ()  # questions asked under another name (CoreDNS's `rewrite`)
    templates: tuple[Template, ...] = ()  # answers made from patterns (CoreDNS's `template`)
    # A Corefile's stub-domain blocks' own plugins, by zone (`forward.stubs` has their upstreams,
    # none for a block that does not forward: what it does not answer is SERVFAIL, as CoreDNS's
    # end of a plugin chain).
    stub_plugins: tuple[tuple[str, BlockPlugins], ...] = ()


# Settings a reload applies at once; every other change waits for a restart (logged as such).
# What applies at once wherever kdns runs, `--workers` too (the rest is built again: `kdns.live`).
LIVE_SETTINGS = ("log_level", "log_format", "config_poll", "config_poll_jitter", "config_max_bytes", "lameduck")


def worker_share(config: ServeConfig) -> ServeConfig:
    """`config` with the byte budgets of the stores each worker keeps for itself divided among
    `config.workers`: the kept replies, the forward cache (negative answers too) and the TCP
    buffers. A budget flag bounds the instance, however many processes answer, as Unbound's
    `msg-cache-size` bounds the one cache its threads share: an operator sizes the Pod's memory
    from the flags, and `--workers 4` would otherwise hold four times what they say. The sum over
    the workers is what `kdns_store_budget_bytes` publishes. The TCP buffers keep at least
    TCP_BUFFER_LOWEST each (a whole largest query and a batch of replies). Counts that bound work
    rather than memory (`--max-tcp-connections`, `--max-concurrent`, `--cache-size`) stay per
    worker: each worker has its own event loop and clients to be fair among."""
    share = config.workers
    if share <= 1:
        return config
    forward = config.forward
    return replace(
        config,
        reply_cache_bytes=config.reply_cache_bytes // share,
        tcp=replace(config.tcp, buffer_bytes=max(TCP_BUFFER_LOWEST, config.tcp.buffer_bytes // share)),
        forward=replace(
            forward, cache_bytes=forward.cache_bytes // share, denial_cache_bytes=forward.denial_cache_bytes // share
        ),
    )


def cluster_domain(text: str) -> str:
    """A cluster domain, lowercased and without the trailing dot."""
    domain = text.strip().rstrip(".").lower()
    try:
        if not domain:
            raise InvalidName("empty")
        to_wire(domain)
    except (InvalidName, UnicodeEncodeError) as error:
        raise KdnsError(f"--cluster-domain {text!r}: not a valid domain name ({error})") from None
    try:
        # The longest name kdns publishes whatever the cluster holds (spec 2.2).
        to_wire(f"dns-version.{domain}")
    except InvalidName:
        raise KdnsError(f"--cluster-domain {text!r}: too long: dns-version.{domain} would be over 255 bytes") from None
    return domain


def ttl(value: int) -> int:
    if not 0 <= value <= MAX_TTL:
        raise KdnsError(f"--ttl {value}: must be between 0 and {MAX_TTL} seconds")
    return value


def max_udp(value: int) -> int:
    if not 512 <= value <= 65535:
        raise KdnsError(f"--max-udp-size {value}: must be between 512 and 65535 bytes")
    return value


def namespaces(text: str | None) -> tuple[str, ...]:
    """`--namespaces a,b`: names, each a valid namespace name."""
    if text is None:
        return ()
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    for name in names:
        if not _NAMESPACE_RE.match(name):
            raise KdnsError(f"--namespaces: {name!r} is not a namespace name")
    if not names:
        raise KdnsError("--namespaces: no namespace given")
    return names


MAX_WORKERS = 256


def workers(text: str, cpus: int | None) -> int:
    """`--workers N` (1 to MAX_WORKERS), or `auto`: one per CPU this process may run on."""
    if text == "auto":
        return max(1, min(cpus or 1, MAX_WORKERS))
    try:
        count = int(text)
    except ValueError:
        raise KdnsError(f"--workers {text!r}: expected a number of processes or auto") from None
    if not 1 <= count <= MAX_WORKERS:
        raise KdnsError(f"--workers {text}: must be between 1 and {MAX_WORKERS}")
    return count


# Suffixes of a size in bytes, as Kubernetes writes quantities (`64Mi`, `1G`), and with a B.
_BYTE_UNITS = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
_BYTE_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def byte_size(flag: str, text: str, lowest: int = 1) -> int:
    """A size in bytes: `1048576`, `1Mi`, `64MiB`, `2G`; at least `lowest`."""
    match = _BYTE_SIZE_RE.match(str(text))
    if match is None or match.group(2) not in _BYTE_UNITS:
        raise KdnsError(f"{flag} {quoted(text)}: expected a size in bytes such as 1048576, 64Mi or 1G")
    size = int(float(match.group(1)) * _BYTE_UNITS[match.group(2)])
    if size < lowest:
        raise KdnsError(f"{flag} {quoted(text)}: must be at least {lowest} bytes")
    return size


QUOTED_LIMIT = 80  # characters of a value quoted in an error message


def quoted(value: object) -> str:
    """`value` as an error message quotes it: a scalar's repr cut short (a value may be
    megabytes), a list's or mapping's kind and length (its repr may expand YAML aliases)."""
    if isinstance(value, (list, dict)):
        return f"a {'list' if isinstance(value, list) else 'mapping'} of {len(value)} items"
    text = repr(value) if isinstance(value, (str, int, float, type(None))) else f"a {type(value).__name__}"
    return text if len(text) <= QUOTED_LIMIT else text[: QUOTED_LIMIT - 3] + "..."


def tcp_limits(idle_timeout: float, max_connections: int, write_timeout: float, buffer_bytes: str) -> TcpLimits:
    """`--tcp-idle-timeout`, `--max-tcp-connections`, `--tcp-write-timeout`, `--tcp-buffer-bytes`."""
    if idle_timeout <= 0 or max_connections < 1 or write_timeout <= 0:
        raise KdnsError("--tcp-idle-timeout, --tcp-write-timeout and --max-tcp-connections must be positive")
    return TcpLimits(
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        write_timeout=write_timeout,
        buffer_bytes=byte_size("--tcp-buffer-bytes", buffer_bytes, lowest=TCP_BUFFER_LOWEST),
    )


def forward_options(
    policy: str,
    timeout: float,
    max_concurrent: int,
    cache_size: int,
    min_ttl: int,
    max_ttl: int,
    max_negative_ttl: int | None = None,
) -> ForwardOptions:
    """`--policy`, `--upstream-timeout`, `--max-concurrent`, `--cache-min-ttl`, `--cache-max-ttl`
    (and a node cache's `--denial-max-ttl`), with `--cache-size` checked beside them."""
    if max_concurrent < 1 or timeout <= 0 or cache_size < 0:
        raise KdnsError("--max-concurrent and --upstream-timeout must be positive, --cache-size not negative")
    highest = max_ttl if max_negative_ttl is None else min(max_ttl, max_negative_ttl)
    if not 0 <= min_ttl <= highest:
        raise KdnsError("--cache-min-ttl, --cache-max-ttl (and --denial-max-ttl): need 0 <= min <= max")
    try:
        chosen = Policy(policy)
    except ValueError:
        raise KdnsError(f"--policy {quoted(policy)}: one of {', '.join(p.value for p in Policy)}") from None
    return ForwardOptions(chosen, timeout, max_concurrent, min_ttl, max_ttl, max_negative_ttl)


def watch_options(
    namespaces_text: str | None,
    labels: str,
    watch_pods: bool,
    watch_timeout: int,
    request_timeout: float,
    backoff_max: float,
    page_size: float,
) -> WatchOptions:
    """`--namespaces`, `--labels`, `--watch-timeout`, `--api-timeout`, `--api-backoff-max`,
    `--api-page-size`; Pods watched when a mode needs them."""
    if watch_timeout < 1:
        raise KdnsError(f"--watch-timeout {watch_timeout}: must be at least 1 second")
    return WatchOptions(
        namespaces=namespaces(namespaces_text),
        label_selector=labels,
        watch_pods=watch_pods,
        watch_timeout=watch_timeout,
        request_timeout=positive("--api-timeout", request_timeout),
        backoff_max=positive("--api-backoff-max", backoff_max),
        page_size=int(positive("--api-page-size", page_size)),
    )


def positive(flag: str, value: float) -> float:
    if value <= 0:
        raise KdnsError(f"{flag} {value}: must be positive")
    return value


_NAMESPACE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def stub_domain(text: str) -> tuple[str, tuple[SocketAddress, ...]]:
    """`--stub-domain DOMAIN=ADDR[:PORT][,ADDR...]` (kube-dns's stubDomains)."""
    domain, sep, addresses = text.partition("=")
    if not sep or not addresses.strip():
        raise KdnsError(f"--stub-domain {text!r}: expected DOMAIN=ADDR[:PORT][,ADDR...]")
    name = domain.strip().rstrip(".").lower()
    try:
        to_wire(name)
    except (InvalidName, UnicodeEncodeError):
        raise KdnsError(f"--stub-domain {text!r}: {domain!r} is not a domain name") from None
    return name, tuple(SocketAddress.parse(part, "--stub-domain") for part in addresses.split(",") if part.strip())


def duration(flag: str, text: str) -> float:
    """`90`, `90s`, `30m` or `1h`, in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise KdnsError(f"{flag} {text!r}: expected a duration such as 90s, 30m or 1h") from None
    if seconds < 0:
        raise KdnsError(f"{flag} {text!r}: must not be negative")
    return seconds


def resolv_conf_upstreams(path: str) -> list[SocketAddress]:
    """The `nameserver` lines of a resolv.conf file."""
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()  # noqa: SIM115
    except OSError as error:
        raise KdnsError(f"--resolv-conf {path}: cannot read it: {error}") from None
    found = []
    for number, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                found.append(SocketAddress.parse(parts[1], f"{path}: line {number}: nameserver"))
            except KdnsError as error:
                log.warning("%s", error)
    return found


def resolv_conf_search(path: str) -> tuple[str, ...]:
    """The domains of a resolv.conf file's last `search` (or `domain`) line, as glibc reads them;
    none when the file cannot be read."""
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()  # noqa: SIM115
    except OSError:
        return ()
    found: tuple[str, ...] = ()
    for line in lines:
        parts = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(parts) >= 2 and parts[0] in ("search", "domain"):
            found = tuple(part.rstrip(".").lower() for part in parts[1:] if part.rstrip("."))
    return found
