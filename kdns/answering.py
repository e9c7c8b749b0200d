"""One process answering queries from a zone: its server blocks and their stages, the pipeline,
the transport to the upstreams and the forward cache, the UDP and TCP listeners, and what ends
them (a forwarding loop). `kdns serve` runs it in its one process, or in each worker process with
`--workers`; `kdns node-cache` runs it with no zone."""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping, Sequence

import trio

from kdns.address import SocketAddress
from kdns.config import BlockPlugins, HostsConfig, ServeConfig
from kdns.core.any import AnyStage
from kdns.core.autopath import Autopath, AutopathStage
from kdns.core.blocks import ServerBlock, ServerBlocks
from kdns.core.cache import ForwardCache
from kdns.core.cluster_zone import ClusterZone
from kdns.core.forwarding import CacheStage, ForwardStage
from kdns.core.hosts import HostsSource, HostsStage
from kdns.core.loadbalance import LoadBalance
from kdns.core.loop import LoopProbes, LoopStage
from kdns.core.message import SERVFAIL
from kdns.core.model import IPAddress
from kdns.core.names import REVERSE_ZONES, to_wire
from kdns.core.rewrite import RewriteStage
from kdns.core.rewrite_rules import Rule
from kdns.core.stage import Next, Outcome, ReplyOptions, Request, Stage
from kdns.core.template import TemplateStage
from kdns.core.template_rules import Template
from kdns.core.zone import Zone
from kdns.errors import KdnsError
from kdns.forward import Forwarder
from kdns.hosts_file import HostsFile
from kdns.logs import CONSOLIDATING, QueryLog
from kdns.pipeline import Background, Pipeline
from kdns.serve import BoundListener, Current, serve
from kdns.state import State

log = logging.getLogger(__name__)


class Answerer:
    """Answers on `listeners` from a zone and upstream, with one configuration for its life (a
    worker process with `--workers`; `kdns.live` serves the one process of `kdns serve`, and
    replaces what it answers with on a reload). Its upstreams are checked by whoever bound the
    listeners (`check_upstreams`), once, before the cluster is loaded."""

    def __init__(self, config: ServeConfig, listeners: list[BoundListener], state: State) -> None:
        self.config = config
        self.listeners = listeners
        self.state = state
        self.loop_exit = LoopExit()
        self.forwarder, self.cache = forwarding(config, state)
        state.report_cache(self.cache)

    async def run(
        self,
        zone: Zone | None,
        synced: Callable[[], bool],
        namespace_of: Callable[[str], str | None] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> int:
        """Answer until cancelled, or until a forwarding loop is found: then the status is 2.
        `synced` says whether the cluster has been listed (before that, a name missing from the
        zone is not known to be missing); not readiness, which turns False in lameduck.
        `namespace_of` gives the namespace of the Pod at a client address (`--autopath`)."""
        config, forwarder = self.config, self.forwarder
        async with trio.open_nursery() as nursery:
            self.loop_exit.scope = nursery.cancel_scope
            pipeline = pipeline_for(
                config, self.state, forwarder, self.cache, zone, synced, namespace_of, self.loop_exit
            )
            if forwarder is not None:
                await nursery.start(forwarder.run)
            await nursery.start(pipeline.run)
            await nursery.start(serve, self.listeners, Current(pipeline, config.tcp), self.state)
            for listener in self.listeners:
                log.info("listening on %s (udp, tcp)", listener.address)
            task_status.started()
        return self.loop_exit.status


def pipeline_for(
    config: ServeConfig,
    state: State,
    forwarder: Forwarder | None,
    cache: ForwardCache | None,
    zone: Zone | None,
    synced: Callable[[], bool],
    namespace_of: Callable[[str], str | None] | None,
    loop_exit: Callable[[str], None],
) -> Pipeline:
    """The pipeline that answers as `config` says, from `zone` (None: a node cache) and through
    `forwarder` and its `cache` (None: nothing is forwarded); `loop_exit` is told of a
    forwarding loop its probes find."""
    options = ReplyOptions(max_udp=config.max_udp, recursion_available=forwarder is not None)
    probes = LoopProbes(loop_exit)
    hosts = HostsFile(config.hosts) if config.hosts is not None else None
    background: list[Background] = []
    if hosts is not None:
        state.add_stores("hosts", lambda: {"hosts": hosts.figures()})
        background.append(hosts.run)
    stub_hosts: dict[str, HostsSource] = {}
    followed: dict[HostsConfig, HostsFile] = {}  # one a stub block's `hosts`, whatever its zones
    for stub, plugins in config.stub_plugins:  # each file within its own budget
        if plugins.hosts is None:
            continue
        if plugins.hosts not in followed:
            file = followed[plugins.hosts] = HostsFile(plugins.hosts)
            state.add_stores(f"hosts {stub}", lambda file=file: {"hosts": file.figures()})  # type: ignore[misc]
            background.append(file.run)
        stub_hosts[stub] = followed[plugins.hosts].source
    if config.consolidate:
        background.append(functools.partial(CONSOLIDATING.consolidated, config.consolidate))
    autopath = None
    if config.autopath and namespace_of is not None:
        search = tuple(to_wire(domain) for domain in config.search)
        autopath = Autopath(to_wire(config.cluster_domain), search, namespace_of)
    blocks = server_blocks(
        options,
        domain=config.cluster_domain,
        zone=zone,
        synced=synced,
        cache=cache,
        probes=probes,
        autopath=autopath,
        count_autopath=state.queries.count_autopath,
        default_upstreams=bool(config.forward.upstreams),
        stub_domains=[domain for domain, _ in config.forward.stubs],
        unforwarded=[domain for domain, upstreams in config.forward.stubs if not upstreams],
        stub_plugins=dict(config.stub_plugins),
        stub_hosts=stub_hosts,
        loadbalance=config.loadbalance,
        hosts=hosts.source if hosts is not None else None,
        answer_any=config.answer_any,
        rewrite=config.rewrite,
        templates=config.templates,
        forward_except=config.forward.excepted,
        fallthrough=config.cluster_fallthrough,
        reverse_zones=config.reverse_zones,
        reverse_fallthrough=config.reverse_fallthrough,
    )
    return Pipeline(
        blocks,
        options,
        state,
        zone=zone,
        cache=cache,
        transport=forwarder,
        query_log=QueryLog(config.log_rules) if config.log_queries else None,
        reply_cache_bytes=config.reply_cache_bytes,
        probes=probes,
        background=background,
    )


def server_blocks(
    options: ReplyOptions,
    *,
    domain: str,
    zone: Zone | None,
    synced: Callable[[], bool],
    cache: ForwardCache | None,
    probes: LoopProbes,
    autopath: Autopath | None = None,
    count_autopath: Callable[[], None] = lambda: None,
    default_upstreams: bool = True,
    stub_domains: Sequence[str] = (),
    unforwarded: Sequence[str] = (),
    stub_plugins: Mapping[str, BlockPlugins] | None = None,
    stub_hosts: Mapping[str, HostsSource] | None = None,
    loadbalance: bool = False,
    hosts: HostsSource | None = None,
    answer_any: bool = False,
    rewrite: Sequence[Rule] = (),
    templates: Sequence[Template] = (),
    forward_except: Sequence[str] = (),
    fallthrough: bool = False,
    reverse_zones: Sequence[str] = REVERSE_ZONES,
    reverse_fallthrough: tuple[str, ...] = REVERSE_ZONES,
) -> ServerBlocks:
    """The server blocks kdns serves, as kubeadm's Corefile has them, with kube-dns's stub
    domains as blocks of their own:

    - the cluster domain and `reverse_zones` (with a zone): autopath (with `autopath`), the
      cluster zone, then for names of `reverse_fallthrough` it holds nothing of, the forward
      cache and the default upstreams (CoreDNS's `fallthrough in-addr.arpa ip6.arpa`; cluster
      names never reach the cache, as kubeadm's `disable success|denial cluster.local`); a
      reverse zone not in `reverse_zones` is the root block's, as in CoreDNS;
    - each stub domain: the forward cache and its own upstreams (group 1, 2, ...); a Corefile's
      stub block (in `stub_plugins`) first answers with its own plugins (in CoreDNS's order: any,
      loadbalance, rewrite, template, hosts from `stub_hosts`; a rewritten question goes on
      down the same block), and one in `unforwarded` ends in SERVFAIL where CoreDNS's chain ends;
    - the root: the forward cache and the default upstreams (group 0); with none, nothing:
      REFUSED.

    Without a forward cache nothing is forwarded (there is no transport: no upstream at all).
    With `loadbalance`, each block's first stage gives its replies' address and MX records in
    turn (CoreDNS's `loadbalance`, first of these in its plugin order). With `hosts`, the cluster
    block and the root block answer from it first, after autopath (CoreDNS's plugin order:
    autopath, cache, hosts, kubernetes, forward; kdns keeps its forward cache after the hosts
    stage, as it keeps cluster names out of it). With `answer_any`, a query of type ANY gets
    one HINFO record (CoreDNS's `any`, first of all). With `rewrite` rules, the cluster block
    and the root block rewrite questions after those two (`kdns.core.rewrite`), and answer from
    `templates` after autopath, before hosts (`kdns.core.template`).
    """
    default = 0 if default_upstreams and cache is not None else None

    excepted = tuple(to_wire(zone) for zone in forward_except)

    def forwarding_stages(group: int | None) -> list[Stage]:
        if group is None or cache is None:
            return []
        forward = ForwardStage(group, options, excepted if group == default else ())
        return [CacheStage(cache, options), LoopStage(probes, options), forward]

    main: dict[str, ServerBlock] = {}  # the blocks of the Corefile's main block, once built

    def rewritten(request: Request) -> Outcome:
        """A rewritten question goes on after the rewrite stage, in the block of the Corefile's
        main block that holds its new name (CoreDNS: on down the same chain)."""
        cluster = main.get("cluster")
        block = cluster if cluster is not None and cluster.holds(request.query.key) else main["root"]
        return block.after(RewriteStage)(request)

    rewrite_stage = RewriteStage(rewrite, options, rewritten) if rewrite else None

    def first_stages(in_main: bool = True) -> list[Stage]:
        # CoreDNS's plugin order: any, loadbalance, rewrite.
        stages: list[Stage] = [AnyStage(options)] if answer_any else []
        stages += [LoadBalance()] if loadbalance else []
        return stages + ([rewrite_stage] if rewrite_stage is not None and in_main else [])

    stubs: dict[str, ServerBlock] = {}  # the stub blocks, once built, for their rewritten questions

    def stub_stages(zone: str, resolve: Next) -> list[Stage]:
        plugins = (stub_plugins or {}).get(zone)
        if plugins is None:  # a stub domain given by flags: the main block's any and loadbalance
            return first_stages(False)
        stages: list[Stage] = [AnyStage(options)] if plugins.answer_any else []
        stages += [LoadBalance()] if plugins.loadbalance else []
        if plugins.rewrite:
            goes_on: Next = lambda request: stubs[zone].after(RewriteStage)(request)  # noqa: E731  # the same block
            stages.append(RewriteStage(plugins.rewrite, options, goes_on))
        stages += [TemplateStage(plugins.templates, options, resolve)] if plugins.templates else []
        hosts_of_stub = (stub_hosts or {}).get(zone)
        return stages + ([HostsStage(hosts_of_stub, options)] if hosts_of_stub is not None else [])

    def build(resolve: Next) -> list[ServerBlock]:
        blocks = []
        if zone is not None:
            stages = first_stages()
            if autopath is not None:
                stages.append(AutopathStage(autopath, options, synced, resolve, count_autopath))
            if templates:
                stages.append(TemplateStage(templates, options, resolve))
            if hosts is not None:
                stages.append(HostsStage(hosts, options))
            resolving = resolve if cache is not None else None
            stages.append(ClusterZone(zone, options, synced, resolving, fallthrough, reverse_fallthrough))
            stages += forwarding_stages(default)
            main["cluster"] = ServerBlock((domain, *reverse_zones), stages, options, default)
            blocks.append(main["cluster"])
        for group, stub in enumerate(stub_domains, 1):
            own = stub_stages(stub, resolve)
            if stub in unforwarded:
                block = ServerBlock((stub,), own, options, None, end=SERVFAIL)
            else:
                block = ServerBlock((stub,), own + forwarding_stages(group), options, group)
            stubs[stub] = block
            blocks.append(block)
        root = first_stages() + ([TemplateStage(templates, options, resolve)] if templates else [])
        root += [HostsStage(hosts, options)] if hosts is not None else []
        main["root"] = ServerBlock((".",), root + forwarding_stages(default), options, default)
        blocks.append(main["root"])
        return blocks

    return ServerBlocks(build)


def ns_addresses(addresses: Sequence[SocketAddress]) -> tuple[IPAddress, ...]:
    """The addresses `ns.dns.<zone>` falls back to without a kube-dns Service: the specific
    (non-wildcard) listen addresses, which is what CoreDNS falls back to as well."""
    ips = (ipaddress.ip_address(address.host) for address in addresses)
    return tuple(ip for ip in ips if not ip.is_unspecified)


def forward_groups(config: ServeConfig) -> list[tuple[SocketAddress, ...]]:
    """The transport's groups of upstreams: the default ones (0, maybe none), then each stub
    domain's, in order (1, 2, ...)."""
    forward = config.forward
    return [forward.upstreams, *(addresses for _, addresses in forward.stubs)]


def forwarding(config: ServeConfig, state: State) -> tuple[Forwarder | None, ForwardCache | None]:
    """The forwarder and its cache (the state counts the forwarder's upstreams; the cache is
    reported with `State.report_cache` once it serves), or (None, None) with one warning when
    there is no upstream."""
    forward = config.forward
    if not forward.upstreams and not forward.stubs:
        log.warning(
            "no upstream resolver (%s gives none): names outside %s and the reverse zones are answered REFUSED",
            forward.upstreams_from,
            config.cluster_domain,
        )
        return None, None
    log.info("forwarding to %s", ", ".join(str(u) for u in forward.upstreams) or "stub domains only")
    # The cache reads trio's clock: the one every timeout of the program uses (and tests can mock).
    cache = ForwardCache(
        forward.cache_size,
        trio.current_time,
        stale_for=forward.serve_stale,
        prefetch=forward.prefetch,
        denial_size=forward.denial_cache_size,
        max_bytes=forward.cache_bytes,
        denial_max_bytes=forward.denial_cache_bytes,
        keep_ttl=forward.keep_ttl,
    )
    forwarder = Forwarder(forward_groups(config), forward.options, state, forward.tcp_upstreams)
    return forwarder, cache


def check_upstreams(config: ServeConfig, addresses: Sequence[SocketAddress]) -> None:
    """Refuse an upstream that is one of kdns's own listen `addresses` (`KdnsError`)."""
    forward = config.forward
    stubs = (address for _, addresses in forward.stubs for address in addresses)
    for upstream in (*forward.upstreams, *stubs):
        for address in addresses:
            if _is_self(upstream, address.host, address.port):
                raise KdnsError(
                    f"upstream {upstream} (from {forward.upstreams_from}) is kdns's own listen address "
                    f"{address}: forwarding to it would loop"
                )


def _is_self(upstream: SocketAddress, host: str, port: int) -> bool:
    """Whether `upstream` is this kdns: the same port, and the same address or, for a wildcard
    listener, an address of this machine."""
    if upstream.port != port:
        return False
    if upstream.host == host:
        return True
    if not ipaddress.ip_address(host).is_unspecified:
        return False
    try:
        with socket.socket(upstream.family, socket.SOCK_DGRAM) as probe:
            probe.bind((upstream.host, 0))  # binds only to an address this machine has
    except OSError:
        return False
    return True


class LoopExit:
    """What a forwarding loop does (CoreDNS's `loop`): log it and end kdns with status 2."""

    def __init__(self) -> None:
        self.status = 0
        self.scope: trio.CancelScope | None = None

    def __call__(self, upstream: str) -> None:
        log.error(
            "forwarding loop: the probe sent to upstream %s came back to kdns, so that upstream "
            "forwards to kdns (often the node's resolv.conf naming the cluster DNS). Exiting.",
            upstream,
        )
        self.status = 2
        if self.scope is not None:
            self.scope.cancel()
