"""The declarative document's `defaults:` mapping: the gateway-wide edge settings, the one
GatewayDefaults row (routing.config.edge describes each block).

Unlike the lists, `defaults` is one object that always exists: a key left out takes its built-in
value, as everywhere in the document; `defaults` left out leaves the row as it is, or, with
prune, resets it to the built-in values. The export leaves out the keys at their built-in value,
and the whole mapping when nothing else is left.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from routing.api.document_plan import Planned
from routing.api.document_shape import Field, Kind, _spelling_errors, compact, set_fields
from routing.api.document_spellings import BOOL, CORS_OR_NULL, INT, SECURITY
from routing.models import GatewayDefaults

__all__ = ["DEFAULTS", "defaults_export", "defaults_plan", "defaults_shape_errors"]

SECTION = "defaults"

DEFAULTS = Kind(
    section=SECTION,
    model=GatewayDefaults,
    fields=(
        Field("cors", "cors", CORS_OR_NULL),
        Field("security_headers", "security_headers", SECURITY),
        Field("https_redirect", "https_redirect", BOOL),
        Field("compression", "compression", BOOL),
        Field("compression_min_bytes", "compression_min_bytes", INT),
    ),
    relations={},
    required=(),
    order=("cors", "security_headers", "https_redirect", "compression", "compression_min_bytes"),
)


def defaults_data(defaults: GatewayDefaults) -> dict[str, Any]:
    """Every setting of the row, built-in values included, in the document's order."""
    return {
        field.key: field.spelling.to_doc(getattr(defaults, field.attr)) for field in DEFAULTS.fields
    }


def defaults_export() -> dict[str, Any]:
    """The settings that differ from the built-in values: {} for a gateway never configured."""
    return compact(DEFAULTS, defaults_data(GatewayDefaults.current()))


def defaults_shape_errors(document: dict[str, Any]) -> list[str]:
    """Unknown keys and wrong types of the `defaults` mapping (null reads as {})."""
    value = document.get(SECTION)
    if value is None:
        return []
    spellings = {field.key: field.spelling for field in DEFAULTS.fields}
    return _spelling_errors(SECTION, value, spellings, DEFAULTS.required)


def defaults_plan(document: dict[str, Any], *, prune: bool) -> tuple[Planned | None, list[str]]:
    """The row as the document wants it, beside its current settings, and the model's errors
    under `defaults.<key>`. None when the document leaves it alone: no `defaults`, no prune.
    The document must have passed defaults_shape_errors."""
    if SECTION not in document and not prune:
        return None, []
    row = GatewayDefaults.current()
    current = defaults_data(row)
    set_fields(DEFAULTS, row, document.get(SECTION) or {})
    errors = _clean_errors(row)
    if errors:
        return None, errors
    return Planned(DEFAULTS, SECTION, row, defaults_data(row), current), []


def _clean_errors(row: GatewayDefaults) -> list[str]:
    """The model's own validation (the admin's), each message under the document path."""
    try:
        row.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        errors: list[str] = []
        for attr, messages in exc.message_dict.items():
            key = "" if attr == NON_FIELD_ERRORS else f".{DEFAULTS.field_key(attr)}"
            errors += [f"{SECTION}{key}: {message}" for message in messages]
        return errors
    return []
