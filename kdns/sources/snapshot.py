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
from kdns.core.model import ClusterObject
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
    ignored_kinds: dict[str, int] = field(default_factory=dict)


def load(path: str | Path) -> Snapshot:
    """Read and convert a snapshot file; raise `SnapshotError` if it is unreadable or unparsable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SnapshotError(f"{path}: cannot read snapshot: {error}") from error
    snapshot = Snapshot(path)
    for index, document in enumerate(_documents(path, text)):
        if document is None:
            continue
        if not isinstance(document, Mapping):
            raise SnapshotError(
                f"{path}: document {index + 1}: expected an object or a List, got {type(document).__name__}"
            )
        for kind, obj in _objects(path, document):
            if kind not in KINDS:
                snapshot.ignored_kinds[kind] = snapshot.ignored_kinds.get(kind, 0) + 1
                continue
            try:
                converted = convert(kind, obj)
            except ConversionError as error:
                snapshot.errors.append(error)
                continue
            if converted is not None:
                snapshot.objects.append(converted)
    return snapshot


def report(snapshot: Snapshot) -> None:
    """Log what was skipped: each malformed object, and each ignored kind once."""
    for error in snapshot.errors:
        log.error("%s: skipped %s", snapshot.path, error)
    for kind, count in sorted(snapshot.ignored_kinds.items()):
        log.warning(
            "%s: ignored %d object(s) of kind %s (kdns serves %s)", snapshot.path, count, kind, ", ".join(KINDS)
        )


def _documents(path: Path, text: str) -> list[Any]:
    if text.lstrip()[:1] in ("{", "["):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as error:
            raise SnapshotError(
                f"{path}: line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
            ) from error
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SnapshotError(f"{path}: {where}invalid YAML: {problem}") from error


def _objects(path: Path, document: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(kind, object) pairs of a document: itself, or the items of a List.

    API list responses (`ServiceList`) omit `kind` on their items; it is taken from the list.
    """
    kind = document.get("kind")
    if not isinstance(kind, str) or not kind:
        raise SnapshotError(f"{path}: an object has no kind (metadata: {document.get('metadata')!r})")
    if not kind.endswith("List"):
        yield kind, document
        return
    items = document.get("items") or []
    if not isinstance(items, list):
        raise SnapshotError(f"{path}: {kind}.items: expected a list")
    item_kind = kind[: -len("List")] or None
    for position, item in enumerate(items):
        own_kind = item.get("kind") if isinstance(item, Mapping) else None
        chosen = own_kind or item_kind
        if not chosen:
            raise SnapshotError(f"{path}: {kind}.items[{position}]: no kind")
        yield chosen, item
