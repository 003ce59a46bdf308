"""Live demand alerts across API processes, relayed over a real Redis.

Two catalogs on one database stand for two ``mlrepo serve`` processes: the producer listens on ``a``, the
search or (un)subscribe goes through ``b``. The sweep is set to an hour, so only the relay can explain an
alert that arrives within the test's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import httpx
import pytest
from demand_support import People
from silent_proxy import SilentProxy
from starlette.applications import Starlette

from api.app import create_app
from api.context import Context
from api.schema import schema
from catalog.app import CatalogApp
from catalog.demand import DemandService
from catalog.demand_alerts import DemandAlert, DemandAlertHub
from infra.settings import Settings
from infra.tables import utcnow
from search.embeddings import Encoder
from tests.services import free_port, require_service

ALERTS = "subscription { demandAlerts { id text category reason } }"
SEARCH = "query($t: String!, $c: String) { search(input: {text: $t, category: $c}) { totalCount } }"
SUBSCRIBE = "mutation($c: String!) { subscribeDemand(category: $c) { category } }"
UNSUBSCRIBE = "mutation($c: String!) { unsubscribeDemand(category: $c) }"

T = TypeVar("T")
ALERT_TIMEOUT_S = 10
STARTUP_TIMEOUT_S = 20


@contextlib.asynccontextmanager
async def two_processes(
    settings: Settings,
    redis_url: str,
    encoder: Encoder,
    listener_update: dict[str, object] | None = None,
    publisher_update: dict[str, object] | None = None,
) -> AsyncIterator[tuple[CatalogApp, CatalogApp]]:
    """``listener_update``, ``publisher_update``: settings of ``a`` or ``b`` only (another way to reach
    Redis, a health check interval)."""
    relayed = settings.model_copy(update={"redis_url": redis_url, "demand_alert_sweep_s": 3600})
    a = await CatalogApp.open(
        relayed.model_copy(update=listener_update or {}), encoder=encoder, with_index=False
    )
    b = await CatalogApp.open(
        relayed.model_copy(update=publisher_update or {}), encoder=encoder, with_index=False
    )
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()


@contextlib.asynccontextmanager
async def listening(demand: DemandService, stream: AsyncIterator[T]) -> AsyncIterator[asyncio.Queue[T]]:
    """Drain ``stream`` (alerts, or GraphQL results) into a queue while the block runs, once it listens and
    the relay is subscribed."""
    received: asyncio.Queue[T] = asyncio.Queue()

    async def drain() -> None:
        async for alert in stream:
            received.put_nowait(alert)

    task = asyncio.ensure_future(drain())
    try:
        await relay_subscribed(demand)
        yield received
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await stream.aclose()  # type: ignore[attr-defined]


async def relay_subscribed(demand: DemandService) -> None:
    async def ready() -> None:
        while not demand.alert_hub.listener_count or demand.relay is None:
            await asyncio.sleep(0.01)
        await demand.relay.connected.wait()

    await asyncio.wait_for(ready(), STARTUP_TIMEOUT_S)


async def next_alert(received: asyncio.Queue[T]) -> T:
    return await asyncio.wait_for(received.get(), ALERT_TIMEOUT_S)


async def test_an_alert_logged_on_another_process_arrives_at_once_and_once(
    settings: Settings, redis_url: str, encoder: Encoder, people: People
) -> None:
    async with (
        two_processes(settings, redis_url, encoder) as (a, b),
        listening(a.demand, a.demand.alerts(people.producer, "Audio")) as received,
    ):
        search_id = await b.demand.log_search("transcribe spanish podcasts", result_count=0, category="audio")
        gap_id = await b.demand.log_gap(people.requester, "Audio", "audio@1", "text@1")
        b.demand.log_search_soon("speech to text in basque", result_count=0, category="Audio")
        await b.demand.flush()  # the batched path relays too
        alerts = [await next_alert(received) for _ in range(3)]
        assert [(alert.search_id, alert.reason) for alert in alerts[:2]] == [
            (search_id, "no_results"),
            (gap_id, "pipeline_gap"),
        ]
        assert alerts[2].text == "speech to text in basque"

        assert await a.demand.sweep_expired() == 0  # the sweep finds them in the database: not again
        assert received.empty()


async def test_subscription_changes_on_another_process_change_the_running_stream(
    settings: Settings, redis_url: str, encoder: Encoder, people: People
) -> None:
    async with two_processes(settings, redis_url, encoder) as (a, b):
        await a.demand.subscribe(people.producer, "Audio")
        async with listening(a.demand, a.demand.alerts(people.producer)) as received:
            await b.demand.subscribe(people.producer, "Tabular")
            await b.demand.unsubscribe(people.producer, "Audio")
            churn = await b.demand.log_search("predict customer churn", result_count=0, category="Tabular")
            # Relayed in order: when the alert arrives, ``a`` has taken up both changes.
            assert (await next_alert(received)).search_id == churn

            await a.demand.log_search("transcribe spanish podcasts", result_count=0, category="Audio")
            fraud = await a.demand.log_search("detect card fraud", result_count=0, category="Tabular")
            assert (await next_alert(received)).search_id == fraud  # the unsubscribed Audio one never came


@pytest.fixture
def redis_binary() -> str:
    binary = shutil.which("redis-server")
    require_service("Redis", binary is not None, "redis-server is not installed")
    assert binary is not None
    return binary


class RestartableRedis:
    """A private redis-server on a fixed port, to stop and start again like a restarted Redis."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def restartable_redis(redis_binary: str) -> Iterator[RestartableRedis]:
    server = RestartableRedis(redis_binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_delivery_resumes_after_redis_restarts(
    settings: Settings, restartable_redis: RestartableRedis, encoder: Encoder, people: People
) -> None:
    async with two_processes(settings, restartable_redis.url, encoder) as (a, b):
        relay = a.demand.relay
        assert relay is not None
        async with listening(a.demand, a.demand.alerts(people.producer, "Audio")) as received:
            before = await b.demand.log_search(
                "transcribe spanish podcasts", result_count=0, category="Audio"
            )
            assert (await next_alert(received)).search_id == before

            restartable_redis.stop()
            await asyncio.wait_for(_disconnected(relay.connected), ALERT_TIMEOUT_S)
            # Published into the void (the search is still logged); the catch-up sweep on reconnect has it.
            missed = await b.demand.log_search("speech to text in basque", result_count=0, category="Audio")
            restartable_redis.start()
            await relay_subscribed(a.demand)
            assert (await next_alert(received)).search_id == missed

            after = await b.demand.log_search("podcast chapter detection", result_count=0, category="Audio")
            assert (await next_alert(received)).search_id == after
            assert await a.demand.sweep_expired() == 0
            assert received.empty()


HEALTH_CHECK_S = 0.2


@pytest.mark.parametrize("dies", ["nat-forgets-the-flow", "redis-restarts-behind-a-proxy", "client-killed"])
async def test_delivery_resumes_after_the_subscription_dies_without_a_word(
    settings: Settings, restartable_redis: RestartableRedis, encoder: Encoder, people: People, dies: str
) -> None:
    """A subscription whose connection dies silently (no EOF, no error: a NAT forgetting an idle flow,
    Redis restarted behind a proxy) left the process deaf to relayed alerts until it restarted. The
    health check finds the dead connection and subscribes again; the catch-up sweep brings what was
    published meanwhile. (A killed client connection is seen at once, health check or not.)"""
    proxy = SilentProxy(restartable_redis.port, hold_on_close=dies == "redis-restarts-behind-a-proxy")
    await proxy.start()
    listener = {"redis_url": proxy.url, "demand_relay_health_check_s": HEALTH_CHECK_S}
    try:
        async with two_processes(settings, restartable_redis.url, encoder, listener) as (a, b):
            relay = a.demand.relay
            assert relay is not None
            async with listening(a.demand, a.demand.alerts(people.producer, "Audio")) as received:
                before = await b.demand.log_search("transcribe podcasts", result_count=0, category="Audio")
                assert (await next_alert(received)).search_id == before

                if dies == "client-killed":  # seen at once: the relay is away before ``missed`` is logged
                    await _kill_pubsub_clients(restartable_redis)
                    await asyncio.wait_for(_disconnected(relay.connected), ALERT_TIMEOUT_S)
                    missed = await b.demand.log_search("speech to text", result_count=0, category="Audio")
                else:  # logged while the relay still listens on the dead connection
                    if dies == "nat-forgets-the-flow":
                        proxy.drop_silently()
                    else:
                        restartable_redis.stop()
                        restartable_redis.start()
                    missed = await b.demand.log_search("speech to text", result_count=0, category="Audio")
                    await asyncio.wait_for(_disconnected(relay.connected), ALERT_TIMEOUT_S)
                await relay_subscribed(a.demand)
                assert (await next_alert(received)).search_id == missed  # from the catch-up sweep

                after = await b.demand.log_search("podcast chapters", result_count=0, category="Audio")
                assert (await next_alert(received)).search_id == after  # relayed again
                assert received.empty()
    finally:
        await proxy.close()


async def test_a_quiet_healthy_subscription_is_kept(
    settings: Settings, redis_url: str, encoder: Encoder, people: People
) -> None:
    """The health check's PINGs are answered (a ``pong`` in subscribed mode): a quiet subscription is not
    taken for dead and remade (each time with a catch-up sweep of the database)."""
    listener = {"demand_relay_health_check_s": 0.05}
    async with two_processes(settings, redis_url, encoder, listener) as (a, b):
        relay = a.demand.relay
        assert relay is not None
        async with listening(a.demand, a.demand.alerts(people.producer, "Audio")) as received:
            with pytest.raises(TimeoutError):  # 20 health-check intervals, every one of them quiet
                await asyncio.wait_for(_disconnected(relay.connected), 20 * 0.05)
            after = await b.demand.log_search("transcribe podcasts", result_count=0, category="Audio")
            assert (await next_alert(received)).search_id == after


@pytest.mark.parametrize(
    "drops", ["client-killed", "redis-restarted", "nat-forgets-the-flow", "redis-restarts-behind-a-proxy"]
)
async def test_the_publishing_side_survives_redis_dropping_its_connection(
    settings: Settings, restartable_redis: RestartableRedis, encoder: Encoder, people: People, drops: str
) -> None:
    """The process that logs the search publishes it on a pooled connection. A connection Redis closed
    (CLIENT KILL, a restart) is replaced when taken from the pool; one that died without a word (a NAT
    forgetting the flow, Redis restarted behind a proxy) took the publish's whole time limit, and the
    alert reached the listeners only at their next sweep (30 s by default; an hour here). The publish is
    now tried again on a fresh connection; either way the search that triggered it never fails."""
    proxy = SilentProxy(restartable_redis.port, hold_on_close=drops == "redis-restarts-behind-a-proxy")
    await proxy.start()
    publisher = {"redis_url": proxy.url}
    try:
        async with two_processes(settings, restartable_redis.url, encoder, None, publisher) as (a, b):
            relay = a.demand.relay
            assert relay is not None
            async with listening(a.demand, a.demand.alerts(people.producer, "Audio")) as received:
                before = await b.demand.log_search("transcribe podcasts", result_count=0, category="Audio")
                assert (await next_alert(received)).search_id == before

                if drops == "client-killed":
                    await _kill_clients(restartable_redis, "normal")  # the publisher's, not the subscription
                    assert relay.connected.is_set()
                elif drops == "nat-forgets-the-flow":
                    proxy.drop_silently()
                else:
                    restartable_redis.stop()
                    await asyncio.wait_for(_disconnected(relay.connected), ALERT_TIMEOUT_S)
                    restartable_redis.start()
                    await relay_subscribed(a.demand)  # the listener is back (its catch-up sweep is done)
                after = await b.demand.log_search("speech to text", result_count=0, category="Audio")
                assert (await next_alert(received)).search_id == after
                b.demand.log_search_soon("podcast chapters", result_count=0, category="Audio")
                await b.demand.flush()
                assert (await next_alert(received)).text == "podcast chapters"
                assert received.empty()
    finally:
        await proxy.close()


async def _kill_clients(server: RestartableRedis, kind: str) -> int:
    from redis.asyncio import Redis

    async with Redis.from_url(server.url) as redis:
        return await redis.client_kill_filter(_type=kind)


async def _kill_pubsub_clients(server: RestartableRedis) -> None:
    from redis.asyncio import Redis

    async with Redis.from_url(server.url) as redis:
        assert await redis.client_kill_filter(_type="pubsub") >= 1


async def _disconnected(connected: asyncio.Event) -> None:
    while connected.is_set():
        await asyncio.sleep(0.01)


async def test_a_listener_gets_an_alert_once_however_often_it_is_published() -> None:
    """Relayed, then found again by a sweep whose memory of what it announced was already trimmed: the
    listener itself drops the repeat (by the alert's search id)."""
    hub = DemandAlertHub()
    alert = DemandAlert("search-1", "transcribe podcasts", "Audio", "no_results", utcnow())
    other = DemandAlert("search-2", "speech to text", "Audio", "no_results", utcnow())
    async with hub.listen(["audio"]) as listener:
        for published in (alert, alert, other, alert):
            hub.publish(published)
        assert [listener.queue.get_nowait().search_id for _ in range(listener.queue.qsize())] == [
            "search-1",
            "search-2",
        ]


@contextlib.asynccontextmanager
async def api_app(settings: Settings, encoder: Encoder, name: str) -> AsyncIterator[Starlette]:
    """One API process's app (its own embedded index directory, as ``mlrepo serve`` processes need)."""
    app = create_app(
        settings.model_copy(update={"search_index_dir": settings.data_dir / name}),
        migrate=False,
        encoder=encoder,
    )
    async with app.router.lifespan_context(app):
        yield app


async def graphql(app: Starlette, token: str, query: str, variables: dict[str, object]) -> dict:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mlrepo.test") as http:
        response = await http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
    body = response.json()
    assert response.status_code == 200 and not body.get("errors"), body
    return body["data"]


async def test_graphql_stream_on_one_api_follows_searches_and_subscriptions_made_on_another(
    settings: Settings, redis_url: str, encoder: Encoder
) -> None:
    """End to end: searches and (un)subscribes through API ``b``'s GraphQL reach a ``demandAlerts`` stream
    served by API ``a`` (searches are logged in batches, so this is the path a busy server takes)."""
    relayed = settings.model_copy(update={"redis_url": redis_url, "demand_alert_sweep_s": 3600})
    async with api_app(relayed, encoder, "index-a") as a, api_app(relayed, encoder, "index-b") as b:
        accounts = a.state.services.catalog.accounts
        account = await accounts.create("pat", "producer")
        token = (await accounts.create_token(account.id)).secret
        producer = await accounts.authenticate(token)
        await graphql(a, token, SUBSCRIBE, {"c": "Tabular"})
        demand = a.state.services.catalog.demand
        stream = await schema.subscribe(ALERTS, context_value=Context(a.state.services, producer))
        assert hasattr(stream, "__anext__"), stream
        async with listening(demand, stream) as received:
            await graphql(b, token, SUBSCRIBE, {"c": "Audio"})
            await graphql(b, token, UNSUBSCRIBE, {"c": "Tabular"})
            await graphql(b, token, SEARCH, {"t": "predict customer churn", "c": "Tabular"})
            await graphql(b, token, SEARCH, {"t": "transcribe spanish podcasts", "c": "Audio"})
            result = await next_alert(received)
            assert not result.errors, result.errors
            assert result.data["demandAlerts"]["text"] == "transcribe spanish podcasts"


async def test_deployments_on_other_redis_database_numbers_do_not_alert_each_other(
    settings: Settings, redis_url: str, encoder: Encoder, people: People
) -> None:
    """Pub/sub ignores the Redis database number: deployments sharing a server by number need own channels."""
    other_number = redis_url.rsplit("/", 1)[0] + "/1"
    elsewhere = settings.model_copy(update={"redis_url": other_number})
    async with (
        two_processes(settings, redis_url, encoder) as (a, b),
        await CatalogApp.open(elsewhere, encoder=encoder, with_index=False) as other_deployment,
        listening(a.demand, a.demand.alerts(people.producer, "Audio")) as received,
    ):
        await other_deployment.demand.log_search("not our demand", result_count=0, category="Audio")
        ours = await b.demand.log_search("transcribe spanish podcasts", result_count=0, category="Audio")
        # Published in this order on one server: had the first crossed over, it would arrive first.
        assert (await next_alert(received)).search_id == ours
