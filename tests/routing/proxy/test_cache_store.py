"""The cache store's short lock, as instances share it through Redis: held by the request that
took it, released only by that request, so a slow leader's lock that expired and was taken by
another instance is never dropped under that instance's waiters."""

from __future__ import annotations

import asyncio

from routing.proxy.cache_store import close_cache_clients, store_add, store_get, store_release


def run(work):
    async def with_clients():
        try:
            return await work()
        finally:
            await close_cache_clients()

    return asyncio.run(with_clients())


def test_a_lock_is_taken_once_and_released_only_by_its_holder() -> None:
    key = "rc:test:lock-owner:lock"

    async def scenario():
        first = await store_add(key, b"token-a", 5000)
        second = await store_add(key, b"token-b", 5000)
        await store_release(key, b"token-b")  # not its lock: nothing happens
        held = await store_get(key)
        await store_release(key, b"token-a")
        return first, second, held, await store_get(key)

    first, second, held, after = run(scenario)

    assert (first, second) == (True, False)
    assert held == b"token-a"
    assert after is None


def test_a_lock_expires_on_its_own_when_its_holder_is_gone() -> None:
    key = "rc:test:lock-expiry:lock"

    async def scenario():
        await store_add(key, b"token-a", 100)
        await asyncio.sleep(0.3)
        return await store_add(key, b"token-b", 5000), await store_get(key)

    taken, holder = run(scenario)
    assert taken is True and holder == b"token-b"
    run(lambda: store_release(key, b"token-b"))
