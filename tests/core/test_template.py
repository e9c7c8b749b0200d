"""template (kdns/core/template.py, kdns/core/template_rules.py): the part of Go's text/template
CoreDNS's templates use, records as miekg/dns reads them, and the stage's order of templates,
fallthrough and SERVFAIL (the answers against CoreDNS itself are in
tests/test_coredns_differential.py)."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from kdns.core import wire
from kdns.core.stage import Reply, ReplyOptions, Request
from kdns.core.template import TemplateStage
from kdns.core.template_rules import DEFAULT_TTL, Template, TemplateError, compile_text, record, validated

OPTIONS = ReplyOptions()
NEXT = Reply(b"next stage")


def _stage(*templates: Template) -> TemplateStage:
    return TemplateStage(templates, OPTIONS, lambda request: NEXT)


def _ask(stage: TemplateStage, name: str, rdtype: str = "A", client: str = "10.1.2.3") -> dns.message.Message | Reply:
    query = wire.parse_query(dns.message.make_query(name, rdtype).to_wire())
    outcome = stage.serve(Request.of(query, False, (client, 5353), OPTIONS), lambda request: NEXT)
    assert isinstance(outcome, Reply)
    return outcome if outcome is NEXT else dns.message.from_wire(outcome.message)


def _message(reply: dns.message.Message | Reply) -> dns.message.Message:
    assert isinstance(reply, dns.message.Message)
    return reply


def test_every_action_kdns_reads_is_filled_in_and_any_other_is_refused() -> None:
    text = (
        "{{ .Name }} {{ .Zone }} {{.Class}} {{ .Type }} {{ .Remote }} {{ .Group.app }} {{ index .Match 1 }} "
        '{{ index .Group "app" }} {{ parseInt .Group.hex 16 8 }} [{{ .Meta "kubernetes/pod" }}]'
    )
    template = Template(
        1,
        16,
        ("example.",),
        match=(r"^(?P<app>[a-z]+)-(?P<hex>[0-9a-f]+)\.example\.$",),
        answer=(f'{{{{ .Name }}}} 5 IN TXT "{text}"',),
    )
    reply = _message(_ask(_stage(template), "shop-ff.example", "TXT"))
    assert reply.answer[0].ttl == 5
    assert reply.answer[0][0].strings == (b"shop-ff.example. example. IN TXT 10.1.2.3 shop shop shop 255 []",)
    for action in ("{{ .Question }}", "{{ range .Match }}x{{ end }}", '{{ printf "%s" .Name }}'):
        with pytest.raises(TemplateError, match="kdns fills in"):
            compile_text(action)


def test_a_record_without_ttl_gets_miekgs_default_and_parentheses_group_one_line() -> None:
    assert record("a.example IN A 192.0.2.1").ttl == DEFAULT_TTL
    assert record("a.example. IN 7 A 192.0.2.1").ttl == 7
    soa = record("invalid. 60 IN SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)")
    assert soa.rtype == dns.rdatatype.SOA
    with pytest.raises(TemplateError):
        record("a.example. 60 IN A 999.1.1.1")


def test_templates_in_order_fallthrough_to_the_next_and_servfail_without() -> None:
    first = Template(
        1, 1, ("example.",), match=(r"^a\.",), answer=("{{ .Name }} 60 IN A 192.0.2.1",), fallthrough=(".",)
    )
    second = Template(1, 1, ("example.",), match=(r"^b\.",), answer=("{{ .Name }} 60 IN A 192.0.2.2",))
    stage = _stage(first, second)
    assert _message(_ask(stage, "a.example")).answer[0][0].address == "192.0.2.1"
    assert _message(_ask(stage, "b.example")).answer[0][0].address == "192.0.2.2"
    assert _message(_ask(stage, "c.example")).rcode() == dns.rcode.SERVFAIL  # the second fits, finds nothing
    assert _ask(stage, "a.other") is NEXT  # outside every template's zones
    assert _ask(stage, "c.example", "AAAA") is NEXT  # no template of that type


def test_rcode_authority_and_an_extended_error() -> None:
    deny = Template(
        255,
        255,
        ("internal.example.",),
        rcode=dns.rcode.NXDOMAIN,
        authority=("internal.example. 60 IN SOA ns.internal.example. h.internal.example. (1 60 60 60 60)",),
        ederror=(21, "not here"),
    )
    reply = _message(_ask(_stage(deny), "x.internal.example", "MX"))
    assert reply.rcode() == dns.rcode.NXDOMAIN and reply.flags & dns.flags.AA
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    option = reply.options[0]
    assert isinstance(option, dns.edns.EDEOption) and option.code == 21 and option.text == "not here"


def test_a_text_that_fills_in_to_no_record_is_servfail_and_a_bad_pattern_is_refused() -> None:
    broken = Template(1, 1, (".",), answer=("{{ .Name }} 60 IN A {{ .Group.nothing }}",))
    assert _message(_ask(_stage(broken), "a.example")).rcode() == dns.rcode.SERVFAIL
    with pytest.raises(TemplateError, match="could not parse regex"):
        validated(Template(1, 1, (".",), match=("(a",)))
