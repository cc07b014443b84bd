"""The diff between two configuration documents (routing.api.revision_diff): a pure function,
no database."""

from __future__ import annotations

from routing.api.revision_diff import EMPTY_DOCUMENT, changes_summary, document_diff

OLD = {
    "version": 1,
    "services": [{"name": "users", "targets": [{"url": "http://10.0.0.1"}]}],
    "tiers": [{"name": "general", "rate": "100/m"}, {"name": "old", "rate": "1/m"}],
    "routes": [{"name": "users", "service": "users", "path": "/users", "tier": "general"}],
}
NEW = {
    "version": 1,
    "defaults": {"compression": True},
    "services": [
        {"name": "users", "retries": 3, "targets": [{"url": "http://10.0.0.2"}]},
        {"name": "orders", "targets": [{"url": "http://10.0.0.3"}]},
    ],
    "tiers": [{"name": "general", "rate": "100/m"}],
    "routes": [{"name": "users", "service": "users", "path": "/v2/users"}],
}


def test_it_names_the_objects_added_and_removed_and_each_changed_field():
    changes = document_diff(OLD, NEW)
    assert changes.added == ["services/orders"]
    assert changes.removed == ["tiers/old"]
    changed = {(obj, key): (old, new) for obj, key, old, new in changes.changed}
    assert changed[("services/users", "retries")] == (1, 3)
    assert changed[("services/users", "targets")] == (
        [{"url": "http://10.0.0.1"}],
        [{"url": "http://10.0.0.2"}],
    )
    assert changed[("routes/users", "path")] == ("/users", "/v2/users")
    assert changed[("routes/users", "tier")] == ("general", None)  # left out: back to none
    assert changed[("defaults", "compression")] == (False, True)
    assert len(changes.changed) == 5


def test_a_field_left_out_compares_as_its_default():
    explicit = {"version": 1, "tiers": [{"name": "t", "rate": "1/m", "key": "user"}]}
    implicit = {"version": 1, "tiers": [{"name": "t", "rate": "1/m"}]}
    assert document_diff(explicit, implicit).is_empty()


def test_the_same_document_has_no_changes_and_the_reverse_swaps_them():
    assert document_diff(NEW, NEW).is_empty()
    back = document_diff(NEW, OLD)
    assert back.added == ["tiers/old"] and back.removed == ["services/orders"]


def test_the_first_version_is_all_added():
    assert document_diff(EMPTY_DOCUMENT, OLD).added == [
        "services/users",
        "tiers/general",
        "tiers/old",
        "routes/users",
    ]


def test_the_summary_is_one_line_with_the_first_objects():
    summary = changes_summary(document_diff(OLD, NEW))
    assert summary.startswith("added services/orders; changed defaults (compression); ")
    assert "; and 1 more" in summary  # 5 objects, 4 shown
    assert changes_summary(document_diff(OLD, OLD)) == "no changes"
