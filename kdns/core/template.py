"""The template stage (CoreDNS's `template`): answers made from a question's name by patterns, as
clusters use it for wildcard app domains and to deny search-path guesses outside the cluster
(AKS's `internal.cloudapp.net`, OpenShift's own Corefile).

Rule for rule as CoreDNS 1.13 (plugin/template: template.go, setup.go):
- the stage holds the names of every template's zones; any other name goes on;
- templates are tried in order; one whose zones, class and type (ANY: every one) fit and whose
  `match` patterns (RE2, Go's syntax; `.*` without any) find the name answers; one that fits but
  whose patterns do not find the name is SERVFAIL, unless `fallthrough` covers the name: then
  the next template is tried, and after the last, the next stage;
- its reply: authoritative, its `rcode` (NOERROR by default; SERVFAIL: the bare SERVFAIL), its
  `answer`, `additional` and `authority` records from its texts, each a zone-file record after
  the template is filled in (no TTL: 3600, as miekg/dns); for an A or AAAA question, a CNAME
  answer is followed, by the server's own blocks, and what they answer comes after it;
  `ederror CODE [REASON]` adds an extended DNS error (RFC 8914) in an OPT of 4096 bytes, DO set;
- a text that cannot be filled in, or is no record once filled in, is SERVFAIL.

A template's text is Go's text/template; kdns reads the part of it CoreDNS's documentation uses:
`{{ .Name }}`, `.Zone`, `.Class`, `.Type`, `.Remote`, `.Regex`, `.Group.NAME`, `index .Match N`,
`index .Group "NAME"`, `parseInt .Group.NAME BASE BITS`, `.Meta "NAME"` (empty: kdns has no
metadata); any other action is refused when the Corefile is read. Replies depend on the client
(`.Remote`), so none is kept by the reply cache.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from dnslib import CLASS, EDNS0, QTYPE, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord, EDNSOption

from kdns.core.message import RD, SERVFAIL
from kdns.core.names import InvalidName, name_text, to_wire, wire_labels, zone_of
from kdns.core.remade import packed_within
from kdns.core.stage import Next, Outcome, Reply, ReplyOptions, Request, status, then_reply
from kdns.core.template_rules import (
    ANY,
    EDE_OPTION,
    EDNS_SIZE,
    Filling,
    Template,
    TemplateError,
    compile_text,
    compiled_patterns,
    filled,
    record,
)

# -- the stage -----------------------------------------------------------------------------------


class _Compiled:
    def __init__(self, template: Template) -> None:
        self.template = template
        self.patterns = compiled_patterns(template)
        self.answer = [compile_text(text) for text in template.answer]
        self.additional = [compile_text(text) for text in template.additional]
        self.authority = [compile_text(text) for text in template.authority]

    def match(self, name: str, qtype: int, qclass: int, remote: str) -> tuple[Filling | None, bool]:
        """(what fills the texts in, or None; whether an unmatched name goes on)."""
        template = self.template
        zone = zone_of(name, template.zones)
        if zone is None:
            return None, True
        if template.qclass != ANY and qclass != ANY and qclass != template.qclass:
            return None, True
        if template.qtype != ANY and qtype != ANY and qtype != template.qtype:
            return None, True
        for text, compiled in zip(template.match, self.patterns, strict=True):
            found = compiled.search(name)
            if found is None:
                continue
            matches = (found.group(0), *(group or "" for group in found.groups()))
            groups = {str(index): value for index, value in enumerate(matches)}
            for group_name, index in compiled.groupindex.items():
                groups[group_name] = matches[index]
            data = Filling(
                name,
                zone,
                CLASS.get(qclass if qclass != ANY else template.qclass, ""),
                QTYPE.get(qtype if qtype != ANY else template.qtype, ""),
                remote,
                text,
                matches,
                groups,
            )
            return data, False
        fallthrough = template.fallthrough
        return None, fallthrough is not None and zone_of(name, fallthrough) is not None


class TemplateStage:
    """Answers from `templates` as CoreDNS's `template` does (the module's rules); a CNAME
    answer's target is asked of `resolve` (the blocks that hold it)."""

    def __init__(self, templates: Sequence[Template], options: ReplyOptions, resolve: Next) -> None:
        self._templates = [_Compiled(template) for template in templates]
        self._zones = tuple(zone for template in templates for zone in template.zones)
        self._options = options
        self._resolve = resolve

    def serve(self, request: Request, next: Next) -> Outcome:
        query = request.query
        name = name_text(query.key)
        if name is None or zone_of(name, self._zones) is None:
            return next(request)
        remote = request.client[0] if request.client is not None else ""
        for compiled in self._templates:
            data, fallthrough = compiled.match(name, query.qtype, query.qclass, remote)
            if data is None:
                if not fallthrough:
                    return status(request, SERVFAIL, self._options)
                continue
            if compiled.template.rcode == SERVFAIL:
                return status(request, SERVFAIL, self._options)
            try:
                return self._answer(request, compiled, data)
            except (TemplateError, ValueError):
                return status(request, SERVFAIL, self._options)  # template.go: the text failed
        return next(request)

    def _answer(self, request: Request, compiled: _Compiled, data: Filling) -> Outcome:
        query = request.query
        header = DNSHeader(
            id=query.id,
            qr=1,
            aa=1,
            rd=int(bool(query.flags & RD)),
            ra=int(self._options.recursion_available),
            rcode=compiled.template.rcode,
        )
        reply = DNSRecord(header, q=DNSQuestion(DNSLabel(wire_labels(query.question[:-4])), query.qtype, query.qclass))
        answers = [record(filled(parts, data)) for parts in compiled.answer]
        reply.add_auth(*(record(filled(parts, data)) for parts in compiled.authority))
        extra = [record(filled(parts, data)) for parts in compiled.additional]
        ederror = compiled.template.ederror
        if ederror is not None:
            option = EDNSOption(EDE_OPTION, struct.pack("!H", ederror[0]) + ederror[1].encode())
            extra.append(EDNS0(udp_len=EDNS_SIZE, flags="do", opts=[option]))
        elif query.edns is not None:
            extra.append(EDNS0(udp_len=self._options.max_udp, flags="do" if query.edns.dnssec_ok else ""))
        reply.add_ar(*extra)
        return self._with_answers(request, reply, answers)

    def _with_answers(self, request: Request, reply: DNSRecord, answers: list[RR]) -> Outcome:
        """`answers` into `reply` in order; for an A or AAAA question each CNAME is followed by
        what the server answers for its target (template.go, through plugin/pkg/upstream)."""
        query = request.query
        while answers:
            rr = answers.pop(0)
            reply.add_answer(rr)
            if rr.rtype == QTYPE.CNAME and query.qtype in (QTYPE.A, QTYPE.AAAA):
                try:
                    target = to_wire(str(rr.rdata.label))
                except (InvalidName, UnicodeError):
                    continue
                rest = list(answers)

                def followed(target_reply: Reply, rest: list[RR] = rest) -> Outcome:
                    found = DNSRecord.parse(target_reply.message)
                    reply.add_answer(*found.rr)
                    if found.header.tc:
                        reply.header.tc = 1
                    return self._with_answers(request, reply, rest)

                return then_reply(self._resolve(request.asking(target)), followed)
        return Reply(packed_within(reply, request.limit))
