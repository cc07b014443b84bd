"""Log lines' times: the text cached per second reads exactly as datetime writes it, on the
instants where float rounding makes the two easiest to tell apart."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from gateway_site.logs import _iso_time


@pytest.mark.parametrize(
    "created",
    [1796589704.3029995, 1796589746.1099994, 1796589667.123, 1796589667.9999996, 0.0005, 1.0],
)
def test_a_lines_time_reads_as_datetime_writes_it(created: float) -> None:
    record = logging.makeLogRecord({})
    record.created = created

    expected = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    assert _iso_time(record) == expected
    assert _iso_time(record) == expected  # again, from the second's cached text
