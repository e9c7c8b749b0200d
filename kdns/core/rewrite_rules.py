"""What a `rewrite` rule is (CoreDNS's plugin/rewrite), as a configuration holds it: frozen
records read from a Corefile's words, their patterns checked; `kdns.core.rewrite` is the stage
that applies them. No stage here, so that the configuration (and whatever reads it) does not
reach the answering code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import re2
from dnslib import CLASS, QTYPE

STOP = "stop"
CONTINUE = "continue"
NAME_MATCHES = ("exact", "prefix", "suffix", "substring", "regex")
MAX_PATTERN = 10_000  # plugin/rewrite's limit on a pattern's length
_PATTERN_OPTIONS = re2.Options()
_PATTERN_OPTIONS.log_errors = False  # an error is raised, and reported with the Corefile's line


class RewriteError(ValueError):
    """A rule that cannot be made (its message says why, in CoreDNS's words where it has them)."""


def normalized(name: str) -> str:
    """plugin.Name.Normalize: lowercased and absolute."""
    lowered = name.lower()
    return lowered if lowered.endswith(".") else lowered + "."


def pattern(text: str, replacement: str) -> re2._Regexp[str]:
    """`text` compiled as RE2 (Go's regexp syntax); its groups must cover `replacement`'s."""
    if len(text) > MAX_PATTERN:
        raise RewriteError(f"regex pattern too long: {len(text)} > {MAX_PATTERN}")
    try:
        compiled = re2.compile(text, _PATTERN_OPTIONS)
    except re2.error:
        raise RewriteError(f"invalid regex matching pattern: {text}") from None
    used = sum(1 for group in range(101) if "{" + str(group) + "}" in replacement)
    if used > compiled.groups:
        raise RewriteError(
            f"the rewrite regex pattern ({replacement}) uses more subexpressions than its corresponding "
            f"matching regex pattern ({text})"
        )
    return compiled


# -- what the rules are (frozen records: a configuration compares them) -----------------------


@dataclass(frozen=True, slots=True)
class AnswerRule:
    """`answer name|value PATTERN TO`: owners, or targets, that PATTERN finds, made TO."""

    part: str  # "name" or "value"
    pattern: str
    replacement: str  # normalized


@dataclass(frozen=True, slots=True)
class NameRule:
    mode: str
    match: str  # one of NAME_MATCHES
    source: str  # normalized, but for a regex: the pattern as written
    target: str  # normalized
    auto: bool = False  # `answer auto` (always, for an exact rule)
    answers: tuple[AnswerRule, ...] = ()


@dataclass(frozen=True, slots=True)
class TypeRule:
    mode: str
    source: int
    target: int


@dataclass(frozen=True, slots=True)
class ClassRule:
    mode: str
    source: int
    target: int


Rule = NameRule | TypeRule | ClassRule


# -- a rule as a Corefile writes it ---------------------------------------------------------------

OTHER_RULES = ("edns0", "ttl", "cname", "rcode")  # CoreDNS has them; kdns rewrites none of them


def rule_of(args: Sequence[str]) -> Rule:
    """A rule from a `rewrite` directive's words (rewrite.go `newRule`, name.go `newNameRule`);
    `RewriteError` with CoreDNS's words where it has them."""
    if not args:
        raise RewriteError("no rule type specified for rewrite")
    first = args[0].lower()
    mode, rest = STOP, list(args)
    if first in (STOP, CONTINUE):
        if len(args) < 2:
            raise RewriteError(f"{first} rule must begin with a rule type")
        mode, rest = first, list(args[1:])
    kind = rest[0].lower()
    words = rest[1:]
    if kind == "answer":
        raise RewriteError("response rewrites must begin with a name rule")
    if kind in ("type", "class"):
        if len(words) != 2:
            raise RewriteError(f"{kind} rules must have exactly two arguments")
        names = QTYPE.reverse if kind == "type" else CLASS.reverse
        source, target = (names.get(word.upper()) for word in words)
        for word, code in zip(words, (source, target), strict=True):
            if code is None:
                raise RewriteError(f"invalid {kind} {word.upper()!r}")
        assert source is not None and target is not None
        return TypeRule(mode, source, target) if kind == "type" else ClassRule(mode, source, target)
    if kind in OTHER_RULES:
        raise RewriteError(f"{kind} rules: kdns rewrites names, types and classes only")
    if kind != "name":
        raise RewriteError(f"invalid rule type {args[0]!r}")
    return _name_rule(mode, words)


def _name_rule(mode: str, words: Sequence[str]) -> NameRule:
    if len(words) < 2:
        raise RewriteError("too few arguments for a name rule")
    if len(words) == 2:
        match, source, target = "exact", normalized(words[0]), normalized(words[1])
    else:
        match = words[0].lower()
        source = words[1] if match == "regex" else normalized(words[1])
        target = normalized(words[2])
    if match not in NAME_MATCHES:
        raise RewriteError(
            f"name rule supports only exact, prefix, suffix, substring, and regex name matching, received: {match}"
        )
    auto, answers = _answer_rules(match, words[3:]) if len(words) > 3 else (False, ())
    if match == "regex":
        pattern(source, target)
    return NameRule(mode, match, source, target, auto or match == "exact", answers)


def _answer_rules(name: str, words: Sequence[str]) -> tuple[bool, tuple[AnswerRule, ...]]:
    """name.go `parseAnswerRules`: `answer auto`, `answer name FROM TO`, `answer value FROM TO`,
    the word `answer` optional after the first."""
    if len(words) < 2:
        raise RewriteError(f"invalid arguments for {name} rule")
    auto, rules, names, at, last = False, [], 0, 0, ""
    while at < len(words):
        if last == "" and words[at] != "answer":
            raise RewriteError(f"exceeded the number of arguments for a non-answer rule argument for {name} rule")
        if words[at] == "answer":
            at += 1
        if at == len(words):
            raise RewriteError(f"type missing for answer rule for {name} rule")
        last = words[at]
        at += 1
        if last == "auto":
            auto = True
            continue
        if last not in ("name", "value"):
            raise RewriteError(f"invalid type {last!r} for answer rule for {name} rule")
        if len(words) - at < 2:
            raise RewriteError(f"{last} answer rule for {name} rule: 2 arguments required")
        source, target = words[at], words[at + 1]
        try:
            pattern(source, target)
        except RewriteError as error:
            raise RewriteError(f"{last} answer rule for {name} rule: {error}") from None
        rules.append(AnswerRule(last, source, normalized(target)))
        names += last == "name"
        at += 2
    if auto and names:
        raise RewriteError("auto name answer rule cannot be combined with explicit name answer rules")
    return auto, tuple(rules)
