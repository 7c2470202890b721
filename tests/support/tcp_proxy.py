"""A TCP proxy for fault tests: forwards to one server and, on request, breaks the connections.

`reset()` closes every open connection with a TCP reset (what a crashed middlebox or a killed
server looks like); `refuse()` does too, and resets every new connection until `restore()` (a
server that keeps crashing); `blackhole()` keeps connections open but forwards nothing either
way, and new connections are accepted and then ignored (a network that drops packets);
`restore()` forwards again. It runs its own event loop in a daemon thread, so blocking test code
can drive it. It listens on a free port, or on a given one: a Kafka client must reach the proxy
at the port the broker advertises (hack/stack/kafka.py).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hack.stack.process import free_ports

_CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_ports(1)[0]
        self.connections = 0  # accepted so far
        self._forwarding = True
        self._refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tcp-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the TCP proxy did not start listening on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        """Every open connection ends with a TCP reset."""
        self._call(self._reset_all)

    def refuse(self) -> None:
        """Reset every open connection, and every new one until `restore()`."""
        self._call(lambda: self._set(refusing=True))

    def blackhole(self) -> None:
        self._call(lambda: self._set(forwarding=False))

    def restore(self) -> None:
        self._call(self._set)

    def _set(self, *, forwarding: bool = True, refusing: bool = False) -> None:
        self._forwarding, self._refusing = forwarding, refusing
        if refusing:
            self._reset_all()

    def _call(self, action: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._reset_all()
            # Let the connections' tasks end here, not be reported as destroyed while pending.
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._refusing:
            _reset(client_writer)
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(
            self._pump(client_reader, server_writer), self._pump(server_reader, client_writer),
            return_exceptions=True,
        )  # fmt: skip
        for writer in (client_writer, server_writer):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(_CHUNK):
            if self._forwarding:  # a blackhole swallows what it receives
                writer.write(data)
                await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    transport_socket = writer.get_extra_info("socket")
    if transport_socket is not None:
        # Linger 0: close() sends RST instead of FIN.
        transport_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextmanager
def tcp_proxy(target_host: str, target_port: int, port: int | None = None) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_host, target_port, port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
