"""Applying changes to the store: each change rebuilds only its own object's answers, and the zone
after any sequence of changes answers as a zone built fresh from the final objects would."""

from __future__ import annotations

import pickle
import random
from collections.abc import Hashable, Mapping

from kdns.core.store import Change, ClusterStore
from kdns.core.zone import Contribution
from kdns.core.zonefile import render
from tests.builders import (
    Obj,
    ask,
    endpoint,
    endpoint_slice,
    headless,
    namespace,
    rcode,
    records,
    service,
    store_of,
    upsert,
)


def test_new_service_resolves_and_deleted_service_goes_nxdomain_with_its_ptr() -> None:
    store = store_of()
    upsert(store, service("prod", "web", ["10.96.0.5"]))
    assert records(ask(store, "web.prod.svc.cluster.local")) == ["web.prod.svc.cluster.local. A 10.96.0.5"]
    store.delete("Service", ("prod", "web"))
    assert rcode(ask(store, "web.prod.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "5.0.96.10.in-addr.arpa", "PTR")) == "REFUSED"
    assert rcode(ask(store, "prod.svc.cluster.local")) == "NXDOMAIN"


def test_a_slice_change_rebuilds_only_that_services_answers() -> None:
    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        headless("prod", "db"),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5")]),
    )
    zone = store.zone
    web_before = zone.answer(b"\x03web\x04prod\x03svc\x07cluster\x05local\x00", 1)
    upsert(store, endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5"), endpoint("10.244.1.6")]))
    assert zone.answer(b"\x03web\x04prod\x03svc\x07cluster\x05local\x00", 1) is web_before
    assert len(records(ask(store, "db.prod.svc.cluster.local"))) == 2


def test_an_endpoint_turning_not_ready_leaves_the_answers() -> None:
    store = store_of(
        headless("prod", "db"),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5", hostname="db-0"), endpoint("10.244.1.6")]),
    )
    upsert(
        store,
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5", False, hostname="db-0"), endpoint("10.244.1.6")]),
    )
    assert records(ask(store, "db.prod.svc.cluster.local")) == ["db.prod.svc.cluster.local. A 10.244.1.6"]
    assert rcode(ask(store, "db-0.db.prod.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == "REFUSED"


def test_service_created_after_its_slices_publishes_them() -> None:
    store = store_of(endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5")]))
    assert rcode(ask(store, "db.prod.svc.cluster.local")) == "NXDOMAIN"
    upsert(store, headless("prod", "db"))
    assert records(ask(store, "db.prod.svc.cluster.local")) == ["db.prod.svc.cluster.local. A 10.244.1.5"]


def test_slice_deleted_takes_its_endpoints_away() -> None:
    store = store_of(
        headless("prod", "db"),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5")]),
        endpoint_slice("prod", "db-b", "db", [endpoint("10.244.1.6")]),
    )
    store.delete("EndpointSlice", ("prod", "db-a"))
    assert records(ask(store, "db.prod.svc.cluster.local")) == ["db.prod.svc.cluster.local. A 10.244.1.6"]


def test_slice_relabelled_to_another_service_moves_its_endpoints() -> None:
    store = store_of(
        headless("prod", "a"),
        headless("prod", "b"),
        endpoint_slice("prod", "s", "a", [endpoint("10.244.1.5")]),
    )
    upsert(store, endpoint_slice("prod", "s", "b", [endpoint("10.244.1.5")]))
    assert rcode(ask(store, "a.prod.svc.cluster.local")) == "NXDOMAIN"
    assert records(ask(store, "b.prod.svc.cluster.local")) == ["b.prod.svc.cluster.local. A 10.244.1.5"]


def test_address_in_two_services_has_a_ptr_for_each_until_one_goes() -> None:
    store = store_of(
        headless("prod", "a"),
        headless("prod", "b"),
        endpoint_slice("prod", "sa", "a", [endpoint("10.244.1.5", hostname="x")]),
        endpoint_slice("prod", "sb", "b", [endpoint("10.244.1.5", hostname="y")]),
    )
    assert records(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == [
        "5.1.244.10.in-addr.arpa. PTR x.a.prod.svc.cluster.local.",
        "5.1.244.10.in-addr.arpa. PTR y.b.prod.svc.cluster.local.",
    ]
    store.delete("Service", ("prod", "a"))
    assert records(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == [
        "5.1.244.10.in-addr.arpa. PTR y.b.prod.svc.cluster.local."
    ]


def test_address_behind_a_headless_and_a_cluster_ip_service_has_both_ptrs_as_they_change() -> None:
    store = store_of(
        headless("prod", "db"),
        service("prod", "web", ["10.96.0.5"]),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5", hostname="db-0")]),
        endpoint_slice("prod", "web-a", "web", [endpoint("10.244.1.5")]),
    )
    both = [
        "5.1.244.10.in-addr.arpa. PTR 10-244-1-5.web.prod.svc.cluster.local.",
        "5.1.244.10.in-addr.arpa. PTR db-0.db.prod.svc.cluster.local.",
    ]
    assert records(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == both
    upsert(store, endpoint_slice("prod", "web-a", "web", [endpoint("10.244.1.5", ready=False)]))
    assert records(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == both[1:]
    assert rcode(ask(store, "10-244-1-5.web.prod.svc.cluster.local")) == "NXDOMAIN"
    upsert(store, endpoint_slice("prod", "web-a", "web", [endpoint("10.244.1.5")]))
    assert records(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == both
    store.delete("Service", ("prod", "db"))
    assert records(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == both[:1]


def test_cluster_ip_service_endpoint_names_follow_their_slices() -> None:
    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        endpoint_slice("prod", "web-a", "web", [endpoint("10.244.1.5")]),
    )
    assert records(ask(store, "10-244-1-5.web.prod.svc.cluster.local")) != []
    upsert(store, endpoint_slice("prod", "web-a", "web", [endpoint("10.244.1.6")]))
    assert rcode(ask(store, "10-244-1-5.web.prod.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == "REFUSED"  # not ours: forwarded when serving
    assert records(ask(store, "6.1.244.10.in-addr.arpa", "PTR")) == [
        "6.1.244.10.in-addr.arpa. PTR 10-244-1-6.web.prod.svc.cluster.local."
    ]
    store.delete("Service", ("prod", "web"))
    assert rcode(ask(store, "10-244-1-6.web.prod.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "6.1.244.10.in-addr.arpa", "PTR")) == "REFUSED"


def test_service_changing_type_replaces_its_records() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5"]))
    upsert(store, service("prod", "web", type_="ExternalName", external_name="example.com"))
    assert records(ask(store, "web.prod.svc.cluster.local")) == ["web.prod.svc.cluster.local. CNAME example.com."]
    assert rcode(ask(store, "_http._tcp.web.prod.svc.cluster.local", "SRV")) == "NXDOMAIN"
    upsert(store, service("prod", "web", ["10.96.0.6"]))
    assert records(ask(store, "web.prod.svc.cluster.local")) == ["web.prod.svc.cluster.local. A 10.96.0.6"]


def test_namespace_exists_while_its_object_or_any_service_does() -> None:
    store = store_of(namespace("prod"), service("prod", "web"))
    store.delete("Namespace", ("", "prod"))
    assert rcode(ask(store, "prod.svc.cluster.local")) == "NOERROR"
    store.delete("Service", ("prod", "web"))
    assert rcode(ask(store, "prod.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "10-1-2-3.prod.pod.cluster.local")) == "NXDOMAIN"


def test_removing_everything_leaves_the_zone_as_new() -> None:
    objects = [
        namespace("prod"),
        service("prod", "web", ["10.96.0.5", "fd00::5"]),
        endpoint_slice("prod", "web-a", "web", [endpoint("10.244.2.5"), endpoint("10.244.2.6", hostname="w")]),
        headless("prod", "db"),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5", hostname="db-0"), endpoint("10.244.1.6")]),
        endpoint_slice("prod", "db-b", "db", [endpoint("fd00::9")], family="IPv6"),
        service("prod", "pay", type_="ExternalName", external_name="example.com"),
    ]
    empty = store_of()
    store = store_of(*objects)
    for obj in reversed(objects):
        key = ("", obj["metadata"]["name"]) if obj["kind"] == "Namespace" else ("prod", obj["metadata"]["name"])
        store.delete(obj["kind"], key)
    assert render(store.zone) == render(empty.zone)
    assert len(store.zone._nodes) == len(empty.zone._nodes)
    assert len(store.zone.prepared) == len(empty.zone.prepared)
    assert store.zone._on_demand_children == {}


def test_incremental_changes_end_where_a_fresh_build_does() -> None:
    final = [
        service("prod", "web", ["10.96.0.7"]),
        endpoint_slice("prod", "web-a", "web", [endpoint("10.244.2.5"), endpoint("10.244.2.7", hostname="w")]),
        headless("prod", "db"),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5", hostname="db-0"), endpoint("10.244.1.8")]),
    ]
    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        endpoint_slice("prod", "web-a", "web", [endpoint("10.244.2.5"), endpoint("10.244.2.6")]),
        headless("prod", "db"),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5", hostname="db-0")]),
        endpoint_slice("prod", "db-old", "db", [endpoint("10.244.1.9")]),
        service("prod", "gone", ["10.96.0.9"]),
    )
    store.delete("Service", ("prod", "gone"))
    store.delete("EndpointSlice", ("prod", "db-old"))
    for obj in final:
        upsert(store, obj)
    fresh = store_of(*final)
    assert render(store.zone) == render(fresh.zone)


def _big_headless(slices: int, per_slice: int, swap: int = -1) -> list[Obj]:
    """A headless Service with hostnamed endpoints in `slices` slices and a named port; with
    `swap`, that slice's first two endpoints have each other's address."""
    objects = [headless("prod", "db", ports=[{"name": "http", "port": 80, "protocol": "TCP"}])]
    for number in range(slices):
        addresses = [f"10.244.{number}.{j + 1}" for j in range(per_slice)]
        if number == swap:
            addresses[0], addresses[1] = addresses[1], addresses[0]
        endpoints = [endpoint(address, hostname=f"db-{number}-{j}") for j, address in enumerate(addresses)]
        objects.append(endpoint_slice("prod", f"db-{number}", "db", endpoints, ports=objects[0]["spec"]["ports"]))
    return objects


def test_an_event_on_one_slice_of_a_large_headless_service_gives_the_zone_that_slices_names_alone() -> None:
    """Issue 20: an event on a 3,000-endpoint headless Service re-indexed every name of it (4 to
    5 ms); each slice's endpoint and PTR names are now a contribution of their own
    (`records.headless_by_slice`): the zone is given the changed slice's names and the
    Service's own few, and answers as a store built fresh."""
    objects = _big_headless(10, 20)
    store = store_of(*objects)
    Sets = Mapping[bytes, Contribution]
    given: list[int] = []  # how many names each call gives the zone
    replace = store.zone.replace

    def counted(contributor: Hashable, record_sets: Sets, *, targets_moved: bool = False) -> None:
        given.append(len(record_sets))
        replace(contributor, record_sets, targets_moved=targets_moved)

    store.zone.replace = counted  # type: ignore[method-assign]
    changed = endpoint_slice(
        "prod", "db-3", "db", [endpoint(f"10.244.3.{j + 1}", ready=j != 5, hostname=f"db-3-{j}") for j in range(20)]
    )
    upsert(store, changed)
    assert sum(given) <= 2 * 20 + 3, given  # the slice's 19 names and their PTRs; the Service's name and SRV names
    objects[4] = changed
    assert render(store.zone) == render(store_of(*objects).zone)
    assert rcode(ask(store, "db-3-5.db.prod.svc.cluster.local")) == "NXDOMAIN"
    assert len(records(ask(store, "_http._tcp.db.prod.svc.cluster.local", "SRV", tcp=True))) == 199


def test_a_headless_services_srv_answer_follows_a_targets_address_when_its_own_records_stay() -> None:
    """The SRV answer carries its targets' addresses (the additional section), and the targets are
    the slices' names. Here an endpoint moves to the address its neighbour holds: the Service's
    own records (its addresses, each once; its SRV targets, in order) are unchanged, and its SRV
    answers are made again all the same (`Zone.replace(targets_moved=...)`)."""
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}]

    def objects(moved_to: str) -> list[Obj]:
        first = [endpoint("10.244.0.1", hostname="db-0"), endpoint(moved_to, hostname="db-1")]
        first.append(endpoint("10.244.0.2", hostname="db-2"))
        return [
            headless("prod", "db", ports=ports),
            endpoint_slice("prod", "db-a", "db", first, ports=ports),
            endpoint_slice("prod", "db-b", "db", [endpoint("10.244.0.3", hostname="db-3")], ports=ports),
        ]

    store = store_of(*objects("10.244.0.1"))
    question = "_http._tcp.db.prod.svc.cluster.local"
    assert "db-1.db.prod.svc.cluster.local. A 10.244.0.1" in records(ask(store, question, "SRV"), "additional")
    upsert(store, objects("10.244.0.2")[1])
    after = records(ask(store, question, "SRV"), "additional")
    assert "db-1.db.prod.svc.cluster.local. A 10.244.0.2" in after
    assert after == records(ask(store_of(*objects("10.244.0.2")), question, "SRV"), "additional")


def test_a_headless_service_keeps_its_names_as_its_slices_go_from_many_to_one_and_back() -> None:
    """Several slices are published a slice at a time, one slice as the Service's own: the
    names are the same either way, and none is left behind by the change between them."""
    objects = _big_headless(3, 2)
    store = store_of(*objects)
    store.delete("EndpointSlice", ("prod", "db-1"))
    store.delete("EndpointSlice", ("prod", "db-2"))
    assert render(store.zone) == render(store_of(*objects[:2]).zone)
    for obj in objects[2:]:
        upsert(store, obj)
    assert render(store.zone) == render(store_of(*objects).zone)
    store.delete("Service", ("prod", "db"))
    assert rcode(ask(store, "db-2-1.db.prod.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "2.2.244.10.in-addr.arpa", "PTR")) == "REFUSED"


def test_serial_moves_forward_even_for_changes_within_one_second() -> None:
    store = store_of()
    store.zone.bump_serial(1000)
    store.zone.bump_serial(1000)
    assert store.zone.serial == 1001
    store.zone.bump_serial(5000)
    assert store.zone.serial == 5000


def test_empty_non_terminal_stays_while_any_name_below_it_remains() -> None:
    store = store_of(service("prod", "a", ["10.96.0.5"]), service("prod", "b", ["10.96.1.6"]))
    store.delete("Service", ("prod", "a"))
    for name in ("96.10.in-addr.arpa", "1.96.10.in-addr.arpa"):
        reply = ask(store, name, "PTR")
        assert rcode(reply) == "NOERROR" and records(reply) == [], name
    assert rcode(ask(store, "0.96.10.in-addr.arpa", "PTR")) == "REFUSED"
    store.delete("Service", ("prod", "b"))
    assert rcode(ask(store, "96.10.in-addr.arpa", "PTR")) == "REFUSED"


def test_srv_protocol_label_stays_while_one_named_port_remains() -> None:
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "https", "port": 443, "protocol": "TCP"}]
    store = store_of(service("prod", "web", ["10.96.0.5"], ports))
    upsert(store, service("prod", "web", ["10.96.0.5"], ports[:1]))
    assert rcode(ask(store, "_tcp.web.prod.svc.cluster.local", "SRV")) == "NOERROR"
    assert rcode(ask(store, "_https._tcp.web.prod.svc.cluster.local", "SRV")) == "NXDOMAIN"
    upsert(store, service("prod", "web", ["10.96.0.5"], []))
    assert rcode(ask(store, "_tcp.web.prod.svc.cluster.local", "SRV")) == "NXDOMAIN"


def _random_cluster_change(rng: random.Random) -> tuple[str, Obj]:
    """One upsert from a small pool of names and addresses, so that services share addresses,
    slices move between services and kinds change: the cases where incremental updates go wrong."""
    name = rng.choice(["a", "b", "c"])
    if rng.random() < 0.4:
        kind = rng.choice(["cluster", "headless", "headless", "external", "pending"])
        obj = {
            "cluster": lambda: service("prod", name, [f"10.96.0.{rng.randrange(1, 4)}"]),
            "headless": lambda: headless("prod", name, publish_not_ready=rng.random() < 0.3),
            "external": lambda: service("prod", name, type_="ExternalName", external_name="example.com"),
            "pending": lambda: service("prod", name, []),
        }[kind]()
        return "Service", obj
    endpoints = [
        endpoint(
            f"10.96.0.{rng.randrange(1, 6)}",
            ready=rng.random() < 0.7,
            hostname=rng.choice([None, None, "x", "y"]),
        )
        for _ in range(rng.randrange(0, 4))
    ]
    return "EndpointSlice", endpoint_slice("prod", f"{name}-{rng.randrange(2)}", rng.choice(["a", "b", "c"]), endpoints)


def test_random_change_sequences_end_where_a_fresh_build_does() -> None:
    questions = [f"{i}.0.96.10.in-addr.arpa" for i in range(1, 6)] + [
        f"{label}.{svc}.prod.svc.cluster.local" for svc in "abc" for label in ("x", "y", "10-96-0-1", "10-96-0-4")
    ]
    for seed in range(60):
        rng = random.Random(seed)
        store = store_of()
        final: dict[tuple[str, str], Obj] = {}
        for _ in range(25):
            kind, obj = _random_cluster_change(rng)
            key = (kind, obj["metadata"]["name"])
            if key in final and rng.random() < 0.25:
                store.delete(kind, ("prod", key[1]))
                del final[key]
            else:
                upsert(store, obj)
                final[key] = obj
        fresh = store_of(*final.values())
        assert render(store.zone) == render(fresh.zone), seed
        for name in questions:
            for rdtype in ("A", "PTR", "ANY"):
                incremental, built = ask(store, name, rdtype), ask(fresh, name, rdtype)
                assert (rcode(incremental), records(incremental)) == (rcode(built), records(built)), (seed, name)


def test_a_store_replaying_anothers_journal_ends_with_the_same_zone_and_serial() -> None:
    """What `--workers` relies on: each worker replays the supervisor's journal on its own store."""
    for seed in range(20):
        rng = random.Random(seed)
        journal: list[Change] = []
        source = ClusterStore("cluster.local", 30, journal=journal.append)
        replica = ClusterStore("cluster.local", 30)
        for step in range(25):
            kind, obj = _random_cluster_change(rng)
            if rng.random() < 0.25:
                source.delete(kind, ("prod", obj["metadata"]["name"]))
            else:
                upsert(source, obj)
            source.bump_serial(1_000 + step // 3)
        for change in pickle.loads(pickle.dumps(journal)):  # as it crosses the pipe
            replica.replay(change)
        assert render(replica.zone) == render(source.zone), seed
        assert replica.zone.serial == source.zone.serial


def test_a_store_loaded_with_anothers_objects_ends_with_the_same_zone() -> None:
    """What a worker started again gets: every object the supervisor's store holds."""
    source = store_of(
        namespace("prod"),
        service("prod", "web", ["10.96.0.5"]),
        headless("prod", "db"),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.0.1", hostname="db-0")]),
    )
    upsert(
        source,
        {"kind": "Pod", "metadata": {"namespace": "prod", "name": "p"}, "status": {"podIPs": [{"ip": "10.244.0.9"}]}},
    )
    replica = ClusterStore("cluster.local", 30)
    replica.load(list(source.objects()))
    assert render(replica.zone) == render(source.zone)
    assert replica.counts() == source.counts()


def test_a_held_store_publishes_each_service_once_at_release_as_a_store_never_held() -> None:
    """A first sync (`hold`, then `release` once every watcher has listed): a Service listed before
    its slices is built once, at the end; the zone is the one applying them as they came makes."""
    objects = [
        service("prod", "web", ["10.96.0.5"]),
        headless("prod", "db"),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.0.1", hostname="db-0")]),
        endpoint_slice("prod", "db-b", "db", [endpoint("10.244.0.2")]),
    ]
    journal: list[Change] = []
    held = ClusterStore("cluster.local", 30, journal=journal.append)
    held.hold()
    for obj in objects:
        upsert(held, obj)
    assert rcode(ask(held, "web.prod.svc.cluster.local")) == "NXDOMAIN"  # held back
    held.release()
    assert records(ask(held, "db-0.db.prod.svc.cluster.local")) == ["db-0.db.prod.svc.cluster.local. A 10.244.0.1"]
    assert render(held.zone) == render(store_of(*objects).zone)
    upsert(held, service("prod", "late", ["10.96.0.9"]))  # after release: published at once
    assert rcode(ask(held, "late.prod.svc.cluster.local")) == "NOERROR"
    # A worker forked while the supervisor held replays the release with the rest.
    replica = ClusterStore("cluster.local", 30)
    replica.hold()
    for change in journal:
        replica.replay(change)
    assert render(replica.zone) == render(held.zone)
