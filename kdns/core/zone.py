"""The zone index: every owner name with its records, and (name, type) -> an answer, made on first use.

Every object of the cluster contributes a set of owner names with their records (see
`kdns.core.records`). `Zone.replace(contributor, record_sets)` swaps one contributor's records
and re-indexes the names that changed (which exist, with which types), dropping their answers.
An answer is encoded when a question first asks for it and kept in `prepared` until its name
changes, so that every later query is a dictionary lookup: a sync indexes names and encodes
nothing (at 10,000 Services encoding every answer was a third of the publishing, and the answers
most of a zone's memory that no one ever asks for). A contributor may instead give some names'
records on demand (`OnDemandRecords`): those names exist in the index, and their answers are made
each time they are asked.

Before worker processes are forked, `share` puts every answer into one `AnswerTable`, which a
worker reads before the index (until a name changes) without copying the pages it shares.

The zone is a plain synchronous object: in the trio program a change is applied between two
awaits, so readers see the zone before or after a change, never in between.

An answer holds everything after the question section, ready to send: the records with the owner
name compressed to a pointer at the question (offset 12), so it is valid whatever case the
client spelled the name in.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from itertools import accumulate
from operator import attrgetter

from kdns.core import rdata
from kdns.core.answer import Answer
from kdns.core.answer_table import AnswerTable, SharedAnswer
from kdns.core.message import HEADER_LENGTH, NOERROR, NXDOMAIN
from kdns.core.model import IPAddress
from kdns.core.names import REVERSE_ZONES, at_label_boundary, from_wire, parse_pod_label, to_wire
from kdns.core.rdata import Record, encode_rr

QUESTION_POINTER = b"\xc0\x0c"  # the question's name always starts right after the header
# The largest record data a message can carry over TCP (65535) less the header, the longest
# question and an OPT record. An answer set beyond it is cut to what fits.
MAX_RECORDS_LENGTH = 65535 - 12 - (255 + 4) - 11
LARGE_SET = 1000  # records in an answer set beyond which its encodings are kept between rebuilds

PodPolicy = Callable[[str, IPAddress], bool]


class OnDemandRecords:
    """Records a contributor gives when a query asks for them rather than up front.

    Mapped to a name in a contribution, it stands for that name's records. Names directly below
    `parent` that are in no contribution are asked of it too: a contributor may hold such names
    (an endpoint's below its Service) without listing them. They must be names under `parent`
    that no other contributor can have.
    """

    __slots__ = ()
    parent: bytes

    def records_at(self, key: bytes) -> tuple[Record, ...]:
        """The records at `key` (empty when it holds none)."""
        raise NotImplementedError

    def children(self) -> list[bytes]:
        """Every name directly below `parent` it answers for (for dumps)."""
        raise NotImplementedError


Contribution = tuple[Record, ...] | OnDemandRecords

_NOBODY: Hashable = object()  # the contributor of a name nobody contributes records to


class _Node:
    """One owner name: who contributes records to it, and how many names below it exist.

    Nearly every name has one contributor, held inline; a dict for further contributors exists
    only for the rare shared name (an address in two Services gives its PTR name two). A dict per
    name would cost about 200 bytes each: tens of megabytes in a large cluster.
    """

    __slots__ = ("below", "contributor", "others", "records", "types")

    def __init__(self, contributor: Hashable = _NOBODY, records: Contribution = ()) -> None:
        self.contributor = contributor
        self.records = records
        self.others: dict[Hashable, Contribution] | None = None
        self.below = 0  # names below this one that exist: while non-zero, this one exists too
        self.types: tuple[int, ...] = ()  # types with a prepared answer in the positive index

    def get(self, contributor: Hashable) -> Contribution | None:
        if self.contributor == contributor:
            return self.records
        return self.others.get(contributor) if self.others else None

    def set(self, contributor: Hashable, records: Contribution) -> None:
        if self.contributor is _NOBODY or self.contributor == contributor:
            self.contributor, self.records = contributor, records
        else:
            if self.others is None:
                self.others = {}
            self.others[contributor] = records

    def remove(self, contributor: Hashable) -> None:
        if self.contributor == contributor:
            if self.others:
                self.contributor, self.records = self.others.popitem()
                self.others = self.others or None
            else:
                self.contributor, self.records = _NOBODY, ()
        elif self.others:
            self.others.pop(contributor, None)
            self.others = self.others or None

    def contributed(self) -> bool:
        return self.contributor is not _NOBODY

    def record_sets(self) -> list[Contribution]:
        """Each contributor's records, in an order that does not depend on history."""
        if self.others is None:
            return [self.records] if self.contributed() else []
        every = {self.contributor: self.records, **self.others}
        return [every[key] for key in sorted(every, key=repr)]

    def on_demand(self) -> bool:
        """Whether some contributor gives this name's records only when asked."""
        if isinstance(self.records, OnDemandRecords):
            return True
        return self.others is not None and any(isinstance(item, OnDemandRecords) for item in self.others.values())


class Zone:
    """The authoritative data for the cluster domain and the reverse zones."""

    def __init__(self, domain: str, ttl: int, pod_policy: PodPolicy | None) -> None:
        self.domain = domain.rstrip(".").lower()
        self.ttl = ttl
        self.pod_policy = pod_policy
        self.apexes = tuple(to_wire(apex) for apex in (self.domain, *REVERSE_ZONES))
        self._domain_key = self.apexes[0]
        self._pod_suffix = to_wire(f"pod.{self.domain}")
        # (lowercased wire name, type) -> answer, for each name and type with records that has
        # been asked (`answer` makes it on first use; a change to the name drops it): at most one
        # per (name, type) the index holds. The cluster zone stage reads it directly; everything
        # else about a name goes through `answer`.
        self.prepared: dict[tuple[bytes, int], Answer] = {}
        self._cname: dict[bytes, Answer] = {}
        self._nodes: dict[bytes, _Node] = {}
        self._contributors: dict[Hashable, tuple[bytes, ...]] = {}
        # Each contributor's names with SRV or NS records: answers carrying their targets'
        # addresses, rebuilt when another name of the contribution changes. Kept rather than
        # found by scanning every name (a 3,000-endpoint Service has 6,000 of them) on each change.
        self._target_owners: dict[Hashable, tuple[bytes, ...]] = {}
        # parent name -> who answers the names below it on demand; contributor -> that parent
        self._on_demand_children: dict[bytes, OnDemandRecords] = {}
        self._children_parent: dict[Hashable, bytes] = {}
        # NXDOMAIN and NODATA answers by (rcode, apex, where the apex starts in the message): at
        # most 2 x 3 x 256, made on first use and dropped when the serial moves.
        self._negatives: dict[tuple[int, bytes, int], Answer] = {}
        self._soa_times = b""  # the SOA's five 32-bit fields, from the serial on
        self._soa_answer: Answer | None = None
        self._reverse_soas: dict[bytes, Answer] = {}  # by apex: at most one each of REVERSE_ZONES
        self._addresses_memo: dict[bytes, list[bytes]] | None = None  # set only inside `replace`
        # The encoded records of each answer set of over LARGE_SET records, by (name, type): an
        # event on a Service of thousands of endpoints changes a few of them, and encoding the
        # others again cost most of its rebuild. About 70 bytes a record, for those sets only.
        self._large: dict[tuple[bytes, int], dict[Record, bytes]] = {}
        # Moves on with every change to what the zone answers: whoever keeps replies made from
        # it (the pipeline's reply cache) drops them when it differs from what they were made at.
        self.generation = 0
        self.serial = 0
        self.set_serial(1)
        # Every answer of the index as it was when `share` was called (before worker processes
        # are forked), and the names changed since, whose answers it no longer holds: at most
        # half as many as the table's entries, past which the table is dropped.
        self._shared: AnswerTable | None = None
        self._unshared: set[bytes] = set()

    # -- reading ---------------------------------------------------------------------------

    def answer(self, key: bytes, qtype: int) -> Answer | None:
        """The answer for a lowercased wire name, or None when the name is not ours to answer."""
        found = self.prepared.get((key, qtype))
        if found is not None:
            return found
        return self._answer_slow(key, qtype)

    def _answer_slow(self, key: bytes, qtype: int) -> Answer | None:
        shared = self._shared
        if shared is not None and key not in self._unshared:  # read before the index: see `share`
            found = shared.get(key, qtype)
            if found is not None:
                return found
        cname = self._cname.get(key)
        if cname is not None:
            return cname  # RFC 1034 3.6.2: a CNAME answers every type
        node = self._nodes.get(key)
        if node is not None and qtype in node.types:  # first asked since the name last changed
            return self._made(key, node, qtype)
        apex = self._apex_of(key)
        if apex is None:
            return None
        if qtype == rdata.SOA and key == apex:
            return self._soa_answer if apex == self._domain_key else self._reverse_soa(apex)
        if node is not None:
            if qtype == rdata.ANY or node.on_demand():
                return self._answer_from(key, _merged(key, node), qtype, apex)
            return self._negative(NOERROR, key, apex)
        on_demand = self._on_demand_children.get(key[key[0] + 1 :])
        if on_demand is not None:
            records = on_demand.records_at(key)
            if records:
                return self._answer_from(key, records, qtype, apex)
        if apex == self._domain_key:
            pod = self._pod_answer(key, qtype)
            return pod if pod is not None else self._negative(NXDOMAIN, key, apex)
        # A reverse name we hold nothing for: CoreDNS's kubeadm Corefile falls through to the
        # forwarder (`fallthrough in-addr.arpa ip6.arpa`); without that, `missing_reverse`.
        return None

    def _made(self, key: bytes, node: _Node, qtype: int) -> Answer:
        """The answer of type `qtype` at a name that holds records of it, made now and kept in
        `prepared` until the name changes (the first question for it since)."""
        answer = self.prepared[(key, qtype)] = self._make(key, node, qtype)
        return answer

    def _make(self, key: bytes, node: _Node, qtype: int) -> Answer:
        records = node.records
        if node.others is not None or isinstance(records, OnDemandRecords):
            of_type: Sequence[Record] = [record for record in _merged(key, node) if record.rtype == qtype]
        elif node.types == (qtype,):
            of_type = records  # the usual name: one contributor, one type
        else:  # one contributor, several types (a Service's name: A, and SRV for every port)
            of_type = [record for record in records if record.rtype == qtype]
        return self._prepare(key, of_type)

    def keeps(self, key: bytes, qtype: int, answer: Answer) -> bool:
        """Whether `answer`, given by `answer(key, qtype)`, is one the zone holds until the name
        changes (so a reply made from it may be kept), rather than one made for this question
        alone (a pod's, or records given on demand)."""
        return answer.__class__ is SharedAnswer or self.answer(key, qtype) is answer

    def share(self) -> int:
        """Make every answer the index holds now and put them in one `AnswerTable`, read before
        the index from then on, until each name changes; returns the table's bytes.

        Called before worker processes are forked: a worker reading the index writes reference
        counts all over the pages it shares with the others, and copies them, where reading the
        table writes none. Names given on demand and ExternalNames' CNAMEs stay out of it (they
        are made when asked)."""
        nodes = self._nodes.items()
        entries = ((key, qtype, self._make(key, node, qtype)) for key, node in nodes for qtype in node.types)
        self._shared = AnswerTable(entries)
        self._unshared = set()
        self.prepared.clear()  # in place: the cluster zone stage reads this very dictionary
        return self._shared.nbytes

    def shared_entries(self) -> int:
        """Answers the shared table holds (0 without one)."""
        return len(self._shared) if self._shared is not None else 0

    def missing_reverse(self, key: bytes) -> Answer | None:
        """NXDOMAIN for a name of a reverse zone the zone holds nothing of, with that zone's SOA
        (CoreDNS's kubernetes plugin without `fallthrough` for the zone: `errNoItems`); None for
        a name outside the reverse zones."""
        apex = self._apex_of(key)
        if apex is None or apex == self._domain_key:
            return None
        return self._negative(NXDOMAIN, key, apex)

    def _reverse_soa(self, apex: bytes) -> Answer:
        """The SOA of a reverse zone, asked at its apex (CoreDNS's `plugin.SOA` for that zone):
        made on first use, dropped when the serial moves."""
        found = self._reverse_soas.get(apex)
        if found is None:
            record = self.soa(from_wire(apex))
            found = self._reverse_soas[apex] = Answer(NOERROR, 1, 0, 0, encode_rr(QUESTION_POINTER, record, self.ttl))
        return found

    def name_count(self) -> int:
        """Names held in the index (names given on demand below a parent not counted)."""
        return len(self._nodes)

    def cname_target(self, key: bytes) -> bytes | None:
        """The wire-form target of the CNAME at `key` (an ExternalName service), if there is one."""
        if key not in self._cname:
            return None
        return next(record.rdata for record in _merged(key, self._nodes[key]) if record.rtype == rdata.CNAME)

    def in_zones(self, key: bytes) -> bool:
        """Whether a name lies in the cluster domain or a reverse zone."""
        return self._apex_of(key) is not None

    def _apex_of(self, key: bytes) -> bytes | None:
        for apex in self.apexes:
            if key.endswith(apex) and at_label_boundary(key, len(key) - len(apex)):
                return apex
        return None

    def _pod_answer(self, key: bytes, qtype: int) -> Answer | None:
        """`<a-b-c-d>.<ns>.pod.<zone>` (spec 2.6.1), answered from the name alone or verified."""
        if self.pod_policy is None or not key.endswith(self._pod_suffix):
            return None
        first = key[0]
        namespace_key = key[first + 1 :]
        if len(namespace_key) - namespace_key[0] - 1 != len(self._pod_suffix):
            return None  # not exactly one label above `<ns>.pod.<zone>`
        if namespace_key not in self._nodes:  # CoreDNS: only in a namespace that exists
            return None
        label = key[1 : first + 1].decode("ascii", "replace")
        namespace = namespace_key[1 : namespace_key[0] + 1].decode("ascii", "replace")
        address = parse_pod_label(label)
        if address is None or not self.pod_policy(namespace, address):
            return None
        records = [rdata.address(address)]
        if qtype == rdata.ANY or records[0].rtype == qtype:
            return self._prepare(key, records)
        return self._negative(NOERROR, key, self._domain_key)

    def _answer_from(self, key: bytes, records: Sequence[Record], qtype: int, apex: bytes) -> Answer:
        """An answer made at query time: for ANY, or from records given on demand."""
        if qtype == rdata.ANY and records:
            # RFC 8482 4.1: one RRset rather than every record at the name, so that ANY is no
            # better an amplifier than any other query (the first type held, for a stable answer).
            qtype = records[0].rtype
        records = [record for record in records if record.rtype == qtype]
        return self._prepare(key, records) if records else self._negative(NOERROR, key, apex)

    def _negative(self, rcode: int, key: bytes, apex: bytes) -> Answer:
        """NXDOMAIN or NODATA (NOERROR, no answer) for `key` below `apex`: the apex's SOA in the
        authority section (RFC 2308 3), compressed against the question (RFC 1035 4.1.4).

        The apex is the tail of the question's name, so every name in the SOA that ends with it
        points into the question: 121 bytes for a typical NXDOMAIN with EDNS instead of 149 (as
        Unbound compresses it). Such an answer depends only on where the apex starts, so one
        serves every name of the same length."""
        offset = HEADER_LENGTH + len(key) - len(apex)
        memo = (rcode, apex, offset)
        found = self._negatives.get(memo)
        if found is None:
            pointer = struct.pack("!H", 0xC000 | offset)
            apex_text = self.domain if apex == self._domain_key else from_wire(apex)
            names = b"".join(_compressed(to_wire(name), apex, pointer) for name in _soa_names(apex_text))
            rdata_bytes = names + self._soa_times
            record = pointer + struct.pack("!HHIH", rdata.SOA, rdata.CLASS_IN, self.ttl, len(rdata_bytes))
            found = self._negatives[memo] = Answer(rcode, 0, 1, 0, record + rdata_bytes)
        return found

    # -- writing ---------------------------------------------------------------------------

    def replace(
        self, contributor: Hashable, record_sets: Mapping[bytes, Contribution], *, targets_moved: bool = False
    ) -> None:
        """Make `record_sets` (owner names in lowercased wire form) the whole contribution of
        `contributor`; empty withdraws it. `targets_moved`: names its SRV and NS records point at
        were changed by other contributors (a headless Service's endpoint names are its slices':
        `records.headless_by_slice`), so its answers that carry their addresses are made again
        even where its own records are unchanged."""
        self.generation += 1
        new = record_sets
        old_keys = self._contributors.pop(contributor, ())
        old_target_owners = self._target_owners.pop(contributor, ())
        self._replace_children(contributor, new)
        changed: dict[bytes, None] = {}  # an ordered set: membership is tested below
        for key in old_keys:
            if key not in new:
                self._nodes[key].remove(contributor)
                changed[key] = None
        any_change = bool(changed)
        for key, records in new.items():
            node = self._nodes.get(key)
            if node is None:
                node = self._nodes[key] = _Node(contributor, records)
                self._link(key)
                any_change = True
                if isinstance(records, OnDemandRecords):
                    continue  # answered when asked
                if len(records) == 1 and records[0].rtype not in _NEEDS_REBUILD:
                    # The common new name (an endpoint's address, a PTR): indexed right here.
                    rtype = records[0].rtype
                    node.types = _TYPE_TUPLES.setdefault((rtype,), (rtype,))
                else:
                    changed[key] = None
                continue
            if node.get(contributor) == records:
                continue
            existed = _exists(node)
            node.set(contributor, records)
            if not existed:
                self._link(key)
            changed[key] = None
            any_change = True
        if new:
            self._contributors[contributor] = tuple(new)
        # SRV and NS answers carry their targets' addresses: rebuild them when any name of the
        # same contribution changed (targets always belong to the contributor of the SRV). A
        # name whose records did not change keeps having targets or not; a changed one is
        # rebuilt anyway. (A new contribution has none: its SRV and NS names are all changed.)
        dependants = [key for key in old_target_owners if key in new and key not in changed]
        target_owners = dependants + [key for key in changed if key in new and _has_targets(new[key])]
        if target_owners:
            self._target_owners[contributor] = tuple(target_owners)
        if not (any_change or (targets_moved and dependants)):
            return
        self._addresses_memo = {}
        try:
            for key in changed:
                self._rebuild(key)
            for key in dependants:
                self._rebuild(key)
        finally:
            self._addresses_memo = None

    def _replace_children(self, contributor: Hashable, new: Mapping[bytes, Contribution]) -> None:
        """Note who answers the names below a parent on demand, for this contribution."""
        parent = self._children_parent.pop(contributor, None)
        if parent is not None:
            del self._on_demand_children[parent]
        for records in new.values():
            if isinstance(records, OnDemandRecords):
                self._on_demand_children[records.parent] = records
                self._children_parent[contributor] = records.parent
                return

    def soa(self, apex: str | None = None) -> Record:
        """CoreDNS's SOA of the cluster domain (or of the reverse zone `apex`): `ns.dns.<zone>.
        hostmaster.<zone>.`, negative TTL equal to the TTL."""
        mname, rname = _soa_names(self.domain if apex is None else apex)
        return rdata.SOAFields(mname=mname, rname=rname, serial=self.serial, minimum=self.ttl).record()

    def set_serial(self, serial: int) -> None:
        """Set the SOA serial and rebuild the answers that carry the SOA."""
        self.generation += 1
        self.serial = serial & 0xFFFFFFFF
        soa = self.soa()
        # Negative answers carry the SOA with its TTL equal to its minimum, the zone's TTL (RFC
        # 2308 3: the negative TTL is the lesser of the two): made again on first use.
        self._negatives.clear()
        self._reverse_soas.clear()
        self._soa_times = soa.rdata[-20:]
        answer = encode_rr(QUESTION_POINTER, soa, self.ttl)
        self._soa_answer = Answer(NOERROR, 1, 0, 0, answer)

    def names(self) -> Iterable[tuple[str, int, Sequence[Record]]]:
        """Every (owner, type, records) held, for `kdns dump`; not for the query path."""
        held: list[tuple[bytes, Sequence[Record]]] = [(key, _merged(key, node)) for key, node in self._nodes.items()]
        for on_demand in self._on_demand_children.values():
            held += [(key, on_demand.records_at(key)) for key in on_demand.children()]
        for key, records in held:
            by_type: dict[int, list[Record]] = {}
            for record in records:
                by_type.setdefault(record.rtype, []).append(record)
            for rtype, group in by_type.items():
                yield from_wire(key), rtype, group

    def _link(self, key: bytes) -> None:
        """`key` has come to exist: count it in its parent, which then exists too."""
        while key not in self.apexes:
            parent = key[key[0] + 1 :]
            if parent == b"\x00":
                return  # above every zone we serve: nothing to count
            node = self._nodes.get(parent)
            if node is None:
                node = self._nodes[parent] = _Node()
            existed = _exists(node)
            node.below += 1
            if existed:
                return
            key = parent

    def _unlink(self, key: bytes) -> None:
        """`key` no longer exists: forget it, and its parent if that was all that held it."""
        while True:
            self._drop_answers(key, self._nodes.pop(key))
            if key in self.apexes:
                return
            key = key[key[0] + 1 :]
            node = self._nodes.get(key)
            if node is None:
                return
            node.below -= 1
            if _exists(node):
                return

    def _drop_answers(self, key: bytes, node: _Node) -> None:
        if self._shared is not None:
            self._unshared.add(key)  # the table's answers for it are stale from now
            if len(self._unshared) > len(self._shared) // 2:  # mostly stale: not worth its lookups
                self._shared, self._unshared = None, set()
        prepared = self.prepared
        for rtype in node.types:
            prepared.pop((key, rtype), None)  # made only if it was asked
        node.types = ()
        self._cname.pop(key, None)

    def touch(self) -> None:
        """Something the zone's answers depend on changed outside it (the Pods that verify pod
        records): replies made before are stale."""
        self.generation += 1

    def bump_serial(self, now: int) -> None:
        """A change was applied: move the serial to `now` (Unix seconds, as CoreDNS), or one past
        the current serial when changes come faster than once a second."""
        self.set_serial(max(self.serial + 1, now))

    def _rebuild(self, key: bytes) -> None:
        node = self._nodes.get(key)
        if node is None:
            return  # withdrawn earlier in the same change, answers and all
        types = node.types
        self._drop_answers(key, node)
        if not _exists(node):
            for rtype in types:
                self._large.pop((key, rtype), None)
            self._unlink(key)
            return
        if isinstance(node.records, OnDemandRecords) and node.others is None:
            return  # answered when asked
        records = _merged(key, node)
        types = tuple(dict.fromkeys(map(_RTYPE, records)))  # each answer made when first asked
        if rdata.CNAME in types:  # an ExternalName: few, and read for every type
            self._cname[key] = self._prepare(key, [record for record in records if record.rtype == rdata.CNAME])
            return
        node.types = _TYPE_TUPLES.setdefault(types, types)  # shared: few distinct combinations

    def _prepare(self, key: bytes, records: Sequence[Record]) -> Answer:
        """Encode an answer set, with its targets' addresses in the additional section."""
        ttl = self.ttl
        if len(records) == 1 and records[0].rtype not in (rdata.SRV, rdata.NS):  # most names
            single = encode_rr(QUESTION_POINTER, records[0], ttl)
            return Answer(NOERROR, 1, 0, 0, single)
        if len(records) > LARGE_SET:  # thousands of endpoints: encoded only as far as a message holds
            answer, total = [], 0
            before = self._large.get((key, records[0].rtype), {})
            encoded: dict[Record, bytes] = {}
            for record in records:
                item = before.get(record)
                if item is None:
                    item = encode_rr(QUESTION_POINTER, record, ttl)
                total += len(item)
                if total > MAX_RECORDS_LENGTH:
                    break
                encoded[record] = item
                answer.append(item)
            self._large[(key, records[0].rtype)] = encoded
        else:
            answer = [encode_rr(QUESTION_POINTER, record, ttl) for record in records]
        additional: list[bytes] = []
        if records[0].rtype in (rdata.SRV, rdata.NS):  # a set holds one type
            # Targets' addresses only when all of them fit beside the answer: none otherwise.
            # Stopping as soon as they cannot fit spares a large headless Service's SRV sets
            # (thousands of targets, never all sent) most of their rebuild on every event.
            room = MAX_RECORDS_LENGTH - sum(map(len, answer))
            seen: set[bytes] = set()
            for record in records:
                target = _target(record)
                if target in seen:
                    continue
                seen.add(target)
                found = self._addresses_of(target)
                room -= sum(map(len, found))
                if room < 0:
                    additional = []
                    break
                additional += found
        parts = answer + additional
        return Answer(NOERROR, len(answer), 0, len(additional), b"".join(parts), tuple(accumulate(map(len, parts))))

    def _addresses_of(self, target: bytes) -> list[bytes]:
        """The A and AAAA records at an SRV or NS target, encoded for the additional section.

        Within one `replace` they are encoded once per target: a Service's SRV names all point at
        the Service's own name, and walking its records again for each of thousands of ports
        made an edit of such a Service quadratic in its ports.
        """
        memo = self._addresses_memo
        if memo is not None:
            found = memo.get(target)
            if found is not None:
                return found
        node = self._nodes.get(target)
        encoded = (
            [
                encode_rr(target, record, self.ttl)
                for record in _merged(target, node)
                if record.rtype in (rdata.A, rdata.AAAA)
            ]
            if node is not None
            else []
        )
        if memo is not None:
            memo[target] = encoded
        return encoded


def _compressed(name: bytes, apex: bytes, pointer: bytes) -> bytes:
    """`name` (wire form) with its tail `apex`, if it ends with it, replaced by `pointer`."""
    if name.endswith(apex) and at_label_boundary(name, len(name) - len(apex)):
        return name[: len(name) - len(apex)] + pointer
    return name


def _exists(node: _Node) -> bool:
    return node.contributed() or node.below > 0


def _merged(key: bytes, node: _Node) -> list[Record]:
    """All records at a name, each once, across contributors (two Services' endpoints can share an
    address, giving two PTR records for it, as CoreDNS answers), those given on demand included."""
    sets = [
        records.records_at(key) if isinstance(records, OnDemandRecords) else records for records in node.record_sets()
    ]
    if len(sets) == 1:
        return list(sets[0])
    return list(dict.fromkeys(record for records in sets for record in records))


_TYPE_TUPLES: dict[tuple[int, ...], tuple[int, ...]] = {}
# Types whose answers need more than their own record: targets' addresses, or CNAME's own index.
_NEEDS_REBUILD = (rdata.SRV, rdata.NS, rdata.CNAME)


def _target(record: Record) -> bytes:
    """The name an SRV or NS record points at."""
    return rdata.srv_targets(record) if record.rtype == rdata.SRV else record.rdata


def _has_targets(records: Contribution) -> bool:
    """Whether a contribution at a name holds SRV or NS records."""
    # In C (a headless Service's name holds thousands of A records before its SRV records).
    return not isinstance(records, OnDemandRecords) and not _TARGET_TYPES.isdisjoint(map(_RTYPE, records))


_RTYPE = attrgetter("rtype")
_TARGET_TYPES = frozenset((rdata.SRV, rdata.NS))  # types whose records point at a name


def _soa_names(apex: str) -> tuple[str, str]:
    """The SOA's MNAME and RNAME of a zone: CoreDNS's `ns.dns.<zone>` and `hostmaster.<zone>`
    (plugin/backend_lookup.go `SOA`)."""
    return f"ns.dns.{apex}", f"hostmaster.{apex}"
