"""Autopath (issue 12, point 1; CoreDNS's `autopath @kubernetes`): a Pod's query for a name in its
first search element that does not exist is answered from the rest of its search path, with a
CNAME from the name asked to the first name that exists; anyone else gets the ordinary answer."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from kdns.core.autopath import AUTOPATH_TTL, Autopath
from kdns.core.cache import ForwardCache
from kdns.core.counters import QueryCounters
from kdns.core.names import to_wire
from kdns.core.stage import ReplyOptions
from kdns.core.store import ClusterStore
from kdns.core.upstream import read_response
from kdns.pipeline import Pending, Pipeline
from tests.builders import namespace, pipeline_of, pod, service, store_of

POD = ("10.244.1.7", 40000)  # a Pod in staging
STRANGER = ("10.0.0.99", 40000)  # no Pod has this address


def _setup(search: tuple[str, ...] = ()) -> tuple[ClusterStore, Pipeline, ForwardCache, QueryCounters]:
    store = store_of(
        namespace("prod"),
        namespace("staging"),
        service("prod", "web", ["10.96.0.5"]),
        service("staging", "api", ["10.96.0.6"]),
        pod("staging", "client", "10.244.1.7"),
    )
    cache = ForwardCache(100, lambda: 0.0)
    autopath = Autopath(to_wire("cluster.local"), tuple(to_wire(s) for s in search), store.pods.namespace_of)
    pipeline = pipeline_of(store, options=ReplyOptions(recursion_available=True), cache=cache, autopath=autopath)
    return store, pipeline, cache, pipeline.counters


def _ask(handler: Pipeline, name: str, client: tuple[str, int], rdtype: str = "A") -> dns.message.Message | Pending:
    reply = handler.answer(dns.message.make_query(name, rdtype).to_wire(), False, client)
    assert reply is not None
    return reply if isinstance(reply, Pending) else dns.message.from_wire(reply)


def _records(message: dns.message.Message | Pending) -> list[str]:
    assert isinstance(message, dns.message.Message)
    return [
        f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {item}"
        for rrset in message.answer
        for item in rrset
    ]


def _upstream(handler: Pipeline, step: Pending, rcode: dns.rcode.Rcode, address: str | None = None) -> bytes | Pending:
    """Hand the pipeline upstream's answer to `step`'s question: `address` in an A record, or none
    (then with the SOA that makes a negative answer cacheable, RFC 2308 5)."""
    asked = step.ask.query
    name = dns.name.from_wire(asked.question, 0)[0]
    query = dns.message.make_query(name, "A")
    query.id = asked.id
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if address is not None:
        response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", address))
    else:
        response.authority.append(dns.rrset.from_text("example.", 60, "IN", "SOA", "ns.example. h.example. 1 2 3 4 60"))
    return handler.resume(step, read_response(response.to_wire(), asked.id, asked.question, 0, 3600))


def test_a_short_name_of_another_namespace_resolves_in_one_query_through_a_cname() -> None:
    """glibc asks `web.prod` as `web.prod.staging.svc.cluster.local` first: kdns answers it with the
    second search element's name, `web.prod.svc.cluster.local`."""
    _, handler, _, counters = _setup()
    reply = _ask(handler, "web.prod.staging.svc.cluster.local", POD)
    assert isinstance(reply, dns.message.Message) and reply.rcode() == dns.rcode.NOERROR
    assert _records(reply) == [
        f"web.prod.staging.svc.cluster.local. {AUTOPATH_TTL} CNAME web.prod.svc.cluster.local.",
        f"web.prod.svc.cluster.local. {AUTOPATH_TTL} A 10.96.0.5",
    ]
    assert counters.autopath == 1


def test_a_name_of_the_pods_own_namespace_is_answered_as_usual() -> None:
    _, handler, _, counters = _setup()
    assert _records(_ask(handler, "api.staging.svc.cluster.local", POD)) == [
        "api.staging.svc.cluster.local. 30 A 10.96.0.6"
    ]
    assert counters.autopath == 0


def test_a_client_that_is_no_pod_gets_the_ordinary_nxdomain() -> None:
    _, handler, _, counters = _setup()
    reply = _ask(handler, "web.prod.staging.svc.cluster.local", STRANGER)
    assert isinstance(reply, dns.message.Message) and reply.rcode() == dns.rcode.NXDOMAIN
    # ... which is not kept for the next asker: a Pod asking the same bytes is walked.
    assert _records(_ask(handler, "web.prod.staging.svc.cluster.local", POD))[0].startswith(
        "web.prod.staging.svc.cluster.local. 5 CNAME"
    )
    assert counters.autopath == 1


def test_a_name_outside_the_first_search_element_is_left_alone() -> None:
    _, handler, _, _ = _setup()
    reply = _ask(handler, "web.prod.prod.svc.cluster.local", POD)  # prod is not the Pod's namespace
    assert isinstance(reply, dns.message.Message) and reply.rcode() == dns.rcode.NXDOMAIN


def test_an_external_name_walks_the_cluster_names_then_asks_upstream_once_and_answers_with_a_cname() -> None:
    store, handler, cache, counters = _setup(search=("corp.example",))
    asked = "ext.example.test.staging.svc.cluster.local"
    step = _ask(handler, asked, POD)
    # svc.cluster.local and cluster.local do not hold it: the next name is kdns's own search domain.
    assert isinstance(step, Pending) and step.ask.query.key == to_wire("ext.example.test.corp.example")
    following = _upstream(handler, step, dns.rcode.NXDOMAIN)
    assert isinstance(following, Pending) and following.ask.query.key == to_wire("ext.example.test")
    final = _upstream(handler, following, dns.rcode.NOERROR, "192.0.2.7")
    assert isinstance(final, bytes)
    reply = dns.message.from_wire(final)
    assert reply.question[0].name.to_text() == asked + "."
    assert _records(reply) == [
        f"{asked}. 5 CNAME ext.example.test.",
        "ext.example.test. 5 A 192.0.2.7",  # upstream's 300 s kept short
    ]
    assert counters.autopath == 1
    # Both upstream answers are cached: the next Pod asking is answered at once.
    again = _ask(handler, asked, POD)
    assert isinstance(again, dns.message.Message) and _records(again)[1] == "ext.example.test. 5 A 192.0.2.7"
    assert counters.autopath == 2 and cache.hits >= 2
    assert store.zone is not None


def test_when_no_search_name_exists_the_ordinary_nxdomain_is_sent() -> None:
    _, handler, _, counters = _setup()
    step = _ask(handler, "nowhere.invalid.staging.svc.cluster.local", POD)
    assert isinstance(step, Pending) and step.ask.query.key == to_wire("nowhere.invalid")
    final = _upstream(handler, step, dns.rcode.NXDOMAIN)
    assert isinstance(final, bytes)
    reply = dns.message.from_wire(final)
    assert reply.rcode() == dns.rcode.NXDOMAIN and reply.question[0].name.to_text().startswith(
        "nowhere.invalid.staging"
    )
    assert counters.autopath == 0 and counters.by_rcode(dns.rcode.NXDOMAIN) == 1


def test_an_upstream_failure_gives_the_ordinary_nxdomain_for_the_client_to_walk() -> None:
    _, handler, _, _ = _setup()
    step = _ask(handler, "ext.example.test.staging.svc.cluster.local", POD)
    assert isinstance(step, Pending)
    final = handler.resume(step, None)
    assert isinstance(final, bytes) and dns.message.from_wire(final).rcode() == dns.rcode.NXDOMAIN


def test_pods_of_several_namespaces_at_one_address_turn_autopath_off_for_it() -> None:
    store = store_of(namespace("a"), namespace("b"), pod("a", "x", "10.0.0.1"), pod("b", "y", "10.0.0.1"))
    assert store.pods.namespace_of("10.0.0.1") is None
    assert store.pods.namespace_of("not an address") is None
    store.delete("Pod", ("b", "y"))
    assert store.pods.namespace_of("10.0.0.1") == "a"
