"""CoreDNS's `log` plugin, as a Corefile writes it: which names are logged (its scopes), which
replies (its classes), and the line's format, with CoreDNS's placeholders (plugin/log,
plugin/pkg/replacer, plugin/pkg/response). Pure: the shell's query log (`kdns.logs.QueryLog`)
gives the fields of each query and prints the line.

- `log [NAMES...] [FORMAT] { class CLASSES... }`: each NAME a scope (the first rule whose scope
  holds the name decides; a name no rule holds is not logged), FORMAT the last argument when it
  holds `{` (`{common}` and `{combined}` are CoreDNS's two formats), CLASSES of `all`, `success`,
  `denial` (NXDOMAIN, NODATA) and `error` (every other rcode).
- Placeholders: `{type} {name} {class} {proto} {size} {remote} {port} {local} {rcode} {rsize}
  {duration}` and the headers' `{>id} {>opcode} {>do} {>bufsize} {>rflags}`; a `{/metadata}`
  label, and anything kdns cannot know, is `-` (CoreDNS's empty value); any other `{...}` is text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EMPTY = "-"  # replacer.EmptyValue
COMMON = (  # CoreDNS's CommonLogFormat, its default
    '{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" '
    "{rcode} {>rflags} {rsize} {duration}"
)
COMBINED = COMMON + ' "{>opcode}"'
LABELS = frozenset(
    (
        "{type}",
        "{name}",
        "{class}",
        "{proto}",
        "{size}",
        "{remote}",
        "{port}",
        "{local}",
        "{>id}",
        "{>opcode}",
        "{>do}",
        "{>bufsize}",
        "{rcode}",
        "{rsize}",
        "{duration}",
        "{>rflags}",
    )
)
CLASSES = ("all", "success", "denial", "error")  # response.Class


class LogFormatError(ValueError):
    """A `log` directive CoreDNS would refuse (its message says why)."""


@dataclass(frozen=True, slots=True)
class LogRule:
    """One scope of a `log` directive: names under `scope` (absolute, lowercased; `.` every name)
    are logged in `format` when their reply's class is one of `classes`."""

    scope: str
    format: str = COMMON
    classes: frozenset[str] = frozenset(("all",))


def rules(args: Sequence[str], classes: Sequence[str] = ()) -> tuple[LogRule, ...]:
    """The rules of one `log` directive (plugin/log/setup.go `logParse`)."""
    names, text = list(args), COMMON
    if len(names) > 1 and "{" in names[-1]:
        text = names.pop().replace("{common}", COMMON).replace("{combined}", COMBINED)
    for name in classes:
        if name not in CLASSES:
            raise LogFormatError(f"invalid Class: {name}")
    chosen = frozenset(classes) or frozenset(("all",))
    scopes = [_absolute(name) for name in names] or ["."]
    return tuple(LogRule(scope, text, chosen) for scope in scopes)


def _absolute(name: str) -> str:
    lowered = name.lower()
    return lowered if lowered.endswith(".") else lowered + "."


def rule_for(found: Sequence[LogRule], name: str) -> LogRule | None:
    """The first rule whose scope holds the absolute, lowercased `name` (plugin.Name.Matches)."""
    for rule in found:
        if rule.scope == "." or name == rule.scope or name.endswith("." + rule.scope):
            return rule
    return None


def parsed(text: str) -> tuple[tuple[bool, str], ...]:
    """`text` as (is a placeholder, its label or literal) parts, as replacer.go `parseFormat`
    splits it: a `{` nearest before each `}`; a `{/...}` label is metadata."""
    parts: list[tuple[bool, str]] = []
    rest = text
    while (end := rest.find("}")) >= 0:
        start = rest.rfind("{", 0, end)
        if start < 0:
            parts.append((False, rest[: end + 1]))
            rest = rest[end + 1 :]
            continue
        label = rest[start : end + 1]
        if label in LABELS or label.startswith("{/"):
            if start:
                parts.append((False, rest[:start]))
            parts.append((True, label))
        else:
            parts.append((False, rest[: end + 1]))
        rest = rest[end + 1 :]
    if rest:
        parts.append((False, rest))
    return tuple(parts)


def rendered(parts: Sequence[tuple[bool, str]], fields: Mapping[str, str]) -> str:
    """The line: each placeholder's field (`-` where there is none)."""
    return "".join(fields.get(value, EMPTY) if placeholder else value for placeholder, value in parts)


def reply_class(rcode: int, answers: int, delegation: bool) -> str:
    """response.Typify then Classify: NXDOMAIN and NODATA are `denial`; NOERROR with answers, or
    a delegation (NS and no SOA in authority), is `success`; every other rcode is `error`."""
    if rcode == 3:
        return "denial"
    if rcode != 0:
        return "error"
    if answers or delegation:
        return "success"
    return "denial"


def header_flags(flags: int) -> str:
    """replacer.go `appendFlags`: the set header flags of a reply, `qr,aa,rd,ra`."""
    names = (
        (0x8000, "qr"),
        (0x0400, "aa"),
        (0x0200, "tc"),
        (0x0100, "rd"),
        (0x0080, "ra"),
        (0x0040, "z"),
        (0x0020, "ad"),
        (0x0010, "cd"),
    )
    return ",".join(name for bit, name in names if flags & bit)
