"""The differences between two declarative documents (two configuration versions), object by
object: what was added, what was removed, and each changed field's value before and after.

A pure function of the two documents, with no database: the timeline compares stored versions,
not a version with the live rows (that is the document planner's job, routing.api.document_plan).
It answers the planner's `Changes`, so a version's diff reads like an import's dry run. Exported
documents leave out fields at their default; a field missing on one side is compared as its
default, so a field reset to its default shows as changed to that default.
"""

from __future__ import annotations

from typing import Any

from routing.api.document_defaults import DEFAULTS
from routing.api.document_plan import Changes, same_value
from routing.api.document_shape import KINDS, Kind, flatten

__all__ = ["EMPTY_DOCUMENT", "changes_summary", "document_diff"]

EMPTY_DOCUMENT: dict[str, Any] = {"version": 1}


def _full(kind: Kind, item: dict[str, Any]) -> dict[str, Any]:
    """Every field of one object, those the document leaves out at their default."""
    return {**kind.defaults(), **dict.fromkeys(kind.relations), **flatten(item)}


def _fields(kind: Kind, old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    before, after = _full(kind, old), _full(kind, new)
    keys = list(after) + [key for key in before if key not in after]
    return [
        (key, before.get(key), after.get(key))
        for key in keys
        if not same_value(before.get(key), after.get(key))
    ]


def _by_name(document: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in document.get(section) or []}


def document_diff(old: dict[str, Any], new: dict[str, Any]) -> Changes:
    """What changes from `old` to `new`, labelled as the planner labels it ("routes/users",
    "defaults")."""
    changes = Changes()
    for key, before, after in _fields(
        DEFAULTS, old.get(DEFAULTS.section) or {}, new.get(DEFAULTS.section) or {}
    ):
        changes.changed.append((DEFAULTS.section, key, before, after))
    for kind in KINDS:
        olds, news = _by_name(old, kind.section), _by_name(new, kind.section)
        for name in sorted(news):
            label = f"{kind.section}/{name}"
            if name not in olds:
                changes.added.append(label)
                continue
            for key, before, after in _fields(kind, olds[name], news[name]):
                changes.changed.append((label, key, before, after))
        changes.removed += [f"{kind.section}/{name}" for name in sorted(set(olds) - set(news))]
    return changes


def changes_summary(changes: Changes, *, limit: int = 4) -> str:
    """One line for the timeline: "added routes/a; changed routes/b (path, methods); removed
    tiers/c", the first `limit` objects and how many more."""
    changed: dict[str, list[str]] = {}
    for obj, key, _old, _new in changes.changed:
        changed.setdefault(obj, []).append(key)
    parts = [f"added {name}" for name in changes.added]
    parts += [f"changed {obj} ({', '.join(keys)})" for obj, keys in changed.items()]
    parts += [f"removed {name}" for name in changes.removed]
    if not parts:
        return "no changes"
    more = len(parts) - limit
    return "; ".join(parts[:limit]) + (f"; and {more} more" if more > 0 else "")
