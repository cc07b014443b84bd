"""The plan of a document's apply: each object as the document wants it beside the row it
replaces, what is to be removed, and the changes as a person reads them (the diff)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from routing.api.document_shape import Kind, flatten

__all__ = ["RELATION_FIELDS", "Changes", "Context", "Plan", "Planned", "same_value"]

# Lists of related names: the diff shows them whole, and saving them is not a field save.
RELATION_FIELDS = {"targets", "roles", "tiers_by_role"}


def same_value(old: Any, new: Any) -> bool:
    """Equal as JSON: true is not 1 and 1 is not 1.0 (a transform may set a body field to
    either), while the order of a mapping's keys does not matter."""
    return json.dumps(old, sort_keys=True, default=str) == json.dumps(
        new, sort_keys=True, default=str
    )


@dataclass
class Changes:
    """What applying a document changes, in the document's vocabulary."""

    added: list[str] = field(default_factory=list)
    changed: list[tuple[str, str, Any, Any]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def as_text(self) -> str:
        def show(value: Any) -> str:
            return json.dumps(value, sort_keys=False)

        lines = [f"+ {name}" for name in self.added]
        lines += [
            f"~ {obj}.{key}: {show(old)} -> {show(new)}" for obj, key, old, new in self.changed
        ]
        lines += [f"- {name}" for name in self.removed]
        return "\n".join(lines) if lines else "no changes"

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "changed": [
                {"object": obj, "field": key, "old": old, "new": new}
                for obj, key, old, new in self.changed
            ],
            "removed": list(self.removed),
        }


@dataclass
class Planned:
    """One object of the document, cleaned, beside the row it replaces (None for a new one)."""

    kind: Kind
    name: str
    instance: models.Model
    desired: dict[str, Any]
    current: dict[str, Any] | None
    related: Any = None  # targets, role names, or the route's reference names

    def changed_fields(self) -> list[str]:
        if self.current is None:
            return []
        old, new = flatten(self.current), flatten(self.desired)
        return [key for key in new if not same_value(old.get(key), new[key])]

    def saves_row(self) -> bool:
        return self.current is None or any(
            key not in RELATION_FIELDS for key in self.changed_fields()
        )


@dataclass
class Context:
    """What a reference may name, and the rows the document is compared with."""

    known: dict[str, set[str]]  # per section: names in the document, plus the database's
    existing: dict[str, dict[str, Any]]  # per section: rows by name
    in_document: dict[str, set[str]]


@dataclass
class Plan:
    objects: dict[str, list[Planned]]
    removals: dict[str, list[models.Model]]
    changes: Changes
    roles: set[str]
    defaults: Planned | None = None  # None: the document leaves the gateway defaults alone
