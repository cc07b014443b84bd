"""Redis commands asked for in one turn of the event loop, sent to Redis in one round trip.

redis-py's work per command is most of what a command costs the gateway: a pooled connection
taken and health-checked, a write, a read under a timeout, its retry wrapper. Under load the
requests of one loop turn reach the rate-limit stage (one count each) or the response cache's
lookup (one GET each) together, so they share one pipeline; a lone request waits one turn of the
loop (call_soon), nothing more. bench --profile: one command per request put the rate-limit stage
at ~22 % of the event loop on the full pipeline, and the cache lookup at a third of a cache hit.

The pipeline is not a transaction: each command is atomic on its own (a count is one Lua script),
so batching changes no result and keeps limits exact across instances; on a Redis Cluster each
command goes to the master of its key's slot. A failed round trip fails every command of the
batch, and each caller then does what it would have done alone.

On a Cluster, a failed single command marks the client to reload its map of the slots before the
next one; a failed pipeline only does so when the client may retry, which the gateway's clients
may not (routing.redis_topology). So a connection error, a timeout or CLUSTERDOWN closes the
client's connections here, which reloads the map: after a master fails over, the next batch
goes to its promoted replica instead of the dead node, for ever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster

logger = logging.getLogger("portier.redis")

__all__ = ["TurnPipeline"]


class TurnPipeline:
    """The commands of one client (one event loop, one Redis), gathered turn by turn."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()  # referenced until done

    def call(self, *command: Any) -> asyncio.Future[Any]:
        """The command's reply (`call("GET", key)`, `call("EVAL", script, 1, key, arg)`), or its
        error raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._send)
        self._pending.append((command, future))
        return future

    def _send(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._execute(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _execute(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # connection refused, timeout, cluster down...
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            await self._remap_after(exc)
            return
        except BaseException:  # cancelled (the loop is closing): nobody is left to answer
            for _, future in batch:
                future.cancel()
            raise
        failed = None
        for (_, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                failed = reply
            if future.done():  # its request is gone (the client disconnected)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        if failed is not None:
            await self._remap_after(failed)

    async def _remap_after(self, error: Exception) -> None:
        """A Cluster node failed: reload the map of the slots before the next batch."""
        if isinstance(self.client, RedisCluster) and isinstance(
            error, RedisCluster.ERRORS_ALLOW_RETRY
        ):
            try:
                await self.client.aclose()  # the next command starts with a fresh map
            except Exception as exc:  # the nodes are what is failing: the map reloads anyway
                logger.debug("closing the cluster client after %r failed: %r", error, exc)
