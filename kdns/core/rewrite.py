"""The rewrite stage (CoreDNS's `rewrite`): a question asked under another name, type or class,
and the reply given back as if to the question asked.

Rule for rule as CoreDNS 1.13 (plugin/rewrite: rewrite.go, name.go, type.go, class.go,
reverter.go):
- rules apply in order; a rule that matches rewrites the question, and ends the rules unless it
  is a `continue` rule (`stop`, the default, ends them);
- `name exact|prefix|suffix|substring FROM TO` work on the question's name lowercased and
  absolute, with FROM and TO lowercased and made absolute too (so `prefix foo` matches `foo.`);
  `name regex PATTERN TO` searches the name with an RE2 pattern (the syntax Go's regexp reads)
  and puts its groups in TO's `{1}`...; an exact rule always gives names back (`answer auto`);
- `answer auto` maps every record's owner and target from the rewritten name (or, for a suffix
  rule, the new suffix) back to the one asked; `answer name|value PATTERN TO` rewrite every
  owner, or every target (CNAME, PTR, NS, MX, SRV, SOA's MNAME, NAPTR), that PATTERN finds;
- the reply's question is the one asked, and its records go through the answer rules in reverse
  order, when a `stop` rule matched or some answer rule applies; a reply only `continue` rules
  without answer rules touched keeps the rewritten question (as CoreDNS's, which then writes it
  unchanged);
- a name that is no domain name after the rewrite is SERVFAIL;
- `type FROM TO` and `class FROM TO` change the question's type or class (kdns answers class
  IN only, so a class rule matters only from IN).

The rewritten question goes on through the stages after this one, in the server block of the
Corefile that holds it: kdns gives the cluster's names and the rest of that Corefile block
blocks of their own, and `continue_with` picks the one holding the new name. Off the hot path:
replies are taken apart and made again with dnslib, and kept by the reply cache on the same
terms as the reply they came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import re2
from dnslib import QTYPE, DNSError, DNSLabel, DNSQuestion, DNSRecord

from kdns.core import wire
from kdns.core.message import SERVFAIL, TCP_LIMIT
from kdns.core.names import InvalidName, name_text, to_wire, wire_labels
from kdns.core.remade import packed_within
from kdns.core.rewrite_rules import STOP, ClassRule, NameRule, Rule, TypeRule, pattern
from kdns.core.stage import Next, Outcome, Reply, ReplyOptions, Request, status, then_reply


def _substituted(template: str, found: re2._Match[str]) -> str:
    out = template
    for index, value in enumerate((found.group(0), *found.groups())):
        out = out.replace("{" + str(index) + "}", value or "")
    return out


# -- what a matched rule does to the reply -------------------------------------------------------


_Rewriter = Callable[[str], str]  # a string rewriter of plugin/rewrite: what becomes of an owner or a target


class _Remap:
    """The name or a name under it, moved from `source` to `target` (remapStringRewriter)."""

    def __init__(self, source: str, target: str) -> None:
        self.source, self.target = source, target

    def __call__(self, text: str) -> str:
        if text == self.source:
            return self.target
        cut = len(text) - len(self.source)
        if cut > 0 and text[cut - 1] == "." and text[cut:] == self.source:
            return text[:cut] + self.target
        return text


class _Suffix:
    def __init__(self, suffix: str, target: str) -> None:
        self.suffix, self.target = suffix, target

    def __call__(self, text: str) -> str:
        return text[: -len(self.suffix)] + self.target if text.endswith(self.suffix) else text


class _Pattern:
    def __init__(self, compiled: re2._Regexp[str], template: str) -> None:
        self.compiled, self.template = compiled, template

    def __call__(self, text: str) -> str:
        found = self.compiled.search(text)
        return text if found is None else _substituted(self.template, found)


@dataclass(frozen=True, slots=True)
class _ResponseRule:
    part: str  # "name": the owner; "value": the target
    rewrite: _Rewriter


# Where each type keeps the one name a value rule rewrites (reverter.go getRecordValueForRewrite),
# as dnslib names the field.
_VALUE_FIELDS = {
    QTYPE.SRV: "target",
    QTYPE.MX: "label",
    QTYPE.CNAME: "label",
    QTYPE.NS: "label",
    QTYPE.PTR: "label",
    QTYPE.SOA: "mname",
    QTYPE.NAPTR: "replacement",
}


class _Compiled:
    """A rule with its patterns compiled once."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.pattern = None
        self.static: list[_ResponseRule] = []
        if isinstance(rule, NameRule):
            if rule.match == "regex":
                self.pattern = pattern(rule.source, rule.target)
            if rule.match == "suffix" and rule.auto:
                back = _Suffix(rule.target, rule.source)  # the new suffix back to the old one
                self.static += [_ResponseRule("name", back), _ResponseRule("value", back)]
            for answer in rule.answers:
                compiled = pattern(answer.pattern, answer.replacement)
                self.static.append(_ResponseRule(answer.part, _Pattern(compiled, answer.replacement)))

    def apply(self, name: str, qtype: int, qclass: int) -> tuple[str, int, int, list[_ResponseRule]] | None:
        """The question after this rule, and its answer rules; None if it does not match."""
        rule = self.rule
        if isinstance(rule, TypeRule):
            return (name, rule.target, qclass, []) if qtype == rule.source else None
        if isinstance(rule, ClassRule):
            return (name, qtype, rule.target, []) if qclass == rule.source else None
        new = self._renamed(rule, name)
        if new is None:
            return None
        responses = list(self.static)
        if rule.auto and rule.match != "suffix":  # responseRuleFor: the new name back to the one asked
            back = _Remap(new, name)
            responses = [_ResponseRule("name", back), _ResponseRule("value", back), *responses]
        return new, qtype, qclass, responses

    def _renamed(self, rule: NameRule, name: str) -> str | None:
        source, target = rule.source, rule.target
        if rule.match == "exact":
            return target if name == source else None
        if rule.match == "prefix":
            return target + name[len(source) :] if name.startswith(source) else None
        if rule.match == "suffix":
            return name[: -len(source)] + target if name.endswith(source) else None
        if rule.match == "substring":
            return name.replace(source, target) if source in name else None
        assert self.pattern is not None
        found = self.pattern.search(name)
        return None if found is None else _substituted(target, found)


class RewriteStage:
    """Rewrites the question by `rules`, asks `continue_with` (the stages after this one, in the
    block that holds the new name), and gives the reply back for the question asked."""

    def __init__(self, rules: Sequence[Rule], options: ReplyOptions, continue_with: Next) -> None:
        self._rules = [_Compiled(rule) for rule in rules]
        self._options = options
        self._continue_with = continue_with

    def serve(self, request: Request, next: Next) -> Outcome:
        query = request.query
        asked = name_text(query.key)
        if asked is None:
            return next(request)  # a label kdns cannot spell as text: no rule can name it
        name, qtype, qclass = asked, query.qtype, query.qclass
        responses: list[_ResponseRule] = []
        matched = stopped = False
        for rule in self._rules:
            applied = rule.apply(name, qtype, qclass)
            if applied is None:
                continue
            matched = True
            name, qtype, qclass, more = applied
            responses += more
            if rule.rule.mode == STOP:
                stopped = True
                break
        if not matched:
            return next(request)
        try:
            key = to_wire(name)
        except (InvalidName, UnicodeError):
            return status(request, SERVFAIL, self._options)  # "invalid name after rewrite"
        question = key + qtype.to_bytes(2, "big") + qclass.to_bytes(2, "big")
        rewritten = wire.Query(query.id, query.flags, question, key, qtype, qclass, query.edns)
        inner = Request(rewritten, request.tcp, request.client, TCP_LIMIT)
        outcome = self._continue_with(inner)
        if not (stopped or responses):
            return then_reply(outcome, lambda reply: _cut(reply, request))
        return then_reply(outcome, lambda reply: self._given_back(reply, request, responses))

    def _given_back(self, reply: Reply, request: Request, responses: Sequence[_ResponseRule]) -> Reply:
        try:
            return _given_back(reply, request, responses)
        except (ValueError, DNSError):
            # An answer rule made a name that is no name (`a..b`, a label over 63): CoreDNS
            # cannot pack that reply and sends none; SERVFAIL tells the client at once.
            return status(request, SERVFAIL, self._options)


def _cut(reply: Reply, request: Request) -> Reply:
    """The reply as the stages after made it, within the client's limit."""
    if len(reply.message) <= request.limit:
        return Reply(reply.message, reply.keep)
    return Reply(packed_within(DNSRecord.parse(reply.message), request.limit), reply.keep)


def _given_back(reply: Reply, request: Request, responses: Sequence[_ResponseRule]) -> Reply:
    """`reply` to the question asked: that question, its records through the answer rules in
    reverse order (reverter.go), within the client's limit; kept on the terms of `reply`."""
    message = DNSRecord.parse(reply.message)
    query = request.query
    message.questions = [DNSQuestion(DNSLabel(wire_labels(query.question[:-4])), query.qtype, query.qclass)]
    if responses:
        for rr in (*message.auth, *message.rr, *message.ar):
            if rr.rtype == QTYPE.OPT:
                continue
            for rule in reversed(responses):
                if rule.part == "name":
                    rr.rname = DNSLabel(rule.rewrite(str(rr.rname)))
                    continue
                field = _VALUE_FIELDS.get(rr.rtype)
                if field is None:
                    continue
                value = str(getattr(rr.rdata, field))
                changed = rule.rewrite(value)
                if changed != value:
                    setattr(rr.rdata, field, DNSLabel(changed))
    return Reply(packed_within(message, request.limit), reply.keep)
