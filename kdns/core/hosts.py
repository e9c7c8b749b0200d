"""The hosts stage (CoreDNS's `hosts`): names and addresses from a hosts file and from entries
written in the Corefile, as k3s and RKE2 resolve node names (`hosts /etc/coredns/NodeHosts`).

It answers as CoreDNS's plugin/hosts does (hosts.go, hostsfile.go), rule for rule:
- a line is `ADDRESS NAME...`; what follows `#` is a comment; a line with fewer than two fields,
  or whose address does not parse (an IPv6 zone, `%eth0`, is dropped), is skipped; a name
  outside the plugin's zones is skipped; `*.example.com` answers any one label in its place;
- A and AAAA give every address of the name, the file's first, then the Corefile's entries';
  other types give no records (NODATA) at a name that has addresses;
- PTR gives every name an address was written with (unless `no_reverse`), for any reverse
  name, inside the zones or not; an address with none goes to the next stage;
- a name outside the zones goes to the next stage; a name inside them with no address goes to
  the next stage if `fallthrough` covers it, and is SERVFAIL otherwise (a hosts file has no
  SOA to deny it with);
- `fallthrough_unsupported`: types other than A, AAAA and PTR go to the next stage too.

Replies are made per query, never kept by the reply cache: the file changes under them
(`HostsSource.replace`), and these names are few and asked rarely. A table is built once per
version of the file: `Hosts.answers` holds the A and AAAA answer of every name, so a query is
a dictionary lookup and a header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kdns.core import rdata
from kdns.core.answer import Answer
from kdns.core.message import AA, QR, SERVFAIL
from kdns.core.names import InvalidName, at_label_boundary, reverse_wire, to_wire
from kdns.core.stage import Next, Outcome, ReplyOptions, Request, answered, status
from kdns.core.zone import QUESTION_POINTER

ROOT = b"\x00"
WILDCARD = b"\x01*"
# Bytes a table holds per address beyond the text it was read from (dict slots, lists, the answers
# and their records, the reverse names): about 800 measured with tracemalloc (its unit test);
# counted into `Hosts.size` with the text, for the `hosts` store's figures.
ENTRY_OVERHEAD = 1024


@dataclass(frozen=True, slots=True)
class HostsTable:
    """What one hosts text says: addresses by name (wire form, lowercased) and family, names by
    reverse name. Lists keep the order of the text, duplicates included (as CoreDNS)."""

    names: dict[bytes, tuple[list[bytes], list[bytes]]]  # name -> (IPv4 packed, IPv6 packed)
    wildcards: dict[bytes, tuple[list[bytes], list[bytes]]]  # `*.parent` -> the same
    pointers: dict[bytes, list[bytes]]  # reverse name -> names
    entries: int  # addresses taken in
    text_bytes: int

    @classmethod
    def empty(cls) -> HostsTable:
        return cls({}, {}, {}, 0, 0)


def parse_hosts(text: str, zones: Sequence[bytes], reverse: bool = True) -> HostsTable:
    """A hosts text as CoreDNS reads it (hostsfile.go `parse`): O(size of the text)."""
    names: dict[bytes, tuple[list[bytes], list[bytes]]] = {}
    wildcards: dict[bytes, tuple[list[bytes], list[bytes]]] = {}
    pointers: dict[bytes, list[bytes]] = {}
    entries = 0
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = ipaddress.ip_address(fields[0].split("%", 1)[0])
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # Go's To4(): a v4-mapped address is an IPv4 one
        family = 0 if address.version == 4 else 1
        for field in fields[1:]:
            try:
                name = to_wire(field)
            except (InvalidName, UnicodeError):
                continue
            if not any(in_zone(name, zone) for zone in zones):
                continue
            table = wildcards if name.startswith(WILDCARD) else names
            table.setdefault(name, ([], []))[family].append(address.packed)
            entries += 1
            if reverse and table is names:
                pointers.setdefault(reverse_wire(address), []).append(name)
    return HostsTable(names, wildcards, pointers, entries, len(text.encode()))


def in_zone(name: bytes, zone: bytes) -> bool:
    """Whether wire name `name` is `zone` or under it (both lowercased)."""
    if zone == ROOT:
        return True
    return name.endswith(zone) and at_label_boundary(name, len(name) - len(zone))


@dataclass(frozen=True, slots=True)
class HostsOptions:
    """A `hosts` directive's settings, with names in wire form."""

    zones: tuple[bytes, ...]  # the names it answers for (the server block's zones by default)
    ttl: int = 3600  # CoreDNS's default
    fallthrough: tuple[bytes, ...] | None = None  # None: never; (ROOT,): every name
    fallthrough_unsupported: bool = False


class Hosts:
    """The file's table and the Corefile's entries' together, answered as `options` say."""

    __slots__ = ("answers", "entries", "options", "pointers", "size", "tables")

    def __init__(self, options: HostsOptions, file: HostsTable, inline: HostsTable) -> None:
        self.options = options
        self.tables = (file, inline)
        self.entries = file.entries + inline.entries
        self.size = file.text_bytes + inline.text_bytes + ENTRY_OVERHEAD * self.entries
        self.pointers: dict[bytes, list[bytes]] = {}
        for table in self.tables:
            for key, found in table.pointers.items():
                self.pointers.setdefault(key, []).extend(found)
        self.answers: dict[bytes, tuple[Answer, Answer]] = {}  # exact names: (A, AAAA)
        for name in {name for table in self.tables for name in table.names}:
            self.answers[name] = self._answers(table.names.get(name) for table in self.tables)

    def _answers(self, found: Iterable[tuple[list[bytes], list[bytes]] | None]) -> tuple[Answer, Answer]:
        v4: list[bytes] = []
        v6: list[bytes] = []
        for each in found:
            if each is not None:
                v4 += each[0]
                v6 += each[1]
        return self._records(rdata.A, v4), self._records(rdata.AAAA, v6)

    def _records(self, rtype: int, rdatas: Sequence[bytes]) -> Answer:
        records = [rdata.encode_rr(QUESTION_POINTER, rdata.Record(rtype, data), self.options.ttl) for data in rdatas]
        ends = _ends(records) if len(records) > 1 else None
        return Answer(0, len(records), 0, 0, b"".join(records), ends, QR | AA)

    def addresses(self, key: bytes) -> tuple[Answer, Answer] | None:
        """The (A, AAAA) answers of `key`, by its exact name or else a wildcard; None: no address."""
        exact = self.answers.get(key)
        if exact is not None:
            return exact
        if key == ROOT:
            return None
        pattern = WILDCARD + key[1 + key[0] :]  # the first label replaced by `*`
        found = [table.wildcards.get(pattern) for table in self.tables]
        if all(each is None for each in found):
            return None
        return self._answers(found)

    def pointer_answer(self, key: bytes) -> Answer | None:
        names = self.pointers.get(key)
        if not names:
            return None
        return self._records(rdata.PTR, names)

    def in_zones(self, key: bytes) -> bool:
        return any(in_zone(key, zone) for zone in self.options.zones)

    def falls_through(self, key: bytes) -> bool:
        zones = self.options.fallthrough
        return zones is not None and any(in_zone(key, zone) for zone in zones)


class HostsSource:
    """The hosts a stage answers from now: the shell replaces them when the file changes."""

    __slots__ = ("hosts",)

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts

    def replace(self, hosts: Hosts) -> None:
        self.hosts = hosts


class HostsStage:
    """Answers from `source` as CoreDNS's `hosts` does (see the module's rules)."""

    def __init__(self, source: HostsSource, options: ReplyOptions) -> None:
        self.source = source
        self._options = options

    def serve(self, request: Request, next: Next) -> Outcome:
        hosts = self.source.hosts
        query = request.query
        key, qtype = query.key, query.qtype
        if qtype == rdata.PTR:
            answer = hosts.pointer_answer(key)
            if answer is None:
                return next(request)  # hosts.go: a PTR it has nothing for goes on, fallthrough or not
            return answered(request, answer, self._options, None)
        if not hosts.in_zones(key):
            return next(request)
        found = hosts.addresses(key)
        if qtype not in (rdata.A, rdata.AAAA) and hosts.options.fallthrough_unsupported and hosts.falls_through(key):
            return next(request)
        if found is None:
            if hosts.falls_through(key):
                return next(request)
            return status(request, SERVFAIL, self._options)  # hosts.go: no SOA to deny it with
        if qtype == rdata.A:
            return answered(request, found[0], self._options, None)
        if qtype == rdata.AAAA:
            return answered(request, found[1], self._options, None)
        return answered(request, _NODATA, self._options, None)


_NODATA = Answer(0, 0, 0, 0, b"", None, QR | AA)


def _ends(records: Sequence[bytes]) -> list[int]:
    ends, at = [], 0
    for record in records:
        at += len(record)
        ends.append(at)
    return ends
