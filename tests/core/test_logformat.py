"""logformat (kdns/core/logformat.py): CoreDNS's `log` directive read as plugin/log/setup.go reads
it, its formats split as plugin/pkg/replacer splits them, replies classed as plugin/pkg/response
classes them (the lines against CoreDNS's own are in tests/test_coredns_differential.py)."""

from __future__ import annotations

import pytest

from kdns.core.logformat import (
    COMBINED,
    COMMON,
    LogFormatError,
    LogRule,
    header_flags,
    parsed,
    rendered,
    reply_class,
    rule_for,
    rules,
)


def test_a_log_directive_is_scopes_a_format_and_classes() -> None:
    assert rules([]) == (LogRule("."),)
    assert rules(["example.org"]) == (LogRule("example.org."),)  # one argument: a scope, never a format
    assert rules(["a.example", "B.example.", "{common}"], ["denial", "error"]) == (
        LogRule("a.example.", COMMON, frozenset(("denial", "error"))),
        LogRule("b.example.", COMMON, frozenset(("denial", "error"))),
    )
    assert rules([".", "{combined} {>opcode}"])[0].format == COMBINED + " {>opcode}"
    with pytest.raises(LogFormatError, match="invalid Class: loud"):
        rules([], ["loud"])


def test_the_first_scope_holding_a_name_decides() -> None:
    found = rules(["prod.svc.cluster.local"], ["denial"]) + rules([])
    assert rule_for(found, "web.prod.svc.cluster.local.") is found[0]
    assert rule_for(found, "www.example.com.") is found[1]
    assert rule_for(rules(["example.com"]), "example.org.") is None
    assert rule_for(rules(["example.com"]), "notexample.com.") is None  # on a label boundary


def test_placeholders_text_and_metadata_are_split_as_coredns_splits_them() -> None:
    parts = parsed("A {type} } {name} {/kubernetes/pod} {nope} {{name}}")
    assert rendered(parts, {"{type}": "AAAA", "{name}": "x."}) == "A AAAA } x. - {nope} {x.}"
    assert rendered(parsed(COMMON), {}) == '-:- - - "- - - - - - -" - - - -'


def test_replies_are_classed_and_flags_named_as_coredns_does() -> None:
    assert reply_class(0, 1, False) == "success"
    assert reply_class(0, 0, True) == "success"  # a delegation
    assert reply_class(0, 0, False) == "denial"  # NODATA
    assert reply_class(3, 0, False) == "denial"  # NXDOMAIN
    assert [reply_class(rcode, 0, False) for rcode in (1, 2, 4, 5)] == ["error"] * 4
    assert header_flags(0x8580) == "qr,aa,rd,ra"
    assert header_flags(0) == ""
