"""hosts (kdns/core/hosts.py): a hosts text read as CoreDNS's plugin/hosts reads it, and the
stage answering as hosts.go does: addresses, wildcards, PTR, NODATA, SERVFAIL without
fallthrough, next stage with it."""

from __future__ import annotations

import tracemalloc

import dns.message
import dns.rcode
import dns.rdatatype

from kdns.core import wire
from kdns.core.hosts import (
    ENTRY_OVERHEAD,
    ROOT,
    Hosts,
    HostsOptions,
    HostsSource,
    HostsStage,
    HostsTable,
    parse_hosts,
)
from kdns.core.names import to_wire
from kdns.core.stage import Outcome, Reply, ReplyOptions, Request

NODE_HOSTS = """\
# k3s's NodeHosts: one line per node
10.0.0.1 server-0
10.0.0.2 agent-1 agent-1.lan   # two names
fd00::2 agent-1
10.0.0.3%eth0 zoned
not-an-address broken
10.0.0.9
10.0.0.4 *.apps.lan
::ffff:10.0.0.5 mapped
"""
OPTIONS = ReplyOptions()
NEXT = Reply(b"next stage")


def _stage(
    text: str = NODE_HOSTS, inline: str = "", fallthrough: tuple[bytes, ...] | None = None, **more: object
) -> HostsStage:
    zones = (ROOT,)
    options = HostsOptions(zones, 3600, fallthrough, **more)  # type: ignore[arg-type]
    return HostsStage(HostsSource(Hosts(options, parse_hosts(text, zones), parse_hosts(inline, zones))), OPTIONS)


def _ask(stage: HostsStage, name: str, rdtype: str = "A") -> dns.message.Message | Reply:
    packet = dns.message.make_query(name, rdtype).to_wire()
    query = wire.parse_query(packet)
    outcome: Outcome = stage.serve(Request.of(query, False, None, OPTIONS), lambda request: NEXT)
    assert isinstance(outcome, Reply)
    if outcome is NEXT:
        return NEXT
    return dns.message.from_wire(outcome.message)


def _addresses(reply: dns.message.Message | Reply) -> list[str]:
    assert isinstance(reply, dns.message.Message)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    return [item.to_text() for rrset in reply.answer for item in rrset]


def test_every_name_on_a_line_gets_its_address_and_comments_zones_and_junk_are_dropped() -> None:
    stage = _stage()
    assert _addresses(_ask(stage, "server-0")) == ["10.0.0.1"]
    assert _addresses(_ask(stage, "AGENT-1.lan.")) == ["10.0.0.2"]
    assert _addresses(_ask(stage, "agent-1", "AAAA")) == ["fd00::2"]
    assert _addresses(_ask(stage, "zoned")) == ["10.0.0.3"]  # the IPv6-style zone is dropped
    assert _addresses(_ask(stage, "mapped")) == ["10.0.0.5"]  # a v4-mapped address is IPv4 (Go's To4)
    assert _ask(stage, "broken") != NEXT and _ask(stage, "broken").rcode() == dns.rcode.SERVFAIL  # type: ignore[union-attr]


def test_a_wildcard_answers_one_label_in_its_place() -> None:
    stage = _stage()
    assert _addresses(_ask(stage, "console.apps.lan")) == ["10.0.0.4"]
    assert _ask(stage, "a.b.apps.lan").rcode() == dns.rcode.SERVFAIL  # type: ignore[union-attr]


def test_a_name_with_addresses_has_no_other_records_and_one_family_is_nodata() -> None:
    stage = _stage()
    assert _addresses(_ask(stage, "server-0", "AAAA")) == []
    assert _addresses(_ask(stage, "server-0", "MX")) == []
    assert _addresses(_ask(stage, "server-0", "TXT")) == []


def test_pointers_for_every_name_of_an_address_unless_no_reverse() -> None:
    stage = _stage()
    assert _addresses(_ask(stage, "2.0.0.10.in-addr.arpa", "PTR")) == ["agent-1.", "agent-1.lan."]
    assert _ask(stage, "8.0.0.10.in-addr.arpa", "PTR") is NEXT  # nothing for it: on, fallthrough or not
    no_reverse = HostsStage(
        HostsSource(Hosts(HostsOptions((ROOT,)), parse_hosts(NODE_HOSTS, (ROOT,), reverse=False), HostsTable.empty())),
        OPTIONS,
    )
    assert _ask(no_reverse, "2.0.0.10.in-addr.arpa", "PTR") is NEXT


def test_an_absent_name_is_servfail_without_fallthrough_and_goes_on_with_it() -> None:
    assert _ask(_stage(), "nowhere").rcode() == dns.rcode.SERVFAIL  # type: ignore[union-attr]
    assert _ask(_stage(fallthrough=(ROOT,)), "nowhere") is NEXT
    only_lan = _stage(fallthrough=(to_wire("lan"),))
    assert _ask(only_lan, "nowhere.lan") is NEXT
    assert _ask(only_lan, "nowhere.example").rcode() == dns.rcode.SERVFAIL  # type: ignore[union-attr]
    # fallthrough_unsupported: other types at a covered name go on even where it has addresses.
    unsupported = _stage(fallthrough=(ROOT,), fallthrough_unsupported=True)
    assert _ask(unsupported, "server-0", "MX") is NEXT
    assert _addresses(_ask(unsupported, "server-0")) == ["10.0.0.1"]


def test_names_outside_the_zones_go_on_and_are_not_taken_in() -> None:
    zones = (to_wire("lan"),)
    hosts = Hosts(HostsOptions(zones), parse_hosts(NODE_HOSTS, zones), HostsTable.empty())
    stage = HostsStage(HostsSource(hosts), OPTIONS)
    assert _ask(stage, "server-0") is NEXT
    assert _addresses(_ask(stage, "agent-1.lan")) == ["10.0.0.2"]
    assert hosts.entries == 2  # agent-1.lan and *.apps.lan


def test_the_file_comes_first_then_the_corefiles_entries_and_a_replaced_table_answers_at_once() -> None:
    stage = _stage(inline="10.9.9.9 server-0\n10.9.9.8 extra")
    assert _addresses(_ask(stage, "server-0")) == ["10.0.0.1", "10.9.9.9"]
    assert _addresses(_ask(stage, "extra")) == ["10.9.9.8"]
    source = stage.source
    source.replace(Hosts(source.hosts.options, parse_hosts("10.1.1.1 server-0\n", (ROOT,)), HostsTable.empty()))
    assert _addresses(_ask(stage, "server-0")) == ["10.1.1.1"]


def test_a_table_counts_its_bytes_and_entries_never_below_what_it_holds() -> None:
    table = parse_hosts(NODE_HOSTS, (ROOT,))
    hosts = Hosts(HostsOptions((ROOT,)), table, HostsTable.empty())
    assert hosts.entries == table.entries == 7
    assert hosts.size == len(NODE_HOSTS.encode()) + ENTRY_OVERHEAD * 7
    # What the process holds for a NodeHosts of 5,000 nodes, measured: the count covers it.
    text = "".join(f"10.{i // 65536}.{i // 256 % 256}.{i % 256} node-{i} node-{i}.cluster.lan\n" for i in range(5000))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    big = Hosts(HostsOptions((ROOT,)), parse_hosts(text, (ROOT,)), HostsTable.empty())
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert big.entries == 10_000
    assert held <= big.size, (held, big.size)
