"""rewrite (kdns/core/rewrite.py, kdns/core/rewrite_rules.py): rules read as CoreDNS reads
them, questions rewritten, replies given back to the question asked (the behaviour against
CoreDNS itself is in tests/test_coredns_differential.py)."""

from __future__ import annotations

import re

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from kdns.core import wire
from kdns.core.rewrite import RewriteStage
from kdns.core.rewrite_rules import AnswerRule, ClassRule, NameRule, RewriteError, TypeRule, rule_of
from kdns.core.stage import KEEP_FROM_ZONE, Outcome, Reply, ReplyOptions, Request

OPTIONS = ReplyOptions()


def test_rules_read_as_coredns_reads_them() -> None:
    assert rule_of(["name", "A.Example", "b.example."]) == NameRule("stop", "exact", "a.example.", "b.example.", True)
    # prefix, suffix and substring words are made absolute too (plugin.Name.Normalize).
    assert rule_of(["continue", "name", "prefix", "foo", "bar"]) == NameRule("continue", "prefix", "foo.", "bar.")
    assert rule_of(["name", "suffix", ".a.example", ".b.example", "answer", "auto"]) == NameRule(
        "stop", "suffix", ".a.example.", ".b.example.", True
    )
    regex = rule_of(
        ["name", "regex", r"(.*)\.corp", "{1}.svc", "answer", "name", r"(.*)\.svc", "{1}.corp", "value", "x", "y"]
    )
    assert regex == NameRule(
        "stop",
        "regex",
        r"(.*)\.corp",
        "{1}.svc.",
        False,
        (AnswerRule("name", r"(.*)\.svc", "{1}.corp."), AnswerRule("value", "x", "y.")),
    )
    assert rule_of(["type", "any", "hinfo"]) == TypeRule("stop", 255, 13)
    assert rule_of(["stop", "class", "CH", "IN"]) == ClassRule("stop", 3, 1)


@pytest.mark.parametrize(
    ("words", "says"),
    [
        ([], "no rule type specified"),
        (["continue"], "continue rule must begin with a rule type"),
        (["answer", "name", "a", "b"], "response rewrites must begin with a name rule"),
        (["type", "A"], "type rules must have exactly two arguments"),
        (["type", "A", "NOPE"], "invalid type 'NOPE'"),
        (["ttl", "a", "5"], "kdns rewrites names, types and classes only"),
        (["rename", "a", "b"], "invalid rule type 'rename'"),
        (["name", "a"], "too few arguments for a name rule"),
        (["name", "fuzzy", "a", "b"], "supports only exact, prefix, suffix, substring, and regex"),
        (["name", "regex", "(a", "b"], "invalid regex matching pattern: (a"),
        (["name", "regex", "(a)", "{1}{2}"], "uses more subexpressions"),
        (["name", "prefix", "a", "b", "oops", "auto"], "exceeded the number of arguments"),
        (["name", "prefix", "a", "b", "answer", "name", "x"], "2 arguments required"),
        (["name", "prefix", "a", "b", "answer", "auto", "answer", "name", "x", "y"], "cannot be combined"),
    ],
)
def test_a_rule_coredns_refuses_is_refused_in_its_words(words: list[str], says: str) -> None:
    with pytest.raises(RewriteError, match=re.escape(says)):
        rule_of(words)


def _inner(request: Request) -> Outcome:
    """The stages after: web.svc. and its SRV target, kept as the zone keeps answers."""
    query = dns.message.make_query(wire_name(request), dns.rdatatype.RdataType(request.query.qtype))
    reply = dns.message.make_response(query)
    reply.id = request.query.id
    name = wire_name(request)
    if name == "web.svc.":
        reply.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "10.0.0.1"))
        reply.answer.append(dns.rrset.from_text(name, 30, "IN", "CNAME", "other.web.svc."))
    else:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    return Reply(reply.to_wire(), KEEP_FROM_ZONE)


def wire_name(request: Request) -> str:
    return dns.message.from_wire(b"\0\0\0\0\0\1\0\0\0\0\0\0" + request.query.question).question[0].name.to_text()


def _ask(rules: list[list[str]], name: str, rdtype: str = "A") -> tuple[dns.message.Message, Reply]:
    stage = RewriteStage([rule_of(words) for words in rules], OPTIONS, _inner)
    query = wire.parse_query(dns.message.make_query(name, rdtype).to_wire())
    outcome = stage.serve(Request.of(query, False, None, OPTIONS), lambda request: Reply(b"not rewritten"))
    assert isinstance(outcome, Reply)
    return dns.message.from_wire(outcome.message), outcome


def _records(message: dns.message.Message) -> list[str]:
    return sorted(
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {item}" for rrset in message.answer for item in rrset
    )


def test_an_exact_rule_gives_names_back_and_the_question_asked() -> None:
    reply, outcome = _ask([["name", "Web.Example", "web.svc"]], "WEB.example.")
    assert reply.question[0].name.to_text() == "WEB.example."  # the question as asked, case and all
    assert _records(reply) == ["web.example. A 10.0.0.1", "web.example. CNAME other.web.example."]
    assert outcome.keep is KEEP_FROM_ZONE  # kept on the terms of the reply it came from


def test_a_suffix_rule_with_answer_auto_maps_the_suffix_back() -> None:
    reply, _ = _ask([["name", "suffix", ".example", ".svc", "answer", "auto"]], "web.example")
    assert _records(reply) == ["web.example. A 10.0.0.1", "web.example. CNAME other.web.example."]


def test_without_answer_rules_the_records_keep_the_rewritten_names() -> None:
    reply, _ = _ask([["name", "regex", r"(.*)\.example", "{1}.svc"]], "web.example")
    assert reply.question[0].name.to_text() == "web.example."
    assert _records(reply) == ["web.svc. A 10.0.0.1", "web.svc. CNAME other.web.svc."]


def test_answer_name_and_value_rules_rewrite_owners_and_targets() -> None:
    rule = ["name", "regex", r"(.*)\.example", "{1}.svc", "answer", "name", r"(.*)\.svc", "{1}.example"]
    reply, _ = _ask([[*rule, "answer", "value", r"other\.(.*)\.$", "target.{1}"]], "web.example")
    assert _records(reply) == ["web.example. A 10.0.0.1", "web.example. CNAME target.web.svc."]
    # A rule that makes a name no name (`target.web.svc..`): SERVFAIL, as CoreDNS cannot send it.
    reply, _ = _ask([[*rule, "answer", "value", r"other\.(.*)", "target.{1}"]], "web.example")
    assert reply.rcode() == dns.rcode.SERVFAIL


def test_rules_stop_at_the_first_match_unless_continue() -> None:
    rules = [["name", "exact", "a.example", "web.svc"], ["name", "exact", "web.svc", "nope.svc"]]
    assert _ask(rules, "a.example")[0].rcode() == dns.rcode.NOERROR
    rules[0].insert(0, "continue")
    assert _ask(rules, "a.example")[0].rcode() == dns.rcode.NXDOMAIN


def test_a_continue_rule_without_answer_rules_leaves_the_rewritten_question() -> None:
    reply, _ = _ask([["continue", "type", "TXT", "A"], ["continue", "name", "regex", "x", "y"]], "web.svc", "TXT")
    assert dns.rdatatype.to_text(reply.question[0].rdtype) == "A"  # CoreDNS writes it unchanged
    assert _records(reply) == ["web.svc. A 10.0.0.1", "web.svc. CNAME other.web.svc."]


def test_no_matching_rule_goes_on_untouched_and_a_bad_new_name_is_servfail() -> None:
    stage = RewriteStage([rule_of(["name", "exact", "a.example", "b.example"])], OPTIONS, _inner)
    query = wire.parse_query(dns.message.make_query("c.example", "A").to_wire())
    assert stage.serve(Request.of(query, False, None, OPTIONS), lambda request: Reply(b"next")) == Reply(b"next")
    too_long = "x" * 60
    reply, _ = _ask([["name", "regex", "(.*)", "{1}" + f".{too_long}" * 4]], "web.example")
    assert reply.rcode() == dns.rcode.SERVFAIL
