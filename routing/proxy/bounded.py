"""Reading a body whole without ever holding more than a limit of it: a body transform's request
body (stages/transform.py) and a composite route's backend answers (aggregate.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["read_bounded"]


async def read_bounded(chunks: AsyncIterator[bytes], limit: int, too_large: Exception) -> bytes:
    """All of `chunks` joined, or `too_large` raised the moment they pass `limit` bytes."""
    held: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large
        held.append(chunk)
    return b"".join(held)
