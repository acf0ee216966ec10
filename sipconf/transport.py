"""The only place that owns SIP sockets: UDP and TCP on one port (asyncio).

It hands raw messages with their source to a callback and sends bytes to a
``Destination``; it knows nothing of SIP beyond TCP framing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Callable

from .sip.message import SipParseError, StreamFramer
from .sip.transaction import Destination

log = logging.getLogger("sipconf.transport")

Receiver = Callable[[bytes, Destination], None]

UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_TCP_CONNECTIONS = 1024
MAX_TCP_CONNECTIONS_PER_SOURCE = 32
TCP_IDLE_TIMEOUT = 300.0


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.receiver(data, Destination("UDP", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a phone that went away: nothing to do.
        log.debug("UDP error: %s", exc)


class SipTransport:
    def __init__(self, bind: str, port: int, receiver: Receiver) -> None:
        self.bind = bind
        self.port = port
        self.receiver = receiver
        self._udp: _UdpProtocol | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._connections: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        except OSError:
            pass
        sock.bind((self.bind, self.port))
        _, protocol = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self.receiver), sock=sock)
        self._udp = protocol
        self._tcp_server = await asyncio.start_server(
            self._serve_connection, self.bind, self.port, reuse_address=True, limit=256 * 1024)

    async def close(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
        for writer in list(self._connections.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()

    def send(self, data: bytes, destination: Destination) -> None:
        if destination.transport == "UDP":
            if self._udp is not None and self._udp.transport is not None:
                self._udp.transport.sendto(data, (destination.host, destination.port))
            return
        writer = self._connections.get((destination.host, destination.port))
        if writer is None or writer.is_closing():
            # RFC 3261 18.2.2: we could open a new connection to the peer; a desk
            # phone's ephemeral TCP port does not listen, so log and drop.
            log.info("no TCP connection to %s:%s; message dropped", destination.host, destination.port)
            return
        writer.write(data)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                transport: str = "TCP") -> None:
        # transport: "TLS" when sipconf.tls hands over a connection after its handshake
        peer = writer.get_extra_info("peername")
        key = (peer[0], peer[1])
        same_source = sum(1 for host, _ in self._connections if host == peer[0])
        if len(self._connections) >= MAX_TCP_CONNECTIONS or same_source >= MAX_TCP_CONNECTIONS_PER_SOURCE:
            log.warning("%s connection from %s refused: too many connections", transport, peer[0])
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._connections[key] = writer
        framer = StreamFramer()
        source = Destination(transport, peer[0], peer[1])
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), TCP_IDLE_TIMEOUT)
                if not data:
                    break
                try:
                    messages = framer.feed(data)
                except SipParseError as error:
                    log.warning("%s stream from %s:%s closed: %s", transport, peer[0], peer[1], error)
                    break
                for message in messages:
                    self.receiver(message, source)
        except (asyncio.TimeoutError, ConnectionError, OSError):  # OSError: ssl.SSLError on TLS
            pass
        finally:
            self._connections.pop(key, None)
            writer.close()
            if task is not None:
                self._tasks.discard(task)
