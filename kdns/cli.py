"""The command line: `kdns serve`, `kdns check`, `kdns dump`.

Every error meant for the user is a `KdnsError`: printed as one line naming what is wrong, and the
exit status is 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import urllib3
import yaml

from kdns import __version__, app, config, corefile, corefile_config, logs, settings
from kdns.address import SocketAddress, listen_addresses
from kdns.config import ForwardOptions, Policy, TcpLimits, WatchOptions, resolv_conf_upstreams
from kdns.core import budgets
from kdns.core.message import DEFAULT_MAX_UDP
from kdns.core.names import REVERSE_ZONES
from kdns.core.store import ClusterStore, PodMode
from kdns.core.zonefile import render
from kdns.errors import KdnsError
from kdns.sources import build_store, new_store, snapshot

log = logging.getLogger("kdns")

# Every default below is the config record's own (`kdns.config`): one source, which
# tests/test_config.py holds the flags to.
_WATCH = config.WatchOptions()
_TCP = config.TcpLimits()
_FORWARD = ForwardOptions()
_SERVE_DEFAULTS = {field.name: field.default for field in dataclasses.fields(config.ServeConfig)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdns", description="A cluster DNS server for Kubernetes.")
    parser.add_argument("--version", action="version", version=f"kdns {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)  # options every command takes
    common.add_argument(
        "--log-level",
        default=config.DEFAULT_LOG_LEVEL,
        choices=["debug", "info", "warning", "error"],
        help=f"(default {config.DEFAULT_LOG_LEVEL})",
    )
    common.add_argument(
        "--log-format",
        default=config.DEFAULT_LOG_FORMAT,
        choices=["text", "json"],
        help=f"text, or one JSON object a line (default {config.DEFAULT_LOG_FORMAT})",
    )

    def zone_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--cluster-domain",
            default=config.DEFAULT_CLUSTER_DOMAIN,
            help=f"the cluster domain (default {config.DEFAULT_CLUSTER_DOMAIN})",
        )
        sub.add_argument(
            "--pods",
            choices=[mode.value for mode in PodMode],
            default=config.DEFAULT_POD_MODE.value,
            help="pod records: insecure (any address, kubeadm's default), verified (only addresses of "
            "Pods in that namespace) or disabled (default insecure)",
        )
        sub.add_argument(
            "--ttl",
            type=int,
            default=config.DEFAULT_TTL,
            help=f"TTL of every zone record (default {config.DEFAULT_TTL})",
        )

    def forward_flags(sub: argparse.ArgumentParser) -> None:
        """How `serve` and `node-cache` ask their upstreams."""
        sub.add_argument("--policy", choices=[policy.value for policy in Policy], default=_FORWARD.policy.value)
        sub.add_argument(
            "--upstream-timeout",
            type=float,
            default=_FORWARD.timeout,
            help=f"seconds per upstream try (default {_FORWARD.timeout:g})",
        )
        sub.add_argument(
            "--max-concurrent",
            type=int,
            default=_FORWARD.max_concurrent,
            help=f"forwarded queries in flight, shared fairly among clients; more are REFUSED "
            f"(default {_FORWARD.max_concurrent})",
        )
        sub.add_argument(
            "--cache-min-ttl", type=int, default=_FORWARD.min_ttl, help="shortest time a forwarded answer is cached"
        )

    def budget_options(sub: argparse.ArgumentParser) -> None:
        """The byte budgets `serve` and `node-cache` share (README "Budgets")."""
        _size_flag(
            sub,
            "--reply-cache-bytes",
            budgets.REPLY_CACHE_BYTES,
            "replies kept for repeated queries, UDP and TCP together",
        )
        _size_flag(sub, "--cache-bytes", budgets.FORWARD_CACHE_BYTES, "the forward cache's answers")
        _size_flag(
            sub,
            "--tcp-buffer-bytes",
            budgets.TCP_BUFFER_BYTES,
            "partial queries and unsent replies of every TCP connection",
        )
        _size_flag(sub, "--hosts-max-bytes", budgets.HOSTS_FILE_BYTES, "the largest hosts file read (Corefile hosts)")
        sub.add_argument(
            "--config-max-bytes",
            metavar="SIZE",
            default=_size_text(budgets.CONFIG_FILE_BYTES),
            help=f"the largest --config file read (default {_size_text(budgets.CONFIG_FILE_BYTES)}); "
            "also KDNS_CONFIG_MAX_BYTES",
        )

    def api_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then KUBECONFIG, ~/.kube/config)")
        sub.add_argument("--context", help="kubeconfig context to use (default: the current one)")
        sub.add_argument("--namespaces", metavar="A,B", help="serve only these namespaces (default: all)")
        sub.add_argument("--labels", metavar="SELECTOR", default="", help="serve only Services matching this selector")
        sub.add_argument(
            "--api-timeout",
            type=float,
            default=_WATCH.request_timeout,
            help=f"seconds to connect to and read from the API (default {_WATCH.request_timeout:g})",
        )
        sub.add_argument(
            "--api-page-size",
            type=int,
            default=_WATCH.page_size,
            help=f"objects per page of a list (default {_WATCH.page_size}, as client-go)",
        )

    serve = commands.add_parser("serve", parents=[common], help="serve DNS for a cluster")
    serve.add_argument(
        "--config",
        metavar="PATH",
        help="read settings from this YAML file too (keys: the flags without --); also KDNS_CONFIG. "
        "Flags win over KDNS_* variables, which win over the file. Reloaded on SIGHUP and when it changes",
    )
    serve.add_argument(
        "--snapshot", type=Path, help="serve the objects of this YAML or JSON file instead of following a cluster"
    )
    api_options(serve)
    serve.add_argument(
        "--watch-timeout",
        type=int,
        default=_WATCH.watch_timeout,
        help=f"a watch asks the API to end it after T to 2T seconds, then resumes (default {_WATCH.watch_timeout})",
    )
    serve.add_argument(
        "--api-backoff-max",
        type=float,
        default=_WATCH.backoff_max,
        help=f"longest wait between retries while the API fails (default {_WATCH.backoff_max:g})",
    )
    serve.add_argument(
        "--listen",
        action="append",
        metavar="ADDR:PORT",
        help="address to serve UDP and TCP on; repeatable; IPv6 as [ADDR]:PORT; :PORT for every address of "
        f"both families (default {config.DEFAULT_LISTEN})",
    )
    serve.add_argument(
        "--max-udp-size",
        type=int,
        default=DEFAULT_MAX_UDP,
        help=f"largest UDP reply, and the size advertised in EDNS (default {DEFAULT_MAX_UDP}, DNS Flag Day 2020)",
    )
    serve.add_argument(
        "--tcp-idle-timeout",
        type=float,
        default=_TCP.idle_timeout,
        help=f"seconds before an idle TCP connection is closed (default {_TCP.idle_timeout:g})",
    )
    serve.add_argument(
        "--max-tcp-connections",
        type=int,
        default=_TCP.max_connections,
        help=f"open TCP connections at most; past it the one idle longest is closed (default {_TCP.max_connections})",
    )
    serve.add_argument(
        "--tcp-write-timeout",
        type=float,
        default=_TCP.write_timeout,
        help=f"seconds a TCP reply may take to be written before the connection is closed "
        f"(default {_TCP.write_timeout:g})",
    )
    serve.add_argument(
        "--upstream",
        action="append",
        metavar="ADDR[:PORT]",
        help="resolver to forward other names to; repeatable (default: the nameservers of --resolv-conf)",
    )
    serve.add_argument("--resolv-conf", default=config.DEFAULT_RESOLV_CONF, help="where to read default upstreams")
    serve.add_argument(
        "--stub-domain",
        action="append",
        default=[],
        metavar="DOMAIN=ADDR[,ADDR]",
        help="forward a domain and its subdomains to its own upstreams; repeatable",
    )
    forward_flags(serve)
    serve.add_argument(
        "--cache-size", type=int, default=config.DEFAULT_CACHE_SIZE, help="forwarded answers cached; 0: no cache"
    )
    serve.add_argument(
        "--cache-max-ttl", type=int, default=_FORWARD.max_ttl, help="longest time a forwarded answer is cached"
    )
    serve.add_argument(
        "--serve-stale",
        metavar="DURATION",
        default=f"{config.DEFAULT_SERVE_STALE:g}",
        help="when every upstream fails, serve an answer expired less than this long ago, TTL 30 (RFC 8767)",
    )
    serve.add_argument("--prefetch", action="store_true", help="refresh an answer asked for often before it expires")
    serve.add_argument(
        "--health-listen",
        metavar="ADDR:PORT",
        default=config.DEFAULT_HEALTH_LISTEN,
        help=f"serve HTTP /health here, or off (default {config.DEFAULT_HEALTH_LISTEN}, as CoreDNS)",
    )
    serve.add_argument(
        "--ready-listen",
        metavar="ADDR:PORT",
        default=config.DEFAULT_READY_LISTEN,
        help=f"serve HTTP /ready (503 until the cluster is listed once) here, or off (default "
        f"{config.DEFAULT_READY_LISTEN}, as CoreDNS)",
    )
    serve.add_argument(
        "--log-queries", action="store_true", help="log every answered query: client, name, type, rcode, time"
    )
    serve.add_argument(
        "--lameduck",
        metavar="DURATION",
        default=f"{config.DEFAULT_LAMEDUCK:g}s",
        help="after SIGTERM, keep answering this long with /ready at 503, then exit (default 5s, "
        "kubeadm's `lameduck 5s`); SIGINT stops at once",
    )
    serve.add_argument(
        "--autopath",
        action="store_true",
        help="answer a Pod's query from its search path in one round trip (CoreDNS's autopath @kubernetes); "
        "watches Pods, holding only their addresses",
    )
    serve.add_argument(
        "--loadbalance",
        action="store_true",
        help="give each reply's A, AAAA and MX records in turn, so clients spread over them "
        "(CoreDNS's loadbalance round_robin)",
    )
    serve.add_argument(
        "--corefile",
        metavar="PATH",
        help="read the configuration from this Corefile, as CoreDNS does (`kdns -conf PATH` is the same); "
        "flags it sets may not be given too",
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        default=str(_SERVE_DEFAULTS["workers"]),
        help="processes answering on the same ports (SO_REUSEPORT), fed by one set of watches; "
        "auto: one per CPU (default 1)",
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="ADDR:PORT",
        default=config.DEFAULT_METRICS_LISTEN,
        help=f"serve Prometheus /metrics here, or off (default {config.DEFAULT_METRICS_LISTEN}, as CoreDNS)",
    )
    zone_options(serve)
    budget_options(serve)
    _size_flag(serve, "--pod-index-bytes", budgets.POD_INDEX_BYTES, "the Pods' addresses (--pods verified, --autopath)")
    _size_flag(
        serve,
        "--worker-queue-bytes",
        budgets.WORKER_QUEUE_BYTES,
        "changes queued for one worker; past it, it is replaced",
    )

    check = commands.add_parser(
        "check", parents=[common], help="validate a snapshot and summarise what would be served"
    )
    check.add_argument("--snapshot", type=Path, required=True)
    zone_options(check)

    dump = commands.add_parser("dump", parents=[common], help="print the zone built from a snapshot as zone-file text")
    dump.add_argument("--snapshot", type=Path, required=True)
    zone_options(dump)

    explain = commands.add_parser(
        "explain", parents=[common], help="say what kdns answers for a name, and why (objects, rule, nearest name)"
    )
    explain.add_argument("name", help="the name asked, e.g. web.prod.svc.cluster.local")
    explain.add_argument("type", nargs="?", default="A", help="the record type asked (default A)")
    explain.add_argument(
        "--snapshot", type=Path, help="explain from this snapshot file (default: list the cluster once)"
    )
    api_options(explain)
    zone_options(explain)
    explain.add_argument(
        "--upstream", action="append", metavar="ADDR[:PORT]", help="the upstreams kdns forwards to (as serve)"
    )
    explain.add_argument(
        "--resolv-conf", default=config.DEFAULT_RESOLV_CONF, help="where kdns reads its default upstreams"
    )
    explain.add_argument("--stub-domain", action="append", default=[], metavar="DOMAIN=ADDR[,ADDR]")
    explain.add_argument("--output", choices=["text", "json"], default="text", help="plain words, or JSON for scripts")

    node = commands.add_parser(
        "node-cache",
        parents=[common],
        help="a node-local DNS cache (NodeLocal DNSCache): the cluster domain from the cluster DNS over TCP, "
        "the rest from the node's resolvers; no zone, no API watch",
    )
    node.add_argument(
        "--config",
        metavar="PATH",
        help="read settings from this YAML file too (keys: the flags without --); also KDNS_CONFIG",
    )
    node.add_argument(
        "--listen",
        action="append",
        metavar="ADDR:PORT",
        help=f"serve UDP and TCP here; repeatable (default {config.NODE_LOCAL_ADDRESS}:53; add the kube-dns "
        "Service IP to take its traffic too)",
    )
    node.add_argument(
        "--cluster-dns",
        metavar="ADDR[:PORT]",
        help="the cluster DNS (a Service in front of kdns serve or CoreDNS), asked over TCP for the cluster "
        "domain and the reverse zones",
    )
    node.add_argument(
        "--cluster-domain",
        default=config.DEFAULT_CLUSTER_DOMAIN,
        help=f"the cluster domain (default {config.DEFAULT_CLUSTER_DOMAIN})",
    )
    node.add_argument("--upstream", action="append", metavar="ADDR[:PORT]", help="resolvers for other names")
    node.add_argument(
        "--resolv-conf",
        default=config.DEFAULT_RESOLV_CONF,
        help=f"the node's resolvers (default {config.DEFAULT_RESOLV_CONF})",
    )
    node.add_argument("--cache-size", type=int, default=config.NODE_CACHE_SUCCESS[0], help="positive answers held")
    node.add_argument("--cache-max-ttl", type=int, default=config.NODE_CACHE_SUCCESS[1], help="longest TTL of those")
    node.add_argument(
        "--denial-cache-size", type=int, default=config.NODE_CACHE_DENIAL[0], help="negative answers held"
    )
    node.add_argument("--denial-max-ttl", type=int, default=config.NODE_CACHE_DENIAL[1], help="longest TTL of those")
    node.add_argument(
        "--serve-stale",
        metavar="DURATION",
        default=config.NODE_CACHE_SERVE_STALE,
        help=f"serve expired answers this long while upstreams fail (default {config.NODE_CACHE_SERVE_STALE})",
    )
    node.add_argument("--prefetch", action="store_true", help="refresh popular answers before they expire")
    forward_flags(node)
    node.add_argument("--max-udp-size", type=int, default=DEFAULT_MAX_UDP)
    node.add_argument("--tcp-idle-timeout", type=float, default=_TCP.idle_timeout)
    node.add_argument("--tcp-write-timeout", type=float, default=_TCP.write_timeout)
    node.add_argument("--max-tcp-connections", type=int, default=_TCP.max_connections)
    node.add_argument("--health-listen", metavar="ADDR:PORT", default=config.NODE_CACHE_HEALTH_LISTEN)
    node.add_argument("--ready-listen", metavar="ADDR:PORT", default=config.NODE_CACHE_READY_LISTEN)
    node.add_argument("--metrics-listen", metavar="ADDR:PORT", default=config.NODE_CACHE_METRICS_LISTEN)
    node.add_argument("--log-queries", action="store_true")
    node.add_argument("--lameduck", metavar="DURATION", default=f"{config.DEFAULT_LAMEDUCK:g}s")
    budget_options(node)
    _size_flag(node, "--denial-cache-bytes", budgets.DENIAL_CACHE_BYTES, "the negative answers cached")

    take = commands.add_parser("snapshot", parents=[common], help="list the cluster once and write a snapshot file")
    api_options(take)
    take.add_argument("--output", type=Path, help="file to write (default: standard output)")
    return parser


def _size_text(size: int) -> str:
    """A byte count as its flag's default is written: `16Mi`, `64Ki`, or plain bytes."""
    for unit, factor in (("Gi", budgets.MIB * 1024), ("Mi", budgets.MIB), ("Ki", budgets.KIB)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _size_flag(sub: argparse.ArgumentParser, flag: str, default: int, what: str) -> None:
    sub.add_argument(
        flag,
        metavar="SIZE",
        default=_size_text(default),
        help=f"bytes of {what} at most (default {_size_text(default)}; 1048576, 64Mi, 1G)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        translated = coredns_arguments(argv)
    except KdnsError as error:
        print(f"kdns: error: {error}", file=sys.stderr)
        return error.exit_status
    if translated is None:
        print("\n".join(f"dns.{name}" for name in corefile_config.PLUGINS))  # CoreDNS's -plugins
        return 0
    argv = translated
    parser = _parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        if args.command == "serve":

            def load() -> config.ServeConfig:
                try:
                    settings_read = _serve_settings(parser, argv, args, os.environ)
                    if settings_read.corefile:
                        return _corefile_config(settings_read)
                    return _checked_serve_config(settings_read)
                except KdnsError:
                    raise
                except Exception as error:  # a fault of reading the settings is the settings' error
                    source = args.corefile or args.config or os.environ.get("KDNS_CONFIG") or "the settings"
                    problem = config.quoted(str(error))
                    raise KdnsError(f"{source}: cannot be read: {type(error).__name__}: {problem}") from None

            first = load()
            logs.configure(first.log_level, first.log_format)
            if args.corefile:
                return app.main(first, load, corefile.fingerprint)
            return app.main(first, load)
        if args.command == "check":
            return _check(args)
        if args.command == "snapshot":
            return _snapshot(args)
        if args.command == "explain":
            return _explain(args)
        if args.command == "node-cache":
            node_config = _node_cache_config(_serve_settings(parser, argv, args, os.environ, "node-cache"))
            logs.configure(node_config.log_level, node_config.log_format)
            return app.main(node_config)
        return _dump(args)
    except KdnsError as error:
        print(f"kdns: error: {error}", file=sys.stderr)
        return error.exit_status


def _serve_settings(
    parser: argparse.ArgumentParser,
    argv: list[str],
    args: argparse.Namespace,
    environ: Mapping[str, str],
    command: str = "serve",
) -> argparse.Namespace:
    """The command line's settings, with the config file's and the environment's under them
    (`serve`, or `node-cache`, which reads them the same way)."""
    sub = _subcommand(parser, command)
    rest = argv[argv.index(command) + 1 :]
    path = args.config or environ.get("KDNS_CONFIG")
    given = settings.explicit(sub, rest)
    limit = args.config_max_bytes if "config_max_bytes" in given else environ.get("KDNS_CONFIG_MAX_BYTES")
    max_bytes = config.byte_size("--config-max-bytes", limit or args.config_max_bytes)
    if command == "serve" and args.corefile:
        owned = sorted(given & COREFILE_SETS)
        if path:
            raise KdnsError(f"--corefile {args.corefile}: and --config {path}: one configuration file, not two")
        if owned:
            flags = ", ".join("--" + dest.replace("_", "-") for dest in owned)
            raise KdnsError(f"--corefile {args.corefile}: sets what {flags} would; say it in the Corefile")
    merged = settings.merge(sub, rest, args, path, environ, max_bytes)
    merged.config = path
    merged.config_max_bytes = max_bytes
    return merged


# What a Corefile says, so that with --corefile these flags are refused (`corefile_config`).
COREFILE_SETS = {
    "autopath",
    "cache_max_ttl",
    "cache_min_ttl",
    "cache_size",
    "cluster_domain",
    "context",
    "health_listen",
    "kubeconfig",
    "labels",
    "lameduck",
    "listen",
    "loadbalance",
    "log_queries",
    "max_concurrent",
    "max_udp_size",
    "metrics_listen",
    "namespaces",
    "pods",
    "policy",
    "prefetch",
    "ready_listen",
    "resolv_conf",
    "serve_stale",
    "stub_domain",
    "ttl",
    "upstream",
}


def _corefile_config(args: argparse.Namespace) -> config.ServeConfig:
    """The configuration `args.corefile` gives, over the flags' settings for what it does not
    speak of (budgets, workers, log format); what it says that kdns does differently, logged."""
    base = _checked_serve_config(args)
    blocks = corefile.load(Path(args.corefile))
    read = corefile_config.serve_config(blocks, base, args.corefile)
    for note in read.notes:
        log.warning("%s", note)
    return read.config


# CoreDNS's own command line (`coredns -conf PATH`, as the kubeadm Deployment runs it), and what
# kdns does with each flag.
COREDNS_FLAGS = ("-conf PATH", "-plugins", "-quiet", "-version")


def coredns_arguments(argv: list[str]) -> list[str] | None:
    """`argv` in kdns's terms when it is CoreDNS's command line (`-conf PATH` and the like, Go's
    flag syntax: one or two dashes, `-flag value` or `-flag=value`): `serve --corefile PATH`;
    None for `-plugins` (print them). Any other argv is returned as it is."""
    if not argv or not argv[0].startswith("-") or argv[0].lstrip("-").split("=")[0] not in _COREDNS_NAMES:
        return argv
    path = "Corefile"  # CoreDNS's default: the Corefile in the working directory
    at = 0
    while at < len(argv):
        name, equals, value = argv[at].lstrip("-").partition("=")
        if not argv[at].startswith("-") or name not in _COREDNS_NAMES:
            raise KdnsError(f"{argv[at]}: kdns takes CoreDNS's {', '.join(COREDNS_FLAGS)} (or its own commands)")
        if name == "conf":
            if not equals:
                at += 1
                if at == len(argv):
                    raise KdnsError("-conf: needs the path of a Corefile")
                value = argv[at]
            path = value
        elif name == "plugins":
            return None
        elif name == "version":
            return ["--version"]
        at += 1
    return ["serve", "--corefile", path]


_COREDNS_NAMES = {"conf", "plugins", "quiet", "version"}


def _checked_serve_config(args: argparse.Namespace) -> config.ServeConfig:
    """`_serve_config`, its errors naming the configuration file when there is one (a flag's
    value may have come from it)."""
    try:
        return _serve_config(args)
    except KdnsError as error:
        if getattr(args, "config", None):
            raise KdnsError(f"{error} (settings from {args.config}, KDNS_* variables and flags)") from None
        raise


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:  # argparse offers no public way to reach a subparser
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise LookupError(name)


def _tcp_limits(args: argparse.Namespace) -> TcpLimits:
    return config.tcp_limits(
        args.tcp_idle_timeout, args.max_tcp_connections, args.tcp_write_timeout, args.tcp_buffer_bytes
    )


def _ops_listeners(args: argparse.Namespace) -> config.OpsListeners:
    return config.OpsListeners(
        health=config.ops_address("--health-listen", args.health_listen),
        ready=config.ops_address("--ready-listen", args.ready_listen),
        metrics=config.ops_address("--metrics-listen", args.metrics_listen),
    )


def _upstreams(args: argparse.Namespace) -> tuple[tuple[SocketAddress, ...], str]:
    """`--upstream`s, else the nameservers of `--resolv-conf` (none when the default file is
    missing: not an error), and where they came from."""
    if args.upstream:
        return tuple(SocketAddress.parse(text, "--upstream") for text in args.upstream), "--upstream"
    if args.resolv_conf == config.DEFAULT_RESOLV_CONF and not Path(args.resolv_conf).exists():
        return (), args.resolv_conf
    return tuple(resolv_conf_upstreams(args.resolv_conf)), args.resolv_conf


def _forward_options(args: argparse.Namespace, max_negative_ttl: int | None = None) -> ForwardOptions:
    return config.forward_options(
        args.policy,
        args.upstream_timeout,
        args.max_concurrent,
        args.cache_size,
        args.cache_min_ttl,
        args.cache_max_ttl,
        max_negative_ttl,
    )


def _serve_config(args: argparse.Namespace) -> config.ServeConfig:
    pod_mode = PodMode(args.pods)
    return config.ServeConfig(
        snapshot=args.snapshot,
        kubeconfig=args.kubeconfig,
        context=args.context,
        watch=_watch_options(args, watch_pods=pod_mode is PodMode.VERIFIED or args.autopath),
        listen=listen_addresses(args.listen or [config.DEFAULT_LISTEN], "--listen"),
        cluster_domain=config.cluster_domain(args.cluster_domain),
        pod_mode=pod_mode,
        ttl=config.ttl(args.ttl),
        max_udp=config.max_udp(args.max_udp_size),
        tcp=_tcp_limits(args),
        ops=_ops_listeners(args),
        lameduck=config.duration("--lameduck", args.lameduck),
        log_queries=args.log_queries,
        log_level=args.log_level,
        log_format=args.log_format,
        config_file=getattr(args, "config", None),
        workers=config.workers(str(args.workers), len(os.sched_getaffinity(0))),
        autopath=args.autopath,
        loadbalance=args.loadbalance,
        search=config.resolv_conf_search(args.resolv_conf) if args.autopath else (),
        forward=_forward_config(args),
        reply_cache_bytes=config.byte_size("--reply-cache-bytes", args.reply_cache_bytes, lowest=0),
        pod_index_bytes=config.byte_size("--pod-index-bytes", args.pod_index_bytes),
        worker_queue_bytes=config.byte_size("--worker-queue-bytes", args.worker_queue_bytes),
        config_max_bytes=args.config_max_bytes,
        hosts_max_bytes=config.byte_size("--hosts-max-bytes", args.hosts_max_bytes),
    )


def _forward_config(args: argparse.Namespace) -> config.ForwardConfig:
    options = _forward_options(args)
    upstreams, source = _upstreams(args)
    return config.ForwardConfig(
        upstreams=upstreams,
        upstreams_from=source,
        stubs=tuple(config.stub_domain(text) for text in args.stub_domain),
        options=options,
        cache_size=args.cache_size,
        serve_stale=config.duration("--serve-stale", args.serve_stale),
        prefetch=args.prefetch,
        cache_bytes=config.byte_size("--cache-bytes", args.cache_bytes),
    )


def _watch_options(args: argparse.Namespace, watch_pods: bool) -> WatchOptions:
    return config.watch_options(
        args.namespaces,
        args.labels,
        watch_pods,
        getattr(args, "watch_timeout", _WATCH.watch_timeout),  # `serve` takes it; `snapshot` and `explain` do not
        args.api_timeout,
        getattr(args, "api_backoff_max", _WATCH.backoff_max),
        args.api_page_size,
    )


def _snapshot(args: argparse.Namespace) -> int:
    from kubernetes.client.rest import ApiException  # the client only where a cluster is read

    from kdns.sources.kube import load_api_client, snapshot_items

    api_client = load_api_client(args.kubeconfig, args.context)
    try:
        items = snapshot_items(api_client, _watch_options(args, watch_pods=True))
    except ApiException as error:
        raise KdnsError(f"listing the cluster failed: API answered {error.status} {error.reason}") from None
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
        raise KdnsError(f"listing the cluster failed: {error}") from None
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's, where PyYAML has it: many times faster
    text = yaml.dump({"apiVersion": "v1", "kind": "List", "items": items}, Dumper=dumper, sort_keys=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text)
        except OSError as error:
            raise KdnsError(f"{args.output}: cannot write: {error}") from None
        print(f"{args.output}: {len(items)} objects", file=sys.stderr)
    return 0


def _node_cache_config(args: argparse.Namespace) -> config.ServeConfig:
    """`kdns node-cache`: a ServeConfig with no zone, whose cluster domain and reverse zones are a
    stub domain of the cluster DNS, asked over TCP (NodeLocal DNSCache's Corefile)."""
    if not args.cluster_dns:
        raise KdnsError("--cluster-dns: required: the cluster DNS's address (a Service in front of kdns serve)")
    if args.denial_cache_size < 0:
        raise KdnsError(f"--denial-cache-size {args.denial_cache_size}: must not be negative")
    cluster_dns = SocketAddress.parse(args.cluster_dns, "--cluster-dns")
    domain = config.cluster_domain(args.cluster_domain)
    options = _forward_options(args, max_negative_ttl=args.denial_max_ttl)
    upstreams, source = _upstreams(args)
    listen = args.listen or [f"{config.NODE_LOCAL_ADDRESS}:53"]
    return config.ServeConfig(
        snapshot=None,
        kubeconfig=None,
        context=None,
        watch=WatchOptions(),
        listen=tuple(SocketAddress.parse(text, "--listen", lowest_port=0) for text in listen),
        cluster_domain=domain,
        pod_mode=PodMode.DISABLED,
        ttl=0,
        max_udp=config.max_udp(args.max_udp_size),
        tcp=_tcp_limits(args),
        ops=_ops_listeners(args),
        forward=config.ForwardConfig(
            upstreams=upstreams,
            upstreams_from=source,
            stubs=tuple((zone, (cluster_dns,)) for zone in (domain, *REVERSE_ZONES)),
            options=options,
            cache_size=args.cache_size,
            serve_stale=config.duration("--serve-stale", args.serve_stale),
            prefetch=args.prefetch,
            denial_cache_size=args.denial_cache_size,
            tcp_upstreams=(cluster_dns,),
            cache_bytes=config.byte_size("--cache-bytes", args.cache_bytes),
            denial_cache_bytes=config.byte_size("--denial-cache-bytes", args.denial_cache_bytes),
        ),
        lameduck=config.duration("--lameduck", args.lameduck),
        log_queries=args.log_queries,
        log_level=args.log_level,
        log_format=args.log_format,
        config_file=getattr(args, "config", None),
        node_cache=True,
        reply_cache_bytes=config.byte_size("--reply-cache-bytes", args.reply_cache_bytes, lowest=0),
        config_max_bytes=args.config_max_bytes,
        hosts_max_bytes=config.byte_size("--hosts-max-bytes", args.hosts_max_bytes),
    )


def _explain(args: argparse.Namespace) -> int:
    from kdns.explain import Context, explain, qtype_known

    if not qtype_known(args.type):
        raise KdnsError(f"{args.type!r} is not a record type (A, AAAA, SRV, PTR, TXT, CNAME, SOA, NS, ANY...)")
    domain = config.cluster_domain(args.cluster_domain)
    options = _watch_options(args, watch_pods=PodMode(args.pods) is PodMode.VERIFIED)
    if args.snapshot is not None:
        store = new_store(domain, config.ttl(args.ttl), PodMode(args.pods))
        snapshot.report(build_store(args.snapshot, store))
    else:
        store = _listed_store(args, options, domain)
    upstreams, source = _upstreams(args)
    stubs = tuple(config.stub_domain(text) for text in args.stub_domain)
    context = Context(
        namespaces=options.namespaces,
        upstreams=tuple(str(address) for address in upstreams),
        upstreams_from=source,
        stubs=tuple((name, tuple(str(address) for address in addresses)) for name, addresses in stubs),
    )
    explanation = explain(store, args.name, args.type, context)
    if args.output == "json":
        print(json.dumps(explanation.as_json(), indent=2))
    else:
        print(explanation.text())
    return 0


def _listed_store(args: argparse.Namespace, options: WatchOptions, domain: str) -> ClusterStore:
    """The cluster listed once (as `kdns snapshot` lists it), in a store."""
    from kubernetes.client.rest import ApiException  # the client only where a cluster is read

    from kdns.core.convert import ConversionError, convert
    from kdns.sources.kube import load_api_client, snapshot_items

    try:
        items = snapshot_items(load_api_client(args.kubeconfig, args.context), options)
    except ApiException as error:
        raise KdnsError(f"listing the cluster failed: API answered {error.status} {error.reason}") from None
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
        raise KdnsError(f"listing the cluster failed: {error}") from None
    objects = []
    for item in items:
        try:
            converted = convert(item["kind"], item)
        except ConversionError as error:
            log.warning("skipped %s", error)
            continue
        if converted is not None:
            objects.append(converted)
    store = new_store(domain, config.ttl(args.ttl), PodMode(args.pods))
    store.load(objects, on_error=lambda obj, error: log.warning("could not apply %s: %s", obj, error))
    return store


def _store_from(args: argparse.Namespace) -> tuple[snapshot.Snapshot, ClusterStore]:
    store = new_store(config.cluster_domain(args.cluster_domain), config.ttl(args.ttl), PodMode(args.pods))
    return build_store(args.snapshot, store), store


def _check(args: argparse.Namespace) -> int:
    loaded, store = _store_from(args)
    for error in loaded.errors:
        print(f"{loaded.path}: error: {error}")
    omissions = [omission for omitted in store.omissions.values() for omission in omitted]
    for omission in omissions:
        print(f"{loaded.path}: error: {omission}")
    for duplicate in loaded.duplicates:
        print(f"{loaded.path}: warning: {duplicate}")
    for kind, count in sorted(loaded.ignored_kinds.items()):
        print(f"{loaded.path}: ignored {count} object(s) of kind {kind}")
    counts = store.counts()
    names = sum(1 for _ in store.zone.names())
    print(
        f"{loaded.path}: {counts['namespaces']} namespaces, {counts['services']} services, "
        f"{counts['endpointslices']} endpoint slices ({counts['endpoints']} endpoints), {counts['pods']} pods; "
        f"{names} record sets under {store.domain} and the reverse zones"
    )
    if loaded.errors:
        print(f"{loaded.path}: {len(loaded.errors)} object(s) would be skipped")
    if omissions:
        print(f"{loaded.path}: {len(omissions)} part(s) of objects would be left out of DNS")
    return 2 if loaded.errors or omissions else 0


def _dump(args: argparse.Namespace) -> int:
    loaded, store = _store_from(args)
    snapshot.report(loaded)
    sys.stdout.write(render(store.zone))
    return 0
