"""Cluster objects from a snapshot file: YAML or JSON, as `kubectl get ... -o yaml|json` prints.

Accepted shapes: a `kind: List` (or `ServiceList`, ...) with `items`, a multi-document YAML stream,
or single objects, mixed freely. Objects of other kinds are ignored with one warning per kind. A
file that cannot be read or parsed raises `SnapshotError` naming the file and the position; an
object that cannot be converted is reported with its kind, name and field, and skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdns.core.convert import KINDS, ConversionError, convert
from kdns.core.model import ClusterObject, Namespace
from kdns.errors import KdnsError

log = logging.getLogger(__name__)


class SnapshotError(KdnsError):
    """A snapshot file that cannot be read or parsed at all."""


@dataclass
class Snapshot:
    """What a snapshot file held: the objects to serve and what was wrong with the rest."""

    path: Path
    objects: list[ClusterObject] = field(default_factory=list)
    errors: list[ConversionError] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # objects given twice: the later one wins
    ignored_kinds: dict[str, int] = field(default_factory=dict)


def load(path: str | Path) -> Snapshot:
    """Read and convert a snapshot file; raise `SnapshotError` if it is unreadable or unparsable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SnapshotError(f"{path}: cannot read snapshot: {error}") from error
    snapshot = Snapshot(path)
    seen: dict[tuple[str, str, str], str] = {}  # (kind, namespace, name) -> where it was first
    for index, document in enumerate(_documents(path, text)):
        if document is None:
            continue
        if not isinstance(document, Mapping):
            raise SnapshotError(
                f"{path}: document {index + 1}: expected an object or a List, got {type(document).__name__}"
            )
        for where, kind, obj in _objects(path, document, index):
            if not isinstance(kind, str) or not kind:
                snapshot.errors.append(
                    ConversionError("object", where, "kind", f"expected the name of a kind, got {_shown(kind)}")
                )
                continue
            if kind not in KINDS:
                snapshot.ignored_kinds[kind] = snapshot.ignored_kinds.get(kind, 0) + 1
                continue
            try:
                converted = convert(kind, obj)
            except ConversionError as error:
                snapshot.errors.append(error)
                continue
            if converted is None:
                continue
            identity = (kind, *_key(converted))
            if identity in seen:
                ref = "/".join(part for part in identity[1:] if part)
                snapshot.duplicates.append(
                    f"{kind} {ref} at {where} repeats the one at {seen[identity]}: the later one is served"
                )
            seen[identity] = where
            snapshot.objects.append(converted)
    return snapshot


def _key(obj: ClusterObject) -> tuple[str, str]:
    return ("", obj.name) if isinstance(obj, Namespace) else (obj.namespace, obj.name)


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def report(snapshot: Snapshot) -> None:
    """Log what was skipped: each malformed object, each duplicate, and each ignored kind once."""
    for error in snapshot.errors:
        log.error("%s: skipped %s", snapshot.path, error)
    for duplicate in snapshot.duplicates:
        log.warning("%s: %s", snapshot.path, duplicate)
    for kind, count in sorted(snapshot.ignored_kinds.items()):
        log.warning(
            "%s: ignored %d object(s) of kind %s (kdns serves %s)", snapshot.path, count, kind, ", ".join(KINDS)
        )


# libyaml's loader where PyYAML was built with it: the pure-Python one took minutes and
# gigabytes for a 50 MB snapshot.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _documents(path: Path, text: str) -> list[Any]:
    try:
        if text.lstrip()[:1] in ("{", "["):
            try:
                return [json.loads(text)]
            except json.JSONDecodeError as error:
                raise SnapshotError(
                    f"{path}: line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
                ) from error
        try:
            return list(yaml.load_all(text, Loader=_YAML_LOADER))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error)
            raise SnapshotError(f"{path}: {where}invalid YAML: {problem}") from error
    except RecursionError:
        raise SnapshotError(f"{path}: nested too deeply to be a Kubernetes object") from None


def _objects(path: Path, document: Mapping[str, Any], index: int) -> Iterator[tuple[str, Any, Any]]:
    """(where, kind, object) of each object of a document: itself, or the items of a List.

    API list responses (`ServiceList`) omit `kind` on their items; it is taken from the list. The
    kind is as written, for the caller to check: one item's bad kind must not stop the others.
    """
    kind = document.get("kind")
    where = f"document {index + 1}"
    if kind is None or kind == "":
        raise SnapshotError(f"{path}: {where}: an object has no kind (metadata: {document.get('metadata')!r})")
    if not isinstance(kind, str) or not kind.endswith("List"):
        yield where, kind, document
        return
    items = document.get("items") or []
    if not isinstance(items, list):
        raise SnapshotError(f"{path}: {where}: {kind}.items: expected a list")
    item_kind = kind[: -len("List")] or None
    for position, item in enumerate(items):
        own_kind = item.get("kind") if isinstance(item, Mapping) else None
        chosen = own_kind if own_kind is not None else item_kind
        if chosen is None:
            raise SnapshotError(f"{path}: {kind}.items[{position}]: no kind")
        yield f"{kind}.items[{position}]", chosen, item
