"""Demand alerts and subscription changes across API processes, over Redis pub/sub.

With several API processes, a producer's alert stream runs on one of them while searches, pipeline gaps and
(un)subscribes go through any of them. Without Redis, each process learns of the others' only from the
database, at its sweep (``demand_alert_sweep_s``, 30 s by default). With ``MLREPO_REDIS_URL`` set, each
process publishes what it logs and every (un)subscribe on one channel, and every process listening for alerts
delivers them at once.

Messages are notifications only: the database stays the truth and the sweep the fallback for a missed
message (Redis restarted, a process subscribed late). Each time the subscription is (re)made the relay
asks for a catch-up sweep, so what was published while it was away arrives then, not a sweep interval
later. An alert arriving both ways (relayed, and found by a sweep) is delivered once: receivers dedupe by
its search id.

A connection can also die without a word: Redis restarted behind a proxy or on another host, a NAT or
firewall forgetting an idle flow. Nothing is read from such a connection and nothing fails, so a
subscriber that only waits for messages stays deaf until its process restarts. So the subscription is
health-checked: after ``health_check_s`` with no traffic it sends a PING, and with no answer within
another ``health_check_s`` it drops the connection and subscribes again (with the catch-up sweep).

The publishing side needs no health check of its own: a publish is a request with an answer, bounded by
``PUBLISH_TIMEOUT_S``. A pooled connection Redis closed is replaced when taken; one that died silently
makes a try time out, and the publish is tried again on a fresh connection within the same bound. When
Redis cannot be reached at all, the publish is logged (a warning once per outage) and dropped; the search
or (un)subscribe that triggered it goes on, and the listeners' sweeps deliver it from the database.

What a listener gets across a gap (an outage, or a dead connection until it is found out): every
no-result search and pipeline gap logged meanwhile by any process, and every (un)subscribe, once the
catch-up sweep (or an earlier periodic sweep) reads them from the database; they arrive late (at most
the detection time, ``2 * health_check_s``, plus the reconnect; or the sweep interval if that is
shorter), oldest first, and not interleaved with the live order of the other processes' messages.
Nothing is lost that reached the database. Lost are only alerts that never do: a search still in
another process's unwritten log batch when that process dies, as without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from catalog.demand_alerts import DemandAlert

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

logger = logging.getLogger("mlrepo.demand")

CHANNEL_PREFIX = "mlrepo:demand:"
# Reconnecting after Redis went away: first wait, doubled each failure up to the cap (a restart takes ~1 s).
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 2.0
# A search or an (un)subscribe never waits longer than this on an unreachable Redis (the sweep covers it).
PUBLISH_TIMEOUT_S = 1.0
# Tries within that time, each on a fresh connection after a failed one: a pooled connection that died
# without a word (NAT, Redis restarted behind a proxy) is only found out by a try that gets no answer.
PUBLISH_TRIES = 2
CONNECT_TIMEOUT_S = 2.0


class RelaySink(Protocol):
    """What the relay hands received messages to (``DemandService``)."""

    def relayed_alerts(self, alerts: list[DemandAlert]) -> None: ...

    async def relayed_refollow(self, account_id: str) -> None: ...

    async def relay_connected(self) -> None: ...


def encode_alert(alert: DemandAlert) -> dict[str, Any]:
    return {
        "search_id": alert.search_id,
        "text": alert.text,
        "category": alert.category,
        "reason": alert.reason,
        "created_at": alert.created_at.isoformat(),
    }


def decode_alert(data: dict[str, Any]) -> DemandAlert:
    return DemandAlert(
        search_id=str(data["search_id"]),
        text=str(data["text"]),
        category=None if data["category"] is None else str(data["category"]),
        reason=str(data["reason"]),
        created_at=datetime.fromisoformat(data["created_at"]),
    )


def _describe(exc: BaseException | None) -> str:
    """An exception for a log line (a timeout's message is empty)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def channel_for(redis_db: int | str) -> str:
    """One channel per Redis database number: pub/sub ignores the number, yet deployments sharing a Redis
    server by using different numbers must not alert each other's producers."""
    return f"{CHANNEL_PREFIX}{redis_db}"


class DemandRelay:
    """One process's end of the demand channel: publishes its own news, receives the others'.

    ``origin`` tells this process's messages apart: it delivered them itself when it logged them.
    ``health_check_s`` (``demand_relay_health_check_s``): how long a quiet subscription waits before a PING,
    and then for its answer.
    """

    def __init__(self, redis_url: str, sink: RelaySink, *, health_check_s: float) -> None:
        from redis.asyncio import Redis

        # No socket timeout: the subscription blocks on reads for as long as nothing is published.
        self.redis = Redis.from_url(redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S)
        self.channel = channel_for(self.redis.connection_pool.connection_kwargs.get("db") or 0)
        self.sink = sink
        self.health_check_s = health_check_s
        self.origin = uuid.uuid4().hex
        self.connected = asyncio.Event()  # set while subscribed (after each catch-up sweep)
        self._listener: asyncio.Task[None] | None = None
        self._publish_failing = False  # warn once per outage, not once per search

    # ------------------------------------------------------------------ publishing

    async def publish_alerts(self, alerts: Iterable[DemandAlert]) -> None:
        encoded = [encode_alert(alert) for alert in alerts]
        if encoded:
            await self._publish({"alerts": encoded})

    async def publish_refollow(self, account_id: str) -> None:
        await self._publish({"refollow": account_id})

    async def _publish(self, payload: dict[str, Any]) -> None:
        """Best effort: a search or an (un)subscribe must not fail because Redis is away.

        A connection Redis closed (CLIENT KILL, a restart) is replaced when taken from the pool; one that
        died silently is found out only by a try that gets no answer, which redis-py then disconnects, so
        the next try connects afresh. A message sent twice (the first answer was only late) is harmless:
        receivers dedupe alerts by search id, and a refollow reads the database again."""
        message = json.dumps({"origin": self.origin, **payload})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_TIMEOUT_S
        failure: Exception | None = None
        for tries_left in range(PUBLISH_TRIES, 0, -1):
            try:
                budget = max(deadline - loop.time(), 0.0) / tries_left
                await asyncio.wait_for(self.redis.publish(self.channel, message), budget)
            except Exception as exc:  # any Redis failure: again on a fresh connection, else the sweep
                failure = exc
            else:
                if failure is not None:
                    logger.info("relayed demand news on a fresh Redis connection (%s)", _describe(failure))
                self._publish_failing = False
                return
        log = logger.debug if self._publish_failing else logger.warning
        log("could not relay demand news over Redis (the sweep will): %s", _describe(failure))
        self._publish_failing = True

    # ------------------------------------------------------------------ receiving

    def start(self) -> None:
        """Subscribe in the background (idempotent); reconnects with backoff until ``close``."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen_forever())

    async def _listen_forever(self) -> None:
        delay = RECONNECT_FIRST_S
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self._catch_up()
                self.connected.set()
                delay = RECONNECT_FIRST_S
                await self._receive_while_alive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: retry; the sweep covers the gap
                log = logger.warning if delay == RECONNECT_FIRST_S else logger.debug  # once per outage
                log("demand relay lost Redis (%s); reconnecting in %.1f s", exc, delay)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _receive_while_alive(self, pubsub: PubSub) -> None:
        """Hand on messages until the connection fails, or goes silent: quiet for ``health_check_s``, it
        is pinged; quiet as long again after that, it is dead (raises ``ConnectionError``). Redis answers a
        PING in subscribed mode with a ``pong`` message, on the same connection as the messages."""
        loop = asyncio.get_running_loop()
        heard_at = loop.time()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self.health_check_s)
            now = loop.time()
            if message is not None:
                heard_at, pinged = now, False
                if message.get("type") == "message":
                    await self._receive(message["data"])
                continue
            if now - heard_at < self.health_check_s:
                continue  # a subscribe confirmation, or woken early: not quiet long enough yet
            if pinged:
                raise ConnectionError(f"no answer from Redis within {self.health_check_s:g} s of a PING")
            await asyncio.wait_for(pubsub.ping(), self.health_check_s)
            pinged = True

    async def _catch_up(self) -> None:
        """What was published while this process was not subscribed is in the database: sweep it now."""
        try:
            await self.sink.relay_connected()
        except Exception:
            logger.exception("demand catch-up sweep failed; the periodic sweep retries")

    async def _receive(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
            if message.get("origin") == self.origin:
                return  # delivered here when it was logged
            if "alerts" in message:
                self.sink.relayed_alerts([decode_alert(alert) for alert in message["alerts"]])
            if "refollow" in message:
                await self.sink.relayed_refollow(str(message["refollow"]))
        except Exception:  # one bad message or a database hiccup must not end the subscription
            logger.exception("could not handle a relayed demand message")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        await self.redis.aclose()
