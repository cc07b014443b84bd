"""The audit tests' cast: an auditor (staff, in the Auditor group the migration creates), a named
superuser who edits the configuration, and audit rows made to order."""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from accounts.models import User
from audit.models import AuditEntry

_ids = count(1)


def make_entry(**fields: Any) -> AuditEntry:
    """An audit row (allowed GET /admin-api/users by default); not saved."""
    n = next(_ids)
    defaults: dict[str, Any] = {
        "request_id": f"req-{n:04d}",
        "outcome": AuditEntry.Outcome.ALLOWED,
        "method": "GET",
        "path": "/admin-api/users",
        "route": "admin-api",
        "status": 200,
        "auth_method": "jwt",
        "caller_id": "7",
        "caller_email": "ops@example.com",
        "client_ip": "10.0.0.1",
        "latency_ms": 12.5,
    }
    return AuditEntry(**(defaults | fields))


def save_entries(*entries: AuditEntry) -> list[AuditEntry]:
    return AuditEntry.objects.bulk_create(entries)


@pytest.fixture
def auditor() -> User:
    user = User.objects.create_user("audrey", email="audrey@example.com", is_staff=True)
    user.groups.add(Group.objects.get(name="Auditor"))
    return user


@pytest.fixture
def auditor_client(auditor: User) -> Client:
    client = Client()
    client.force_login(auditor)
    return client


@pytest.fixture
def alice() -> User:
    """The superuser whose configuration edits the history must name."""
    return User.objects.create_superuser("alice", email="alice@example.com", password="x")


@pytest.fixture
def alice_client(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client
