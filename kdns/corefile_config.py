"""A Corefile, as kdns runs it: its server blocks and plugins made into the configuration records
the flags and the YAML make (`kdns.config.ServeConfig`), so that `kdns -conf PATH` (the kubeadm
Deployment's own arguments) and `kdns serve --corefile PATH` serve what CoreDNS would.

The shape kdns serves is the one every managed cluster's Corefile has: one server block holding
the cluster's zones with `kubernetes` (or, without it, the root zone: a forwarding cache), and
blocks of their own zones that forward them elsewhere (stub domains). All blocks share one port.

Each plugin takes the options listed in `PLUGINS` (what CoreDNS documents and kdns honours);
any other plugin or option, or a shape kdns does not serve, is a `CorefileError` naming the file
and line, and what kdns supports. Where CoreDNS's defaults differ from kdns's own flags' (the
kubernetes plugin's `ttl` is 5, not kubeadm's 30; no plugin, no listener), the Corefile's
meaning is CoreDNS's: `CorefileDefaults`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

import re2

from kdns import config
from kdns.address import SocketAddress, can_listen_on_ipv6
from kdns.config import ForwardConfig, ForwardOptions, OpsListeners, Policy, ServeConfig
from kdns.core import logformat
from kdns.core import template_rules as template
from kdns.core.names import REVERSE_ZONES, to_wire
from kdns.core.rewrite_rules import RewriteError, rule_of
from kdns.core.rewrite_rules import Rule as RewriteRule
from kdns.core.store import PodMode, PublishOptions
from kdns.corefile import CorefileError, Directive, ServerBlock
from kdns.errors import KdnsError

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class CorefileDefaults:
    """What a Corefile means where it says nothing: CoreDNS's defaults, in one place."""

    port: int = 53
    kubernetes_ttl: int = 5  # plugin/kubernetes: `ttl` 5 s
    pods: PodMode = PodMode.DISABLED  # plugin/kubernetes: `pods disabled`
    health: str = ":8080"  # plugin/health
    ready: str = ":8181"  # plugin/ready
    prometheus: str = "localhost:9153"  # plugin/metrics
    reload: float = 30.0  # plugin/reload: every 30 s ...
    reload_jitter: float = 15.0  # ... give or take 15 s
    cache_ttl: int = 3600  # plugin/cache: the longest TTL a positive answer is cached with
    denial_ttl: int = 1800  # ... a negative one
    cache_capacity: int = 9984  # ... entries of each kind
    serve_stale: float = 3600.0  # `serve_stale` without a duration: 1 h
    resolv_conf: str = config.DEFAULT_RESOLV_CONF  # where autopath reads kdns's own search path


DEFAULTS = CorefileDefaults()
# `errors { consolidate ... LEVEL }`: plugin/errors's levels, as Python's.
CONSOLIDATE_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR, "info": logging.INFO, "debug": logging.DEBUG}
RE2_QUIET = re2.Options()
RE2_QUIET.log_errors = False

# Every plugin kdns serves, with the options (in its block) it takes.
PLUGINS: dict[str, tuple[str, ...]] = {
    "any": (),
    "autopath": (),
    "bind": (),
    "bufsize": (),
    "cache": ("success", "denial", "prefetch", "serve_stale", "disable", "keepttl"),
    "errors": ("consolidate", "stacktrace"),
    "forward": (
        "max_concurrent",
        "policy",
        "force_tcp",
        "prefer_udp",
        "except",
        "max_fails",
        "health_check",
        "expire",
    ),
    "health": ("lameduck",),
    # Any other line in its block is an entry, `ADDRESS NAME...` (before any `fallthrough`).
    "hosts": ("ttl", "no_reverse", "reload", "fallthrough", "fallthrough_unsupported"),
    "kubernetes": (
        "pods",
        "ttl",
        "namespaces",
        "labels",
        "kubeconfig",
        "fallthrough",
        "endpoint",
        "noendpoints",
        "endpoint_pod_names",
        "ignore",
    ),
    "loadbalance": (),
    "log": ("class",),
    "loop": (),
    "prometheus": (),
    "ready": (),
    "reload": (),
    # `rewrite [stop|continue] name|type|class ...`, its words on the line or in its block.
    "rewrite": (),
    "template": ("match", "answer", "additional", "authority", "rcode", "ederror", "fallthrough", "upstream"),
}
# What a block of its own zone (a stub domain) may hold: its upstreams, what kdns does for every
# block anyway, and the plugins that answer in it (`BLOCK_PLUGINS`).
BLOCK_PLUGINS = ("any", "loadbalance", "rewrite", "template", "hosts")
STUB_PLUGINS = ("bind", "bufsize", "cache", "errors", "forward", "log", "loop", *BLOCK_PLUGINS)
REPEATABLE = {"bind", "log", "rewrite", "template"}  # every other plugin is used once in a block, as CoreDNS requires


@dataclass
class Corefile:
    """A Corefile read into kdns's configuration, and what it says that kdns does differently
    (logged when it is loaded)."""

    config: ServeConfig
    notes: list[str] = field(default_factory=list)


def serve_config(
    blocks: Sequence[ServerBlock],
    base: ServeConfig,
    corefile: str,
    ipv6: Callable[[], bool] | None = None,
) -> Corefile:
    """`base` (the settings a Corefile does not speak of: budgets, workers, log format, API
    timings) with everything `blocks` say. `ipv6` says whether this host can listen on IPv6
    (`.:53` listens on both families, as CoreDNS does)."""
    if not blocks:
        raise CorefileError(f"{corefile}: no server block")
    for block in blocks:
        seen: set[str] = set()
        for directive in block.directives:
            if directive.name not in PLUGINS:
                raise directive.error(f"not a plugin kdns serves (it serves {', '.join(PLUGINS)})")
            if directive.name in seen and directive.name not in REPEATABLE:
                raise directive.error("is used twice in this server block")
            seen.add(directive.name)
    port = _one_port(blocks)
    zones_of = {id(block): [_key(key, block)[0] for key in block.keys] for block in blocks}
    main = [block for block in blocks if any(d.name == "kubernetes" for d in block.directives)]
    if len(main) > 1:
        raise CorefileError(f"{main[1].where}: a second server block with kubernetes; kdns serves one cluster")
    root = main[0] if main else next((b for b in blocks if "." in zones_of[id(b)]), None)
    if root is None:
        raise CorefileError(f"{blocks[0].where}: no block for the root zone (.) and none with kubernetes")
    reader = _Reader(base, port, ipv6 or can_listen_on_ipv6)
    for directive in root.directives:
        reader.directive(directive, zones_of[id(root)])
    for block in blocks:
        if block is not root:
            reader.stub(block, zones_of[id(block)])
    return Corefile(reader.result(corefile, node_cache=not main), reader.notes)


def _one_port(blocks: Sequence[ServerBlock]) -> int:
    ports = {_key(key, block)[1] for block in blocks for key in block.keys}
    if len(ports) > 1:
        raise CorefileError(f"{blocks[0].where}: server blocks on ports {sorted(ports)}: kdns serves one port")
    return ports.pop()


def _key(key: str, block: ServerBlock) -> tuple[str, int]:
    """(zone, port) of a server block key: `[dns://]ZONE[:PORT]`, ZONE a name or a CIDR."""
    text = key
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme != "dns":
            raise CorefileError(f"{block.where}: {key}: kdns serves dns://, not {scheme}://")
    port = DEFAULTS.port
    if ":" in text:
        text, _, port_text = text.rpartition(":")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise CorefileError(f"{block.where}: {key}: {port_text!r} is not a port")
        port = int(port_text)
    zone = text.rstrip(".").lower() or "."
    if "/" in zone:
        zone = _reverse_zone(zone, key, block)
    return zone, port


def _reverse_zone(cidr: str, key: str, block: ServerBlock) -> str:
    """`10.0.0.0/24` as `0.0.10.in-addr.arpa` (CoreDNS's reverse-zone keys; on octet or nibble
    boundaries)."""
    try:
        network = ipaddress.ip_network(cidr)
    except ValueError:
        raise CorefileError(f"{block.where}: {key}: not a network") from None
    step = 8 if network.version == 4 else 4
    if network.prefixlen % step:
        raise CorefileError(f"{block.where}: {key}: kdns takes reverse zones on {step}-bit boundaries")
    labels = network.network_address.reverse_pointer.split(".")
    keep = network.prefixlen // step + 2  # the labels of the network, and in-addr.arpa or ip6.arpa
    return ".".join(labels[len(labels) - keep :])


class _Reader:
    """The settings a Corefile's directives give, as they are read, over CoreDNS's defaults."""

    def __init__(self, base: ServeConfig, port: int, ipv6: Callable[[], bool]) -> None:
        self.base = base
        self.port = port
        self.ipv6 = ipv6
        self.notes: list[str] = []
        self.cluster_domain = base.cluster_domain
        self.pod_mode = DEFAULTS.pods
        self.ttl = DEFAULTS.kubernetes_ttl
        self.max_udp = base.max_udp
        self.kubeconfig: str | None = None
        self.context: str | None = None
        self.api_endpoint: str | None = None
        self.cluster_fallthrough = False
        self.reverse_zones: tuple[str, ...] = ()
        self.reverse_fallthrough: tuple[str, ...] = ()
        self.publish = PublishOptions()
        # The API timings are the flags'; what is watched is the Corefile's to say.
        self.watch = dataclasses.replace(base.watch, namespaces=(), label_selector="", watch_pods=False)
        self.hosts: list[str] = []
        self.health: SocketAddress | None = None
        self.ready: SocketAddress | None = None
        self.metrics: SocketAddress | None = None
        self.lameduck = 0.0
        self.log_queries = False
        self.autopath = False
        self.loadbalance = False
        self.reload: tuple[float, float] | None = None
        self.upstreams: tuple[SocketAddress, ...] = ()
        self.upstreams_from = "the Corefile"
        self.forward_options = ForwardOptions(
            timeout=base.forward.options.timeout, max_concurrent=base.forward.options.max_concurrent
        )
        self.tcp_upstreams: tuple[SocketAddress, ...] = ()
        self.excepted: tuple[str, ...] = ()
        self.stubs: list[tuple[str, tuple[SocketAddress, ...]]] = []
        self.stub_plugins: list[tuple[str, config.BlockPlugins]] = []
        self.cache: _Cache | None = None
        self.hosts_config: config.HostsConfig | None = None
        self.answer_any = False
        self.rewrite: list[RewriteRule] = []
        self.log_rules: tuple[logformat.LogRule, ...] = ()
        self.consolidate: tuple[config.Consolidate, ...] = ()
        self.templates: list[template.Template] = []

    def directive(self, directive: Directive, zones: list[str]) -> None:
        allowed = PLUGINS[directive.name]
        for option in directive.block:
            if option.name not in allowed and directive.name not in ("hosts", "rewrite"):
                takes = f"takes {', '.join(allowed)}" if allowed else "takes no options"
                raise option.error(f"not an option of {directive.name} kdns serves ({directive.name} {takes})")
        read: Callable[[Directive, list[str]], None] = getattr(self, "_" + directive.name)
        read(directive, zones)

    def stub(self, block: ServerBlock, zones: list[str]) -> None:
        """A block of its own zones: forwarded to its own upstreams (kube-dns's stubDomains)."""
        for directive in block.directives:
            if directive.name not in STUB_PLUGINS:
                raise directive.error(
                    f"in a block without kubernetes, kdns serves {', '.join(STUB_PLUGINS)} (a stub domain)"
                )
        if "." in zones:
            raise CorefileError(f"{block.where}: a second block for the root zone (.)")
        upstreams: tuple[SocketAddress, ...] = ()  # none: what its plugins leave is SERVFAIL, as CoreDNS's
        for forward in (d for d in block.directives if d.name == "forward"):
            for option in forward.block:
                if option.name == "except":
                    raise option.error("kdns takes except in the main block's forward only")
            upstreams, _, _ = self._forward_targets(forward, zones)
        # Its own plugins, read as the main block's are (each within the block's zones).
        own = _Reader(self.base, self.port, self.ipv6)
        for directive in block.directives:
            if directive.name in BLOCK_PLUGINS:
                own.directive(directive, zones)
        self.notes += own.notes
        plugins = config.BlockPlugins(
            answer_any=own.answer_any,
            loadbalance=own.loadbalance,
            rewrite=tuple(own.rewrite),
            templates=tuple(own.templates),
            hosts=own.hosts_config,
        )
        for zone in zones:
            self.stubs.append((zone, upstreams))
            self.stub_plugins.append((zone, plugins))
        for directive in block.directives:
            if directive.name == "log":
                self._log(directive, zones)

    # -- plugins -----------------------------------------------------------------------------

    def _errors(self, directive: Directive, zones: list[str]) -> None:
        """`errors { consolidate DURATION REGEXP [LEVEL]; stacktrace }` (plugin/errors/setup.go):
        kdns logs an error as it happens, and a query's failure with its traceback (stacktrace)."""
        _arguments(directive, 0, 0)
        for option in directive.block:
            if option.name == "stacktrace":
                _arguments(option, 0, 0)
                continue
            _arguments(option, 2, 3)
            period = _go_duration(option, option.args[0])
            if period <= 0:
                raise option.error("consolidate: the period must be more than 0")
            level = option.args[2] if len(option.args) == 3 else "error"
            if level not in CONSOLIDATE_LEVELS:
                raise option.error(f"unknown log level argument in consolidate: {level}")
            try:
                re2.compile(option.args[1], RE2_QUIET)
            except re2.error:
                raise option.error(f"invalid regex pattern: {option.args[1]}") from None
            self.consolidate += (config.Consolidate(period, option.args[0], option.args[1], CONSOLIDATE_LEVELS[level]),)

    def _hosts(self, directive: Directive, zones: list[str]) -> None:
        """`hosts [FILE [ZONES...]] { ttl, no_reverse, reload, fallthrough [ZONES...],
        fallthrough_unsupported, ADDRESS NAME... }`, as plugin/hosts/setup.go reads it."""
        path = directive.args[0] if directive.args else config.DEFAULT_HOSTS_FILE
        origins = tuple(_zone(zone) for zone in directive.args[1:]) or tuple(zones)
        hosts = config.HostsConfig(path=path, zones=origins, max_bytes=self.base.hosts_max_bytes)
        inline: list[str] = []
        for option in directive.block:
            name = option.name
            if name == "fallthrough":
                hosts = dataclasses.replace(hosts, fallthrough=tuple(_zone(zone) for zone in option.args) or (".",))
            elif name == "fallthrough_unsupported":
                _arguments(option, 0, 0)
                hosts = dataclasses.replace(hosts, fallthrough_unsupported=True)
            elif name == "no_reverse":
                _arguments(option, 0, 0)
                hosts = dataclasses.replace(hosts, reverse=False)
            elif name == "ttl":
                _arguments(option, 1, 1)
                ttl = _integer(option, option.args[0])
                if not 0 < ttl <= 65535:
                    raise option.error("ttl provided is invalid: 1 to 65535 seconds")
                hosts = dataclasses.replace(hosts, ttl=ttl)
            elif name == "reload":
                _arguments(option, 1, 1)
                hosts = dataclasses.replace(hosts, reload=_go_duration(option, option.args[0]))
            elif hosts.fallthrough is None:
                inline.append(" ".join((name, *option.args)))  # an entry: ADDRESS NAME...
            else:
                raise option.error(f"unknown property {name!r} (entries come before fallthrough)")
        if hosts.fallthrough_unsupported and hosts.fallthrough is None:
            raise directive.error("fallthrough_unsupported requires fallthrough")
        self.hosts_config = dataclasses.replace(hosts, inline=tuple(inline))

    def _rewrite(self, directive: Directive, zones: list[str]) -> None:
        """One rule (rewrite/setup.go: its words on the line, or, with fewer than two, the words
        of its block), after the block's rules before it."""
        words = list(directive.args)
        if len(words) < 2:
            for option in directive.block:
                words += [option.name, *option.args]
        try:
            self.rewrite.append(rule_of(words))
        except RewriteError as error:
            raise directive.error(str(error)) from None

    def _template(self, directive: Directive, zones: list[str]) -> None:
        """`template CLASS TYPE [ZONES...] { match, answer, additional, authority, rcode,
        ederror, fallthrough }`, as plugin/template/setup.go reads it."""
        _arguments(directive, 2, None)
        qclass = template.CLASSES.get(directive.args[0])
        if qclass is None:
            raise directive.error(f"invalid query class {directive.args[0]}")
        qtype = template.qtype_of(directive.args[1])
        if qtype is None:
            raise directive.error(f"invalid RR class {directive.args[1]}")  # CoreDNS's words
        origins = tuple(_absolute(zone) for zone in directive.args[2:]) or tuple(_absolute(zone) for zone in zones)
        made = template.Template(qclass, qtype, origins)
        matches: list[str] = []
        texts: dict[str, list[str]] = {"answer": [], "additional": [], "authority": []}
        for option in directive.block:
            name = option.name
            if name in ("match", *texts):
                _arguments(option, 1, None)
                (matches if name == "match" else texts[name]).extend(option.args)
            elif name == "rcode":
                _arguments(option, 1, 1)
                rcode = template.rcode_of(option.args[0])
                if rcode is None:
                    raise option.error(f"unknown rcode {option.args[0]}")
                made = dataclasses.replace(made, rcode=rcode)
            elif name == "ederror":
                _arguments(option, 1, 2)
                code = _integer(option, option.args[0])
                if code > 65535:
                    raise option.error(f"error parsing extended DNS error code {code}")
                made = dataclasses.replace(made, ederror=(code, option.args[1] if len(option.args) == 2 else ""))
            elif name == "fallthrough":
                made = dataclasses.replace(made, fallthrough=tuple(_absolute(zone) for zone in option.args) or (".",))
            # `upstream` (its arguments ignored): CoreDNS's leftover, "remove soon"
        made = dataclasses.replace(
            made,
            match=tuple(matches) or (".*",),
            answer=tuple(texts["answer"]),
            additional=tuple(texts["additional"]),
            authority=tuple(texts["authority"]),
        )
        try:
            self.templates.append(template.validated(made))
        except template.TemplateError as error:
            raise directive.error(str(error)) from None

    def _any(self, directive: Directive, zones: list[str]) -> None:
        _arguments(directive, 0, 0)
        self.answer_any = True

    def _loop(self, directive: Directive, zones: list[str]) -> None:
        _arguments(directive, 0, 0)

    def _health(self, directive: Directive, zones: list[str]) -> None:
        _arguments(directive, 0, 1)
        self.health = self._ops_address(directive, DEFAULTS.health)
        for option in directive.block:
            _arguments(option, 1, 1)
            self.lameduck = _go_duration(option, option.args[0])

    def _ready(self, directive: Directive, zones: list[str]) -> None:
        _arguments(directive, 0, 1)
        self.ready = self._ops_address(directive, DEFAULTS.ready)

    def _prometheus(self, directive: Directive, zones: list[str]) -> None:
        _arguments(directive, 0, 1)
        self.metrics = self._ops_address(directive, DEFAULTS.prometheus)

    def _kubernetes(self, directive: Directive, zones: list[str]) -> None:
        served = [zone.rstrip(".").lower() or "." for zone in directive.args] or zones
        domains = [zone for zone in served if zone not in REVERSE_ZONES]
        if len(domains) != 1 or domains[0] == ".":
            raise directive.error(f"kdns serves one cluster domain and the reverse zones, not {' '.join(served)}")
        self.cluster_domain = _checked(directive, config.cluster_domain, domains[0])
        # Only the reverse zones it lists are the cluster zone's (CoreDNS: others are the next
        # block's, forwarded); their names it holds nothing of are NXDOMAIN unless `fallthrough`.
        self.reverse_zones = tuple(zone for zone in REVERSE_ZONES if zone in served)
        for option in directive.block:
            name = option.name
            if name == "pods":
                _arguments(option, 1, 1)
                modes = [mode.value for mode in PodMode]
                if option.args[0] not in modes:
                    raise option.error(f"{option.args[0]!r} is not one of {', '.join(modes)}")
                self.pod_mode = PodMode(option.args[0])
            elif name == "ttl":
                _arguments(option, 1, 1)
                self.ttl = _checked(option, config.ttl, _integer(option, option.args[0]))
            elif name == "namespaces":
                _arguments(option, 1, None)
                self.watch = dataclasses.replace(
                    self.watch, namespaces=_checked(option, config.namespaces, ",".join(option.args))
                )
            elif name == "labels":
                _arguments(option, 1, None)
                self.watch = dataclasses.replace(self.watch, label_selector=" ".join(option.args))
            elif name == "kubeconfig":
                _arguments(option, 1, 2)
                self.kubeconfig = option.args[0]
                self.context = option.args[1] if len(option.args) == 2 else None
            elif name == "endpoint":
                _arguments(option, 1, 1)
                if not option.args[0].startswith(("http://", "https://")):
                    raise option.error(f"{option.args[0]!r}: expected the API server's URL, http:// or https://")
                self.api_endpoint = option.args[0]
            elif name == "noendpoints":
                _arguments(option, 0, 0)
                self.watch = dataclasses.replace(self.watch, watch_endpoints=False)
            elif name == "endpoint_pod_names":
                _arguments(option, 0, 0)
                self.publish = dataclasses.replace(self.publish, endpoint_pod_names=True)
            elif name == "ignore":
                if option.args != ("empty_service",):
                    raise option.error("kdns ignores empty_service (ignore empty_service)")
                self.publish = dataclasses.replace(self.publish, ignore_empty_service=True)
            elif name == "fallthrough":
                # The reverse zones it covers hand on the names held nothing of (kubeadm's
                # `fallthrough in-addr.arpa ip6.arpa`); covering the cluster domain, its
                # NXDOMAINs too. No zones: all of them (plugin/pkg/fall).
                covered = [zone.rstrip(".").lower() or "." for zone in option.args] or ["."]
                for zone in covered:
                    if zone not in REVERSE_ZONES and not _holds(zone, self.cluster_domain):
                        raise option.error(f"{zone}: kdns falls through for its cluster domain and the reverse zones")
                self.cluster_fallthrough = any(_holds(zone, self.cluster_domain) for zone in covered)
                self.reverse_fallthrough = tuple(
                    zone for zone in REVERSE_ZONES if any(_holds(cover, zone) for cover in covered)
                )

    def _forward(self, directive: Directive, zones: list[str]) -> None:
        self.upstreams, self.upstreams_from, tcp = self._forward_targets(directive, zones)
        if tcp:
            self.tcp_upstreams = self.upstreams
        for option in directive.block:
            if option.name == "except":
                _arguments(option, 1, None)
                self.excepted = tuple(_zone(zone) for zone in option.args)

    def _forward_targets(self, directive: Directive, zones: list[str]) -> tuple[tuple[SocketAddress, ...], str, bool]:
        """A `forward FROM TO...`'s upstreams, where they came from, and whether over TCP only."""
        _arguments(directive, 2, None)
        origin = directive.args[0].rstrip(".").lower() or "."
        if origin not in (".", *zones):
            raise directive.error(f"kdns forwards a block's whole zone: FROM is . or {' '.join(zones)}")
        upstreams: list[SocketAddress] = []
        source = "the Corefile"
        for target in directive.args[1:]:
            address = target.removeprefix("dns://")
            if "://" in address:
                raise directive.error(f"{target}: kdns forwards over plain DNS (dns://) only")
            if "/" in address:  # a resolv.conf file, as kubeadm's `forward . /etc/resolv.conf`
                source = address
                if Path(address).exists():
                    upstreams += _checked(directive, config.resolv_conf_upstreams, address)
                continue
            upstreams.append(_checked(directive, SocketAddress.parse, address, "to"))
        tcp = False
        for option in directive.block:
            if option.name == "max_concurrent":
                _arguments(option, 1, 1)
                limit = _integer(option, option.args[0])
                if limit < 1:
                    raise option.error("must be at least 1")
                self.forward_options = dataclasses.replace(self.forward_options, max_concurrent=limit)
            elif option.name == "policy":
                _arguments(option, 1, 1)
                policies = [policy.value for policy in Policy]
                if option.args[0] not in policies:
                    raise option.error(f"{option.args[0]!r} is not one of {', '.join(policies)}")
                self.forward_options = dataclasses.replace(self.forward_options, policy=Policy(option.args[0]))
            elif option.name == "force_tcp":
                _arguments(option, 0, 0)
                tcp = True
            elif option.name == "prefer_udp":
                _arguments(option, 0, 0)  # kdns asks over UDP first, over TCP for a truncated answer
            elif option.name == "max_fails":
                _arguments(option, 1, 1)
                self.forward_options = dataclasses.replace(
                    self.forward_options, max_fails=_integer(option, option.args[0])
                )
            elif option.name == "health_check":
                self.forward_options = self._health_check(option)
            elif option.name == "expire":
                _arguments(option, 1, 1)
                _go_duration(option, option.args[0])
                self.notes.append(
                    f"{option.where}: forward expire: kdns keeps no upstream connections to expire "
                    "(it asks over UDP from long-lived sockets, and opens a TCP connection per TCP question)"
                )

        return tuple(upstreams), source, tcp

    def _health_check(self, option: Directive) -> ForwardOptions:
        """`health_check DURATION [no_rec] [domain NAME]` (plugin/forward/setup.go)."""
        _arguments(option, 1, 4)
        interval = _go_duration(option, option.args[0])
        if interval <= 0:
            raise option.error("health_check interval must be more than 0")  # kdns checks only a down upstream
        options = dataclasses.replace(self.forward_options, health_check=interval)
        rest = list(option.args[1:])
        while rest:
            word = rest.pop(0)
            if word == "no_rec":
                options = dataclasses.replace(options, health_check_recursion=False)
            elif word == "domain" and rest:
                name = rest.pop(0)
                _checked(option, to_wire, name)
                options = dataclasses.replace(options, health_check_name=name)
            else:
                raise option.error(f"health_check: {word!r}: expected no_rec or domain NAME")
        return options

    def _cache(self, directive: Directive, zones: list[str]) -> None:
        cache = _Cache()
        if directive.args:
            cache.success_ttl = cache.denial_ttl = _integer(directive, directive.args[0])
        if any(zone.rstrip(".") not in ("", *zones) for zone in directive.args[1:]):
            raise directive.error("kdns caches a block's whole zone (cache [TTL])")
        for option in directive.block:
            name = option.name
            if name in ("success", "denial"):
                _arguments(option, 1, 3)
                capacity, *ttls = (_integer(option, text) for text in option.args)
                if name == "success":
                    cache.success_size = capacity
                    cache.success_ttl = ttls[0] if ttls else cache.success_ttl
                else:
                    cache.denial_size = capacity
                    cache.denial_ttl = ttls[0] if ttls else cache.denial_ttl
                if len(ttls) == 2:
                    cache.min_ttl = ttls[1]
            elif name == "prefetch":
                _arguments(option, 0, 3)
                cache.prefetch = True
                if option.args:
                    self.notes.append(
                        f"{option.where}: cache prefetch {' '.join(option.args)}: kdns refreshes an answer "
                        "asked for twice, in the last tenth of its TTL"
                    )
            elif name == "keepttl":
                _arguments(option, 0, 0)
                cache.keep_ttl = True
            elif name == "serve_stale":
                _arguments(option, 0, 2)
                stale = option.args[0] if option.args else f"{DEFAULTS.serve_stale:g}s"
                cache.serve_stale = _go_duration(option, stale)
            elif name == "disable":
                _arguments(option, 2, None)
                cluster = {self.cluster_domain, *REVERSE_ZONES}
                if option.args[0] not in ("success", "denial"):
                    raise option.error("expected success or denial, then ZONES")
                if not {zone.rstrip(".").lower() for zone in option.args[1:]} <= cluster:
                    raise option.error(f"kdns never caches {', '.join(sorted(cluster))}, and caches every other zone")
        self.cache = cache

    def _reload(self, directive: Directive, zones: list[str]) -> None:
        _arguments(directive, 0, 2)
        interval, jitter = DEFAULTS.reload, DEFAULTS.reload_jitter
        if directive.args:
            interval = _go_duration(directive, directive.args[0])
        if len(directive.args) == 2:
            jitter = _go_duration(directive, directive.args[1])
        # CoreDNS's rules (plugin/reload/setup.go): an interval of 2 s or more, a jitter of 0 or
        # 1 s or more, and no more than half the interval.
        if interval < 2:
            raise directive.error("the interval must be 2s or more")
        if 0 < jitter < 1:
            raise directive.error("the jitter must be 0 or 1s or more")
        self.reload = (interval, min(jitter, interval / 2))

    def _loadbalance(self, directive: Directive, zones: list[str]) -> None:
        if directive.args not in ((), ("round_robin",)):
            raise directive.error("kdns balances round_robin (its default) only")
        self.loadbalance = True

    def _log(self, directive: Directive, zones: list[str]) -> None:
        """`log [NAMES...] [FORMAT] { class CLASSES... }` (plugin/log/setup.go): CoreDNS's query
        log, its scopes (the block's zones without NAMES), classes and format."""
        classes: list[str] = []
        for option in directive.block:
            _arguments(option, 1, None)
            classes += option.args
        args = list(directive.args) or ([] if "." in zones else list(zones))
        try:
            self.log_rules += logformat.rules(args, classes)
        except logformat.LogFormatError as error:
            raise directive.error(str(error)) from None
        self.log_queries = True

    def _bind(self, directive: Directive, zones: list[str]) -> None:
        _arguments(directive, 1, None)
        for host in directive.args:
            try:
                ipaddress.ip_address(host.split("%")[0])
            except ValueError:
                raise directive.error(f"{host!r}: kdns binds addresses, not interface names") from None
            self.hosts.append(host)

    def _bufsize(self, directive: Directive, zones: list[str]) -> None:
        _arguments(directive, 1, 1)
        self.max_udp = _checked(directive, config.max_udp, _integer(directive, directive.args[0]))

    def _autopath(self, directive: Directive, zones: list[str]) -> None:
        if directive.args != ("@kubernetes",):
            raise directive.error("kdns takes search paths from its cluster zone only (autopath @kubernetes)")
        self.autopath = True

    # -- the result ------------------------------------------------------------------------------

    def result(self, corefile: str, node_cache: bool) -> ServeConfig:
        base = self.base
        hosts = self.hosts or (["0.0.0.0", "::"] if self.ipv6() else ["0.0.0.0"])
        listen = tuple(SocketAddress(str(ipaddress.ip_address(host)), self.port) for host in hosts)
        ops = OpsListeners(health=self.health, ready=self.ready, metrics=self.metrics, limits=base.ops.limits)
        cache = self.cache or _Cache(success_size=0)  # no `cache`: nothing is cached (CoreDNS)
        options = dataclasses.replace(
            self.forward_options,
            min_ttl=min(cache.min_ttl, cache.success_ttl, cache.denial_ttl),
            max_ttl=cache.success_ttl,
            max_negative_ttl=cache.denial_ttl,
        )
        forward = ForwardConfig(
            upstreams=self.upstreams,
            upstreams_from=self.upstreams_from,
            stubs=tuple(self.stubs),
            options=options,
            cache_size=cache.success_size,
            serve_stale=cache.serve_stale,
            prefetch=cache.prefetch,
            keep_ttl=cache.keep_ttl,
            denial_cache_size=cache.denial_size,
            tcp_upstreams=self.tcp_upstreams,
            excepted=self.excepted,
            cache_bytes=base.forward.cache_bytes,
            denial_cache_bytes=base.forward.denial_cache_bytes,
        )
        watch_pods = self.pod_mode is PodMode.VERIFIED or self.autopath
        interval, jitter = self.reload or (base.config_poll, 0.0)
        return dataclasses.replace(
            base,
            kubeconfig=self.kubeconfig or base.kubeconfig,
            context=self.context or base.context,
            api_endpoint=self.api_endpoint,
            cluster_fallthrough=self.cluster_fallthrough,
            reverse_zones=self.reverse_zones,
            reverse_fallthrough=self.reverse_fallthrough,
            publish=self.publish,
            watch=dataclasses.replace(self.watch, watch_pods=watch_pods),
            listen=listen,
            cluster_domain=self.cluster_domain,
            pod_mode=self.pod_mode,
            ttl=self.ttl,
            max_udp=self.max_udp,
            ops=ops,
            forward=forward,
            lameduck=self.lameduck,
            log_queries=self.log_queries,
            log_rules=self.log_rules,
            consolidate=self.consolidate,
            config_file=corefile if self.reload is not None else None,
            config_poll=interval,
            config_poll_jitter=jitter,
            autopath=self.autopath,
            search=config.resolv_conf_search(DEFAULTS.resolv_conf) if self.autopath else (),
            node_cache=node_cache,
            loadbalance=self.loadbalance,
            hosts=self.hosts_config,
            answer_any=self.answer_any,
            rewrite=tuple(self.rewrite),
            templates=tuple(self.templates),
            stub_plugins=tuple(self.stub_plugins),
        )

    def _ops_address(self, directive: Directive, default: str) -> SocketAddress:
        """`[HOST]:PORT` of `health`, `ready` or `prometheus`; no host: every address of both
        families where the host has IPv6 (a dual-stack socket), as Go listens on `:8080`."""
        text = directive.args[0] if directive.args else default
        host, _, port = text.rpartition(":")
        host = host.strip("[]")
        if not host:
            host = "::" if self.ipv6() else "0.0.0.0"
        elif host == "localhost":
            host = "127.0.0.1"
        try:
            return SocketAddress(str(ipaddress.ip_address(host)), _port(port))
        except ValueError:
            raise directive.error(f"{text!r}: expected [ADDRESS]:PORT") from None


@dataclass
class _Cache:
    """What a `cache` directive says, over CoreDNS's defaults."""

    success_size: int = DEFAULTS.cache_capacity
    denial_size: int = DEFAULTS.cache_capacity
    success_ttl: int = DEFAULTS.cache_ttl
    denial_ttl: int = DEFAULTS.denial_ttl
    min_ttl: int = 0
    prefetch: bool = False
    serve_stale: float = 0.0
    keep_ttl: bool = False


def _holds(zone: str, name: str) -> bool:
    """Whether `zone` (`.` the root) is `name` or one of its parents (text, no trailing dot)."""
    return zone == "." or name == zone or name.endswith("." + zone)


def _absolute(text: str) -> str:
    """A zone as plugin.Name.Normalize makes it: lowercased, absolute (`.` the root)."""
    return text.lower().rstrip(".") + "." if text.strip(".") else "."


def _zone(text: str) -> str:
    return text.rstrip(".").lower() or "."


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def _arguments(directive: Directive, least: int, most: int | None) -> None:
    count = len(directive.args)
    if count < least or (most is not None and count > most):
        wanted = f"{least}" if least == most else f"{least} to {most}" if most is not None else f"at least {least}"
        raise directive.error(f"expected {wanted} argument{'' if wanted == '1' else 's'}, got {count}")
    if directive.name not in PLUGINS and directive.block:
        raise directive.error("takes no block")


_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(directive: Directive, text: str) -> float:
    """Seconds in a duration as CoreDNS (Go's time.ParseDuration) reads it: `5s`, `1m30s`,
    `500ms`, `0`."""
    if text == "0":
        return 0.0
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise directive.error(f"{text!r}: expected a duration such as 5s, 1m30s or 500ms")
    return sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


def _integer(directive: Directive, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise directive.error(f"{text!r} is not a number") from None
    if value < 0:
        raise directive.error(f"{text!r} must not be negative")
    return value


def _checked(directive: Directive, check: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`check(...)`, its error (a flag's wording) named after the directive and its line."""
    try:
        return check(*args, **kwargs)
    except CorefileError:
        raise
    except KdnsError as error:
        raise directive.error(str(error)) from None
