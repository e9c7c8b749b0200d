"""The cluster as kdns knows it, and the single place that turns object changes into zone changes.

The store keeps the trimmed objects by key, joins EndpointSlices to their Service, and after each
change hands the zone the new records of exactly the objects it touched.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import itertools
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from kdns.core import records
from kdns.core.budgets import POD_INDEX_BYTES
from kdns.core.model import ClusterObject, EndpointSlice, IPAddress, Kind, Namespace, Pod, Service, ServiceType
from kdns.core.pods import PodIndex
from kdns.core.records import Omission
from kdns.core.zone import Zone

_APEX = ("apex",)


@contextlib.contextmanager
def bulk_change() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large change is applied, then freeze what it
    built.

    A full build allocates millions of small objects, and each allocation burst makes the
    collector rescan the ever larger heap: over a third of the build time at 10k Services. The
    zone's objects hold no reference cycles, so reference counting alone frees them; frozen, they
    are left out of every later collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.freeze()


class Upsert(NamedTuple):
    """A journaled change: `obj` added or replaced."""

    obj: ClusterObject


class Delete(NamedTuple):
    """A journaled change: the object of `kind` at `key` removed."""

    kind: Kind
    key: tuple[str, str]


class Serial(NamedTuple):
    """A journaled change: the zone's SOA serial set."""

    serial: int


class Release(NamedTuple):
    """A journaled change: what `ClusterStore.hold` kept back is published."""


# What a store's journal is told, in order: replayed with `ClusterStore.replay` on another store
# built alike (a worker process's), it makes the same zone. Small tuples: they are pickled to
# each worker for every change.
Change = Upsert | Delete | Serial | Release


POD_INDEX_FULL = (
    "the pod index holds --pod-index-bytes: this and later new Pods are not taken in (no verified "
    "pod name, no autopath) until some are deleted"
)


class PodMode(enum.Enum):
    """CoreDNS's `pods` option (spec 2.6.1 pod records)."""

    INSECURE = "insecure"  # any name that spells an address, in a namespace that exists
    VERIFIED = "verified"  # only an address a Pod in that namespace has
    DISABLED = "disabled"  # no pod records at all: NXDOMAIN


def _no_report(omission: Omission) -> None:
    return None


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How Services are published, beyond the spec: CoreDNS's `kubernetes` options."""

    endpoint_pod_names: bool = False  # endpoints without a hostname named after their Pod
    ignore_empty_service: bool = False  # a ClusterIP Service without ready endpoints: NXDOMAIN


AS_THE_SPEC = PublishOptions()  # the default: hostnames or dashed addresses, every Service published


class ClusterStore:
    """Namespaces, Services, EndpointSlices and Pods, applied to a `Zone` one change at a time."""

    def __init__(
        self,
        domain: str,
        ttl: int,
        pod_mode: PodMode = PodMode.INSECURE,
        dns_service: tuple[str, str] = ("kube-system", "kube-dns"),
        fallback_ns_addresses: Iterable[IPAddress] = (),
        report: Callable[[Omission], None] = _no_report,
        journal: Callable[[Change], None] | None = None,
        pod_budget: int = POD_INDEX_BYTES,
        publish: PublishOptions = AS_THE_SPEC,
    ) -> None:
        """`report` is told once of each part of an object left out of DNS (`Omission`);
        `journal`, of every change before it is applied (`--workers`: the supervisor's store
        feeds the workers' stores); `pod_budget` bounds the pod index, in bytes."""
        self.domain = domain.rstrip(".").lower()
        self.report = report
        self._journal = journal
        # What is left out of DNS now, by the contributor whose records it would be part of.
        self.omissions: dict[Hashable, tuple[Omission, ...]] = {}
        self.omissions_reported = 0  # every omission reported so far: a counter for metrics
        self.pod_mode = pod_mode
        self.publish = publish
        self.dns_service = dns_service
        self.fallback_ns_addresses = tuple(fallback_ns_addresses)
        policy = {
            PodMode.INSECURE: lambda namespace, address: True,
            PodMode.VERIFIED: self._pod_has_address,
            PodMode.DISABLED: None,
        }[pod_mode]
        self.zone = Zone(self.domain, ttl, policy)
        self.namespaces: dict[str, Namespace] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.slices: dict[tuple[str, str], EndpointSlice] = {}
        self.pods = PodIndex(pod_budget)  # only what `--pods verified` needs: which namespace has an address
        self._pod_index_full = False  # reported once each time it fills
        self._slices_by_service: dict[tuple[str, str], dict[str, EndpointSlice]] = {}
        self._parts: dict[tuple[str, str], tuple[Service, records.PartCache]] = {}
        self._objects_by_kind: dict[str, Mapping[tuple[str, str], ClusterObject]] = {
            Kind.SERVICE: self.services,
            Kind.ENDPOINT_SLICE: self.slices,
        }
        # What each slice of a headless Service published as its own contribution
        # (`records.headless_by_slice`), by Service and slice name: the very mappings of its parts,
        # so that a slice whose mapping is unchanged is not given to the zone again.
        self._slice_sets: dict[tuple[str, str], dict[str, records.RecordTuples]] = {}
        # While held (`hold`): the Services whose records wait to be published by `release`.
        self._held: set[tuple[str, str]] | None = None
        # A namespace exists while its Namespace object or any Service or Pod in it does: a
        # snapshot need not list Namespace objects for its pods to resolve.
        self._namespace_refs: Counter[str] = Counter()
        self._publish_apex()

    # -- changes ---------------------------------------------------------------------------

    def load(
        self, objects: Iterable[ClusterObject], on_error: Callable[[ClusterObject, Exception], None] | None = None
    ) -> None:
        """Apply many objects at once, slices before their Services so that each Service's
        records are built once rather than once per slice. With `on_error`, an object that
        cannot be applied is handed to it and the others are still applied."""
        order = {Namespace: 0, Pod: 1, EndpointSlice: 2, Service: 3}
        with bulk_change():
            for obj in sorted(objects, key=lambda obj: order[type(obj)]):
                if on_error is None:
                    self.upsert(obj)
                    continue
                try:
                    self.upsert(obj)
                except Exception as error:  # one object never stops the others
                    on_error(obj, error)

    def upsert(self, obj: ClusterObject) -> None:
        """Add or replace one object and republish what it feeds."""
        if self._journal is not None:
            self._journal(Upsert(obj))  # before: a replay fails (or not) exactly as this does
        if isinstance(obj, Service):
            if obj.key not in self.services:
                self._ref_namespace(obj.namespace, +1)
            self.services[obj.key] = obj
            self._publish_service(obj.key)
        elif isinstance(obj, EndpointSlice):
            old = self.slices.get(obj.key)
            if old is not None and old.service_key != obj.service_key:
                self._detach_slice(old)
            self.slices[obj.key] = obj
            self._slices_by_service.setdefault(obj.service_key, {})[obj.name] = obj
            self._publish_service(obj.service_key)
        elif isinstance(obj, Namespace):
            if obj.name not in self.namespaces:
                self._ref_namespace(obj.name, +1)
            self.namespaces[obj.name] = obj
        elif isinstance(obj, Pod):
            refused = self.pods.refused
            if self.pods.upsert(obj):  # O(addresses of the Pod), whatever the number of Pods
                self._ref_namespace(obj.namespace, +1)
                self._pod_index_full = False
            elif self.pods.refused != refused and not self._pod_index_full:
                self._pod_index_full = True
                self.report(Omission("Pod", f"{obj.namespace}/{obj.name}", "status.podIPs", POD_INDEX_FULL))
            if self.pod_mode is PodMode.VERIFIED:
                self.zone.touch()  # pod records are verified against them

    def delete(self, kind: Kind | str, key: tuple[str, str]) -> None:
        """Remove the object of `kind` at (namespace, name); a Namespace's key is ("", name)."""
        kind = Kind(kind)
        if self._journal is not None:
            self._journal(Delete(kind, key))
        if kind == Kind.SERVICE:
            if self.services.pop(key, None) is not None:
                self._ref_namespace(key[0], -1)
                self._publish_service(key)
        elif kind == Kind.ENDPOINT_SLICE:
            old = self.slices.pop(key, None)
            if old is not None:
                self._detach_slice(old)
        elif kind == Kind.NAMESPACE:
            if self.namespaces.pop(key[1], None) is not None:
                self._ref_namespace(key[1], -1)
        elif kind == Kind.POD and self.pods.delete(key):
            self._ref_namespace(key[0], -1)
            if self.pod_mode is PodMode.VERIFIED:
                self.zone.touch()

    def hold(self) -> None:
        """Publish no Service's records until `release`: for a first sync, where a Service listed
        before its EndpointSlices (the lists run side by side) would be built twice. Namespaces,
        the apex and Pods are applied as they come."""
        if self._held is None:
            self._held = set()

    def release(self) -> None:
        """Publish what `hold` kept back, each Service once (and journal it)."""
        held, self._held = self._held, None
        if self._journal is not None:
            self._journal(Release())
        if held:
            with bulk_change():
                for key in sorted(held):
                    self._publish_service(key)

    def bump_serial(self, now: int) -> None:
        """A change was applied at `now` (Unix seconds): move the SOA serial (`Zone.bump_serial`)."""
        self.zone.bump_serial(now)
        if self._journal is not None:
            self._journal(Serial(self.zone.serial))

    def replay(self, change: Change) -> None:
        """Apply a change another store journaled."""
        if isinstance(change, Upsert):
            self.upsert(change.obj)
        elif isinstance(change, Delete):
            self.delete(change.kind, change.key)
        elif isinstance(change, Release):
            self.release()
        else:
            self.zone.set_serial(change.serial)

    def snapshot(self) -> Iterator[ClusterObject]:
        """Every object held now, in the order `load` applies fastest (Namespaces, Pods, slices,
        then Services: each Service built once), from copies of the indexes made at the call
        (C-level copies: milliseconds at 10,000 Services and 100,000 Pods). The copies are
        walked as the iterator is, which may be on another thread while this store changes."""
        namespaces = list(self.namespaces.values())
        pods = self.pods.snapshot()
        slices = list(self.slices.values())
        services = list(self.services.values())
        return itertools.chain(namespaces, pods, slices, services)

    def as_replica(self) -> None:
        """This store now replays another's journal (a forked worker's copy of the supervisor's):
        it journals nothing and reports no omission; the store it follows does both, once."""
        self._journal = None
        self.report = _no_report

    def objects(self) -> Iterator[ClusterObject]:
        """Every object held: what `load` on an empty store makes this store again."""
        yield from self.namespaces.values()
        for key in self.pods.keys(None):
            pod = self.pods.get(key)
            if pod is not None:
                yield pod
        yield from self.services.values()
        yield from self.slices.values()

    def namespace_exists(self, name: str) -> bool:
        """Whether the namespace exists: its Namespace object, or any Service or Pod in it."""
        return name in self._namespace_refs

    def slices_of(self, service_key: tuple[str, str]) -> list[EndpointSlice]:
        """The EndpointSlices of a Service, by name."""
        slices = self._slices_by_service.get(service_key, {})
        return [slices[name] for name in sorted(slices)]

    def get(self, kind: Kind | str, key: tuple[str, str]) -> ClusterObject | None:
        """The object of `kind` at (namespace, name); a Namespace's key is ("", name)."""
        if kind == Kind.NAMESPACE:
            return self.namespaces.get(key[1])
        if kind == Kind.POD:
            return self.pods.get(key)
        return self._by_kind(kind).get(key)

    def keys(self, kind: Kind | str, namespace: str | None = None) -> list[tuple[str, str]]:
        """Keys of every object of `kind`, or of those in `namespace`."""
        if kind == Kind.NAMESPACE:
            return [("", name) for name in self.namespaces]
        if kind == Kind.POD:
            return list(self.pods.keys(namespace))
        return [key for key in self._by_kind(kind) if namespace is None or key[0] == namespace]

    def _by_kind(self, kind: Kind | str) -> Mapping[tuple[str, str], ClusterObject]:
        # Asked once per listed object (`Applier._apply` compares with what is held): with a
        # dict built and a `Kind(kind)` call each time, `get` took 1.4 µs; 0.4 µs now. A `Kind`
        # hashes as its API name, so either finds it.
        held = self._objects_by_kind.get(kind)
        if held is None:
            raise KeyError(Kind(kind))  # ValueError for a string that names no kind at all
        return held

    # -- publishing ------------------------------------------------------------------------

    def _detach_slice(self, old: EndpointSlice) -> None:
        siblings = self._slices_by_service.get(old.service_key, {})
        siblings.pop(old.name, None)
        if not siblings:
            self._slices_by_service.pop(old.service_key, None)
        self._publish_service(old.service_key)

    def _publish_service(self, key: tuple[str, str]) -> None:
        if self._held is not None:
            self._held.add(key)
            return
        service = self.services.get(key)
        contributor = ("svc", key)
        omitted: list[Omission] = []
        if service is None:
            self._parts.pop(key, None)
            self.zone.replace(contributor, {})
            self._publish_slices(key, {})
        else:
            ordered = self.slices_of(key)
            parts = self._parts_of(service, len(ordered))
            publish = self.publish
            split = None
            if parts is not None:
                split = records.headless_by_slice(
                    service, ordered, self.domain, omitted, parts, pod_names=publish.endpoint_pod_names
                )
            if split is not None:
                moved = self._publish_slices(key, split.own)  # its SRV records' targets are the slices' names
                self.zone.replace(contributor, split.service, targets_moved=moved)
            else:
                published = records.service_records(
                    service,
                    ordered,
                    self.domain,
                    omitted,
                    parts,
                    pod_names=publish.endpoint_pod_names,
                    ignore_empty=publish.ignore_empty_service,
                )
                self.zone.replace(contributor, published)
                self._publish_slices(key, {})
        self._note_omissions(contributor, omitted)
        if key == self.dns_service:
            self._publish_apex()

    def _publish_slices(self, key: tuple[str, str], own: dict[str, records.RecordTuples]) -> bool:
        """Make `own` the slices' own contributions for Service `key` (`records.SliceContributions`):
        a slice whose mapping is the one it published before is skipped, one no longer there is
        withdrawn. Whether any changed. O(the changed slices' names)."""
        before = self._slice_sets.pop(key, {})
        if own:
            self._slice_sets[key] = own
        changed = False
        for name, sets in own.items():
            if before.get(name) is not sets:
                self.zone.replace(("slice", key, name), sets)
                changed = True
        for name in before:
            if name not in own:
                self.zone.replace(("slice", key, name), {})
                changed = True
        return changed

    def _parts_of(self, service: Service, slices: int) -> records.PartCache | None:
        """The parts kept for a headless Service of several slices (`records.HeadlessPart`): an
        event then builds only the slice it changed. Kept only where they save work: they hold
        a reference to each slice's records, a few pointers per endpoint."""
        if service.type is not ServiceType.HEADLESS or slices < 2:
            self._parts.pop(service.key, None)
            return None
        held = self._parts.get(service.key)
        if held is None or held[0] is not service:  # a changed Service changes every part
            held = self._parts[service.key] = (service, {})
        return held[1]

    def _publish_apex(self) -> None:
        service = self.services.get(self.dns_service)
        addresses = service.cluster_ips if service is not None and service.cluster_ips else self.fallback_ns_addresses
        pods_enabled = self.pod_mode is not PodMode.DISABLED
        self.zone.replace(_APEX, records.apex_records(self.domain, addresses, pods_enabled))

    def _ref_namespace(self, namespace: str, delta: int) -> None:
        self._namespace_refs[namespace] += delta
        count = self._namespace_refs[namespace]
        contributor = ("ns", namespace)
        if count == 0:
            del self._namespace_refs[namespace]
            self.zone.replace(contributor, {})
            self._note_omissions(contributor, [])
        elif count == delta:  # it has just come to exist
            pods_enabled = self.pod_mode is not PodMode.DISABLED
            omitted: list[Omission] = []
            self.zone.replace(contributor, records.namespace_records(namespace, self.domain, pods_enabled, omitted))
            self._note_omissions(contributor, omitted)

    def _note_omissions(self, contributor: Hashable, omitted: list[Omission]) -> None:
        """Keep what a contributor leaves out, and report each omission once (not again on every
        republish of the same object)."""
        before = self.omissions.pop(contributor, ())
        if not omitted:
            return
        self.omissions[contributor] = tuple(omitted)
        for omission in omitted:
            if omission not in before:
                self.omissions_reported += 1
                self.report(omission)

    def _pod_has_address(self, namespace: str, address: IPAddress) -> bool:
        return self.pods.has(namespace, address)

    # -- summaries -------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        endpoints = sum(len(s.endpoints) for s in self.slices.values())
        return {
            "namespaces": len(self._namespace_refs),
            "services": len(self.services),
            "endpointslices": len(self.slices),
            "endpoints": endpoints,
            "pods": len(self.pods),
        }
