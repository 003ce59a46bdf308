"""A TCP proxy in front of a real redis-server that can lose its connections without a word.

A NAT or firewall that forgets an idle flow, or Redis restarted behind a proxy (or on another host), leaves
the client with an open socket on which nothing ever arrives again and nothing fails. A killed local
redis-server cannot show that (the kernel closes its sockets: the client reads EOF at once), so the tests
put this proxy between the relay and Redis. New connections are always forwarded; ``drop_silently`` stops
forwarding on the ones already open while keeping the client's end open, and with ``hold_on_close`` a
server that closes a connection does not close the client's end either.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Flow:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class SilentProxy:
    def __init__(self, target_port: int, *, hold_on_close: bool = False) -> None:
        self.target_port = target_port
        self.hold_on_close = hold_on_close
        self._server: asyncio.Server | None = None
        self._flows: list[_Flow] = []
        self._held: list[asyncio.StreamWriter] = []  # client ends kept open, with nothing behind them
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            server_reader, server = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client.close()  # the server is down: refused, as a client talking to it directly would be
            return
        flow = _Flow(client, server)
        flow.pumps = [
            asyncio.create_task(self._pump(client_reader, server, flow, from_client=True)),
            asyncio.create_task(self._pump(server_reader, client, flow, from_client=False)),
        ]
        self._flows.append(flow)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, flow: _Flow, *, from_client: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        if not from_client and self.hold_on_close:  # the server went away: the client is not told
            self._forget(flow, hold_client=True)
        else:
            self._forget(flow, hold_client=False)

    def drop_silently(self) -> None:
        """Every open connection stops carrying anything, both ways; the clients' ends stay open."""
        for flow in list(self._flows):
            self._forget(flow, hold_client=True)

    def _forget(self, flow: _Flow, *, hold_client: bool) -> None:
        if flow not in self._flows:
            return
        self._flows.remove(flow)
        current = asyncio.current_task()
        for pump in flow.pumps:
            if pump is not current:
                pump.cancel()
        flow.server.close()
        if hold_client:
            self._held.append(flow.client)
        else:
            flow.client.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for flow in list(self._flows):
            self._forget(flow, hold_client=False)
        for client in self._held:
            client.close()
        self._held.clear()
