"""Accounts tests deactivate users and sign them out: the deny-set they publish lives in Redis
and in every process's copy, beyond the test's database rows. Leave it empty after each test, so
a later test's token for a reused user id is not refused."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from django.core.cache import cache

from accounts.denylist import DATA_KEY, VERSION_KEY, deny_set


@pytest.fixture(autouse=True)
def _deny_set_left_empty() -> Iterator[None]:
    yield
    token = uuid.uuid4().hex
    cache.set(DATA_KEY.format(token=token), json.dumps({"inactive": [], "not_before": {}}))
    cache.set(VERSION_KEY, token, None)
    deny_set.refresh()
