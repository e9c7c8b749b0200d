"""What a `template` is (CoreDNS's plugin/template), as a configuration holds it: a frozen record
read from a Corefile, the part of Go's text/template its texts are written in, and records
read as miekg/dns reads them. `kdns.core.template` is the stage that answers from them; no
stage here, so that the configuration does not reach the answering code."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import re2
from dnslib import QTYPE, RCODE, RR

from kdns.core.rewrite_rules import RewriteError, pattern

ANY = 255  # class and type: every one (dns.ClassANY, dns.TypeANY)
DEFAULT_TTL = 3600  # miekg/dns's, for a record written without one
EDNS_SIZE = 4096  # template.go: SetEdns0(4096, true) for an ederror
EDE_OPTION = 15  # RFC 8914


class TemplateError(ValueError):
    """A template that cannot be made: its message says why."""


@dataclass(frozen=True, slots=True)
class Template:
    """One `template CLASS TYPE [ZONES...] {...}` (a configuration compares them)."""

    qclass: int
    qtype: int
    zones: tuple[str, ...]  # absolute, lowercased
    match: tuple[str, ...] = (".*",)
    answer: tuple[str, ...] = ()
    additional: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()
    rcode: int = 0
    fallthrough: tuple[str, ...] | None = None  # None: never; ".": every name
    ederror: tuple[int, str] | None = None


# -- Go's text/template, the part CoreDNS's templates use ----------------------------------------

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FIELD = {
    ".Name": "name",
    ".Zone": "zone",
    ".Class": "qclass",
    ".Type": "qtype",
    ".Remote": "remote",
    ".Regex": "regex",
}
_GROUP = re.compile(r"\.Group\.([A-Za-z_][A-Za-z0-9_]*)$")
_INDEX_MATCH = re.compile(r"index\s+\.Match\s+(\d+)$")
_INDEX_GROUP = re.compile(r'index\s+\.Group\s+"([^"]*)"$')
_PARSE_INT = re.compile(r"parseInt\s+(\S+)\s+(\d+)\s+(\d+)$")
_META = re.compile(r'\.Meta\s+"[^"]*"$')


@dataclass(frozen=True, slots=True)
class Filling:
    name: str
    zone: str
    qclass: str
    qtype: str
    remote: str
    regex: str
    match: tuple[str, ...]
    group: dict[str, str]


Part = Callable[[Filling], str]


def compile_text(text: str) -> list[Part]:
    """A template's text as the parts that fill it in; `TemplateError` for an action kdns does
    not read."""
    parts: list[Part] = []
    at = 0
    for found in _ACTION.finditer(text):
        literal = text[at : found.start()]
        parts.append(lambda data, literal=literal: literal)  # type: ignore[misc]
        parts.append(_action(found.group(1).strip(), text))
        at = found.end()
    tail = text[at:]
    parts.append(lambda data: tail)
    return parts


def _action(action: str, text: str) -> Part:
    if action in _FIELD:
        field = _FIELD[action]
        return lambda data: str(getattr(data, field))
    if found := _GROUP.match(action):
        name = found.group(1)
        return lambda data: data.group.get(name, "")  # Go: a missing key is the zero value
    if found := _INDEX_MATCH.match(action):
        index = int(found.group(1))

        def match(data: Filling) -> str:
            if index >= len(data.match):
                raise TemplateError(f"index out of range: {index}")
            return data.match[index]

        return match
    if found := _INDEX_GROUP.match(action):
        key = found.group(1)
        return lambda data: data.group.get(key, "")
    if found := _PARSE_INT.match(action):
        argument, base, bits = found.group(1), int(found.group(2)), int(found.group(3))
        inner = _action(argument, text)
        return lambda data: str(_parse_uint(inner(data), base, bits))
    if _META.match(action):
        return lambda data: ""  # no metadata plugin in kdns: what CoreDNS gives without one
    raise TemplateError(
        f"{{{{ {action} }}}} in {text!r}: kdns fills in .Name, .Zone, .Class, .Type, .Remote, .Regex, "
        '.Group.NAME, index .Match N, index .Group "NAME", parseInt X BASE BITS and .Meta "NAME"'
    )


def _parse_uint(text: str, base: int, bits: int) -> int:
    """strconv.ParseUint: an error (the template fails) for anything out of range."""
    try:
        value = int(text, base) if text and not text.startswith(("+", "-")) else -1
    except ValueError:
        value = -1
    if value < 0 or (bits and value >= 1 << bits):
        raise TemplateError(f"parseInt {text!r}")
    return value


def filled(parts: Sequence[Part], data: Filling) -> str:
    return "".join(part(data) for part in parts)


def record(text: str) -> RR:
    """A zone-file record as miekg/dns `NewRR` reads one: names absolute from the root, no TTL
    meaning 3600, parentheses grouping one line."""
    words = text.replace("(", " ").replace(")", " ").split()
    if len(words) < 3:
        raise TemplateError(f"not a record: {text!r}")
    if words[1].upper() in CLASSES and words[2].isdigit():
        words[1], words[2] = words[2], words[1]  # `NAME CLASS TTL`: as dnslib reads it, `NAME TTL CLASS`
    elif not words[1].isdigit():
        words.insert(1, str(DEFAULT_TTL))
    try:
        rrs = RR.fromZone(" ".join(words))
    except Exception as error:  # dnslib: any malformed text
        raise TemplateError(f"not a record: {text!r}: {error}") from None
    if len(rrs) != 1:
        raise TemplateError(f"not one record: {text!r}")
    return rrs[0]


# -- a template as a Corefile writes it -----------------------------------------------------------

CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}  # miekg/dns StringToClass


def validated(template: Template) -> Template:
    """`template` if every pattern and text of it compiles; `TemplateError` saying what does not."""
    compiled_patterns(template)
    for text in (*template.answer, *template.additional, *template.authority):
        compile_text(text)
    return template


def compiled_patterns(template: Template) -> list[re2._Regexp[str]]:
    try:
        return [pattern(text, "") for text in template.match]
    except RewriteError as error:
        raise TemplateError(f"could not parse regex: {error}") from None


def qtype_of(text: str) -> int | None:
    """A type by its name as miekg/dns `StringToType` has it (upper case)."""
    code = QTYPE.reverse.get(text)
    return int(code) if code is not None else None


def rcode_of(text: str) -> int | None:
    code = RCODE.reverse.get(text)
    return int(code) if code is not None else None
