"""A Corefile made into kdns's configuration (kdns/corefile_config.py) and `kdns -conf PATH`:
kubeadm's Corefile, CoreDNS's defaults where a Corefile is silent, stub-domain blocks, and every
refusal naming its file and line (issue 19)."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
from pathlib import Path

import pytest

from kdns.address import SocketAddress
from kdns.cli import coredns_arguments
from kdns.config import Consolidate, HostsConfig, Policy, ServeConfig
from kdns.core.store import PodMode
from kdns.corefile import CorefileError, parse
from kdns.corefile_config import DEFAULTS, Corefile, serve_config
from kdns.errors import KdnsError
from tests.helpers import serve_config as base_config
from tests.process import KUBEADM_COREFILE, kdns_command, run_kdns


def _read(text: str, ipv6: bool = True, base: ServeConfig | None = None) -> Corefile:
    return serve_config(
        parse(text, "/etc/coredns/Corefile"), base or base_config(), "/etc/coredns/Corefile", lambda: ipv6
    )


@pytest.mark.parametrize(
    ("line", "covered", "zones", "through"),
    [
        ("kubernetes cluster.local in-addr.arpa ip6.arpa", "fallthrough in-addr.arpa ip6.arpa", 2, 2),
        ("kubernetes cluster.local in-addr.arpa ip6.arpa", "", 2, 0),
        ("kubernetes cluster.local in-addr.arpa ip6.arpa", "fallthrough ip6.arpa", 2, 1),
        ("kubernetes cluster.local in-addr.arpa ip6.arpa", "fallthrough", 2, 2),
        ("kubernetes cluster.local", "", 0, 0),
    ],
)
def test_the_reverse_zones_are_those_the_kubernetes_line_lists_and_go_on_where_fallthrough_covers_them(
    line: str, covered: str, zones: int, through: int
) -> None:
    config = _read(f".:53 {{\n  {line} {{\n    {covered}\n  }}\n}}\n").config
    assert config.reverse_zones == ("in-addr.arpa", "ip6.arpa")[:zones]
    assert len(config.reverse_fallthrough) == through
    assert config.cluster_fallthrough == (covered == "fallthrough")


def _refused(text: str) -> str:
    with pytest.raises(CorefileError) as raised:
        _read(text)
    return str(raised.value)


def test_kubeadms_corefile_is_what_kubeadms_cluster_dns_does(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.2\nnameserver 10.0.0.3\n")
    text = KUBEADM_COREFILE.read_text().replace("/etc/resolv.conf", str(resolv))
    read = _read(text)
    config = read.config
    assert config.listen == (SocketAddress("0.0.0.0", 53), SocketAddress("::", 53))  # `.:53`: both families
    assert config.ops.health == SocketAddress("::", 8080) and config.lameduck == 5.0
    assert config.ops.ready == SocketAddress("::", 8181)
    assert config.ops.metrics == SocketAddress("::", 9153)
    assert config.cluster_domain == "cluster.local" and config.ttl == 30 and config.pod_mode is PodMode.INSECURE
    forward = config.forward
    assert forward.upstreams == (SocketAddress("10.0.0.2", 53), SocketAddress("10.0.0.3", 53))
    assert forward.upstreams_from == str(resolv)
    assert forward.options.max_concurrent == 1000 and forward.options.policy is Policy.RANDOM
    assert forward.options.max_ttl == 30 and forward.options.max_negative_ttl == 30  # `cache 30`
    assert forward.cache_size == DEFAULTS.cache_capacity and forward.denial_cache_size == DEFAULTS.cache_capacity
    assert config.loadbalance and not config.log_queries and not config.autopath and not config.node_cache
    assert config.config_file == "/etc/coredns/Corefile"  # `reload`: every 30 s, give or take 15
    assert (config.config_poll, config.config_poll_jitter) == (30.0, 15.0)
    assert read.notes == []
    assert _read(text, ipv6=False).config.listen == (SocketAddress("0.0.0.0", 53),)


def test_where_a_corefile_is_silent_it_means_what_it_means_to_coredns() -> None:
    config = _read(".:5300 {\n  kubernetes cluster.local\n  forward . 10.0.0.2:5353\n}\n").config
    assert config.ttl == 5 and config.pod_mode is PodMode.DISABLED  # the kubernetes plugin's defaults
    assert config.ops.health is None and config.ops.ready is None and config.ops.metrics is None
    assert config.forward.cache_size == 0  # no `cache`: nothing cached
    assert config.lameduck == 0 and config.config_file is None and not config.loadbalance
    assert config.forward.upstreams == (SocketAddress("10.0.0.2", 5353),)
    assert config.listen[0].port == 5300
    # Only what a Corefile says nothing of comes from the flags: the budgets, the API timings.
    base = base_config(reply_cache_bytes=12345, ttl=30, pod_mode=PodMode.VERIFIED)
    assert _read(".:53 {\n kubernetes cluster.local\n}\n", base=base).config == dataclasses.replace(
        config,
        listen=(SocketAddress("0.0.0.0", 53), SocketAddress("::", 53)),
        reply_cache_bytes=12345,
        forward=dataclasses.replace(config.forward, upstreams=()),
    )


def test_every_plugin_option_kdns_honours_is_read() -> None:
    config = _read(
        """\
cluster.local:1053 in-addr.arpa:1053 {
    bind 127.0.0.1 ::1
    bufsize 1400
    log
    errors {
        consolidate 5m ".* i/o timeout$"
    }
    health 127.0.0.1:18080
    ready [::1]:18181
    prometheus localhost:19153
    kubernetes {
        pods verified
        ttl 0
        namespaces prod staging
        labels app=web
        kubeconfig /etc/kubeconfig other
        fallthrough in-addr.arpa
        endpoint https://10.0.0.1:6443
        noendpoints
        endpoint_pod_names
        ignore empty_service
    }
    autopath @kubernetes
    forward . 10.0.0.2 dns://10.0.0.3:5353 {
        policy sequential
        max_concurrent 50
        force_tcp
        prefer_udp
        except corp.example. Internal
        max_fails 0
        health_check 2s no_rec domain example.org
        expire 20s
    }
    cache {
        success 500 120 10
        denial 200 60
        prefetch 10 1m 20%
        serve_stale 1m30s
    }
    reload 10s 8s
}
""",
    )
    read = config.config
    assert read.listen == (SocketAddress("127.0.0.1", 1053), SocketAddress("::1", 1053))
    assert read.max_udp == 1400 and read.log_queries and read.autopath
    assert read.ops.health == SocketAddress("127.0.0.1", 18080) and read.ops.ready == SocketAddress("::1", 18181)
    assert read.ops.metrics == SocketAddress("127.0.0.1", 19153)
    assert read.pod_mode is PodMode.VERIFIED and read.ttl == 0 and read.watch.watch_pods
    assert read.watch.namespaces == ("prod", "staging") and read.watch.label_selector == "app=web"
    assert (read.kubeconfig, read.context) == ("/etc/kubeconfig", "other")
    assert read.api_endpoint == "https://10.0.0.1:6443" and not read.watch.watch_endpoints
    assert read.publish.endpoint_pod_names and read.publish.ignore_empty_service
    forward = read.forward
    assert forward.upstreams == (SocketAddress("10.0.0.2", 53), SocketAddress("10.0.0.3", 5353))
    assert forward.tcp_upstreams == forward.upstreams
    assert forward.options.policy is Policy.SEQUENTIAL and forward.options.max_concurrent == 50
    assert (forward.cache_size, forward.options.max_ttl, forward.options.min_ttl) == (500, 120, 10)
    assert (forward.denial_cache_size, forward.options.max_negative_ttl) == (200, 60)
    assert forward.prefetch and forward.serve_stale == 90.0
    assert forward.excepted == ("corp.example", "internal") and forward.options.max_fails == 0
    assert (forward.options.health_check, forward.options.health_check_recursion) == (2.0, False)
    assert forward.options.health_check_name == "example.org"
    assert (read.config_poll, read.config_poll_jitter) == (10.0, 5.0)
    assert [note.split(": ", 1)[0] for note in config.notes] == [
        "/etc/coredns/Corefile:32",
        "/etc/coredns/Corefile:37",
    ]
    assert read.consolidate == (Consolidate(300.0, "5m", ".* i/o timeout$", logging.ERROR),)
    assert [rule.scope for rule in read.log_rules] == ["cluster.local.", "in-addr.arpa."]  # the block's zones


def test_hosts_as_k3s_and_rke2_write_it_and_with_every_option() -> None:
    k3s = ".:53 {\n  kubernetes cluster.local in-addr.arpa ip6.arpa\n"
    k3s += "  hosts /etc/coredns/NodeHosts {\n    ttl 60\n    reload 15s\n    fallthrough\n  }\n}\n"
    assert _read(k3s).config.hosts == HostsConfig(
        path="/etc/coredns/NodeHosts", zones=(".",), ttl=60, reload=15.0, fallthrough=(".",)
    )
    every = ".:53 {\n  hosts extra.hosts lan example.org. {\n    10.0.0.1 a.lan b.lan\n    fd00::1 a.lan\n"
    every += "    no_reverse\n    reload 0\n    fallthrough lan\n    fallthrough_unsupported\n  }\n}\n"
    assert _read(every).config.hosts == HostsConfig(
        path="extra.hosts",
        inline=("10.0.0.1 a.lan b.lan", "fd00::1 a.lan"),
        zones=("lan", "example.org"),
        reload=0.0,
        reverse=False,
        fallthrough=("lan",),
        fallthrough_unsupported=True,
    )
    bare = _read(".:53 {\n  hosts\n}\n").config.hosts
    assert bare == HostsConfig(path="/etc/hosts", zones=(".",), ttl=3600, reload=5.0)  # CoreDNS's defaults


def test_a_block_of_its_own_zone_is_a_stub_domain() -> None:
    config = _read(
        """\
.:53 {
    kubernetes cluster.local in-addr.arpa ip6.arpa
    forward . 10.0.0.2
    cache 30
}
corp.example:53 consul.local:53 {
    errors
    cache 30
    forward . 10.1.0.1 10.1.0.2:5353
}
""",
    ).config
    upstreams = (SocketAddress("10.1.0.1", 53), SocketAddress("10.1.0.2", 5353))
    assert config.forward.stubs == (("corp.example", upstreams), ("consul.local", upstreams))


def test_a_block_of_its_own_zone_answers_with_its_own_plugins_and_may_forward_nothing() -> None:
    config = _read(
        """\
.:53 {
    kubernetes cluster.local in-addr.arpa ip6.arpa
    forward . 10.0.0.2
}
lan:53 {
    any
    loadbalance
    rewrite name exact old.lan new.lan
    template IN A lan {
        answer "{{ .Name }} 60 IN A 10.0.0.9"
    }
    hosts {
        10.0.0.7 printer.lan
    }
}
""",
    ).config
    assert config.forward.stubs == (("lan", ()),)  # no forward: SERVFAIL for what its plugins leave
    ((zone, plugins),) = config.stub_plugins
    assert zone == "lan" and plugins.answer_any and plugins.loadbalance
    assert len(plugins.rewrite) == 1 and len(plugins.templates) == 1
    hosts = plugins.hosts
    assert hosts is not None and hosts.zones == ("lan",) and hosts.inline == ("10.0.0.7 printer.lan",)
    assert not config.answer_any and not config.loadbalance and config.hosts is None  # the main block's own


def test_cache_keepttl_is_read_and_takes_no_argument() -> None:
    text = ".:53 {{\n  kubernetes cluster.local\n  forward . 10.0.0.2\n  cache 30 {{\n    {option}\n  }}\n}}\n"
    assert _read(text.format(option="keepttl")).config.forward.keep_ttl
    assert not _read(text.format(option="prefetch 10")).config.forward.keep_ttl
    assert "/etc/coredns/Corefile:5" in _refused(text.format(option="keepttl now"))


def test_a_corefile_without_kubernetes_is_a_forwarding_cache() -> None:
    config = _read(".:53 {\n  forward . 10.0.0.2\n  cache 30\n}\n").config
    assert config.node_cache and config.forward.upstreams == (SocketAddress("10.0.0.2", 53),)


def test_a_reverse_zone_key_may_be_a_network() -> None:
    text = ".:53 {\n kubernetes cluster.local\n forward . 10.0.0.2\n}\n10.0.0.0/8:53 {\n forward . 10.9.9.9\n}\n"
    assert _read(text).config.forward.stubs == (("10.in-addr.arpa", (SocketAddress("10.9.9.9", 53),)),)


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        (".:53 {\n  errors\n  whoami\n}\n", ":3", "whoami: not a plugin kdns serves (it serves any, autopath, bind"),
        (".:53 {\n  kubernetes cluster.local {\n    tls a b c\n  }\n}\n", ":3", "tls: not an option of"),
        (".:53 {\n  kubernetes cluster.local {\n    endpoint ftp://x\n  }\n}\n", ":3", "http:// or https://"),
        (".:53 {\n  kubernetes cluster.local {\n    ignore everything\n  }\n}\n", ":3", "ignore empty_service"),
        (".:53 {\n  cache\n  cache 30\n}\n", ":3", "cache: is used twice"),
        (".:53 {\n  kubernetes cluster.local\n}\n.:54 {\n  forward . 1.1.1.1\n}\n", ":1", "ports [53, 54]"),
        (".:53 {\n kubernetes cluster.local\n}\nb:53 {\n kubernetes cluster.remote\n}\n", ":4", "a second server"),
        (".:53 {\n  kubernetes cluster.local\n  forward example.org 1.1.1.1\n}\n", ":3", "FROM is . or"),
        (".:53 {\n  forward . not-an-address\n}\n", ":2", "forward: to 'not-an-address'"),
        (".:53 {\n  forward . tls://1.1.1.1\n}\n", ":2", "plain DNS"),
        (".:53 {\n  kubernetes cluster.local {\n    ttl 4000\n  }\n}\n", ":3", "between 0 and 3600"),
        (".:53 {\n  kubernetes cluster.local {\n    pods maybe\n  }\n}\n", ":3", "not one of"),
        (".:53 {\n  kubernetes cluster.local {\n    fallthrough example.org\n  }\n}\n", ":3", "cluster domain and the"),
        (".:53 {\n  health {\n    lameduck soon\n  }\n}\n", ":3", "expected a duration"),
        (".:53 {\n  reload 1s\n}\n", ":2", "2s or more"),
        (".:53 {\n  reload 10s 500ms\n}\n", ":2", "0 or 1s or more"),
        (".:53 {\n  reload 10 5\n}\n", ":2", "expected a duration such as 5s, 1m30s"),
        (".:53 {\n  loadbalance weighted /w\n}\n", ":2", "round_robin"),
        (".:53 {\n  bind eth0\n}\n", ":2", "not interface names"),
        (".:53 {\n  hosts {\n    fallthrough\n    10.0.0.1 late\n  }\n}\n", ":4", "entries come before fallthrough"),
        (".:53 {\n  hosts {\n    ttl 0\n  }\n}\n", ":3", "ttl provided is invalid"),
        (".:53 {\n  rewrite name fuzzy a b\n}\n", ":2", "supports only exact, prefix"),
        (".:53 {\n  errors {\n    consolidate 5m x loudly\n  }\n}\n", ":3", "unknown log level argument"),
        (".:53 {\n  errors {\n    consolidate 5m (x\n  }\n}\n", ":3", "invalid regex pattern: (x"),
        (".:53 {\n  log {\n    class chatty\n  }\n}\n", ":2", "invalid Class: chatty"),
        (".:53 {\n  forward . 1.1.1.1 {\n    health_check 1s sometimes\n  }\n}\n", ":3", "expected no_rec or domain"),
        (
            ".:53 {\n  forward . 1.1.1.1\n}\nx.example {\n  forward . 1.1.1.2 {\n    except y.x.example\n  }\n}\n",
            ":6",
            "main block's forward only",
        ),
        (".:53 {\n  rewrite stop {\n    name regex (a b\n  }\n}\n", ":2", "invalid regex matching pattern: (a"),
        ('.:53 {\n  template IN A {\n    answer "{{ .Question }}"\n  }\n}\n', ":2", "kdns fills in"),
        (".:53 {\n  template XX A\n}\n", ":2", "invalid query class XX"),
        (".:53 {\n  template IN A {\n    rcode MAYBE\n  }\n}\n", ":3", "unknown rcode MAYBE"),
        (".:53 {\n  template IN A {\n    match (a\n  }\n}\n", ":2", "could not parse regex"),
        (".:53 {\n  hosts {\n    reload often\n  }\n}\n", ":3", "expected a duration"),
        (".:53 {\n  hosts {\n    fallthrough_unsupported\n  }\n}\n", ":2", "requires fallthrough"),
        ("tls://.:853 {\n  forward . 1.1.1.1\n}\n", ":1", "not tls://"),
        (".:53 {\n  kubernetes cluster.local\n}\nexample.org {\n  health\n}\n", ":5", "stub domain"),
        ("example.org {\n  forward . 1.1.1.1\n}\n", ":1", "no block for the root zone"),
    ],
)
def test_what_kdns_cannot_serve_is_refused_naming_the_file_and_line(text: str, where: str, says: str) -> None:
    error = _refused(text)
    assert error.startswith(f"/etc/coredns/Corefile{where}:"), error
    assert says in error, error


def test_coredns_command_line_is_kdns_serve_with_the_corefile() -> None:
    assert coredns_arguments(["-conf", "/etc/coredns/Corefile"]) == ["serve", "--corefile", "/etc/coredns/Corefile"]
    assert coredns_arguments(["--conf=/c", "-quiet"]) == ["serve", "--corefile", "/c"]
    assert coredns_arguments(["-quiet"]) == ["serve", "--corefile", "Corefile"]  # CoreDNS's default
    assert coredns_arguments(["-plugins"]) is None
    assert coredns_arguments(["serve", "--ttl", "5"]) == ["serve", "--ttl", "5"]
    with pytest.raises(KdnsError, match="-pidfile: kdns takes CoreDNS's -conf PATH"):
        coredns_arguments(["-conf", "/c", "-pidfile", "/run/coredns.pid"])


def test_the_command_line_refuses_a_bad_corefile_and_flags_it_sets(tmp_path: Path) -> None:
    corefile = tmp_path / "Corefile"
    corefile.write_text(".:53 {\n  kubernetes cluster.local\n  dnssec\n}\n")
    result = run_kdns("-conf", str(corefile))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kdns: error: {corefile}:3: dnssec: not a plugin kdns serves (it serves any, autopath, bind, bufsize, "
        "cache, errors, forward, health, hosts, kubernetes, loadbalance, log, loop, prometheus, ready, reload, "
        "rewrite, template)"
    )
    command = [*kdns_command(), "serve", "--corefile", str(corefile), "--ttl", "5", "--listen", "127.0.0.1:0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert (
        result.stderr
        == f"kdns: error: --corefile {corefile}: sets what --listen, --ttl would; say it in the Corefile\n"
    )
    plugins = run_kdns("-plugins")
    assert plugins.returncode == 0 and "dns.kubernetes" in plugins.stdout.split()
