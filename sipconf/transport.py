"""The only place that owns SIP sockets: UDP and TCP on one port (asyncio).

It hands raw messages with their source to a callback and sends bytes to a
``Destination``; it knows nothing of SIP beyond TCP framing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Callable

from .sip.message import SipParseError, StreamFramer
from .netaddr import is_ipv6, is_wildcard, mapped, unmap
from .sip.transaction import Destination

log = logging.getLogger("sipconf.transport")

Receiver = Callable[[bytes, Destination], None]

UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_TCP_CONNECTIONS = 1024
MAX_TCP_CONNECTIONS_PER_SOURCE = 32
TCP_IDLE_TIMEOUT = 300.0


# Linux's IP_PKTINFO (the socket module does not name it): the destination
# address of each IPv4 datagram, and the source address to send from.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_ANCILLARY_SIZE = 256
_READS_PER_WAKEUP = 256  # bounded, so a flood cannot hold the event loop


class SipTransport:
    """UDP and TCP on one port.

    With a wildcard ``bind`` (``0.0.0.0`` / ``::``) each datagram's destination
    address is read with IP_PKTINFO / IPV6_PKTINFO and handed on as
    ``Destination.local``, and answers leave from that same address (a phone
    on a multi-homed host expects the address it sent to). TCP connections
    carry their own local address. On ``::`` IPv4 peers are named as plain
    IPv4 (not ``::ffff:``) everywhere above this module.
    """

    def __init__(self, bind: str, port: int, receiver: Receiver) -> None:
        self.bind = bind
        self.port = port
        self.receiver = receiver
        self.wildcard = is_wildcard(bind)
        self._family = socket.AF_INET6 if is_ipv6(bind) else socket.AF_INET
        self._udp: socket.socket | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._connections: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _listening_socket(self, kind: int) -> socket.socket:
        sock = socket.socket(self._family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._family == socket.AF_INET6:
                # "::" serves IPv4 too (dual stack); "::1" and others only IPv6.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if self.wildcard else 1)
            sock.bind((self.bind, self.port))
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        udp = self._listening_socket(socket.SOCK_DGRAM)
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        except OSError:
            pass
        if self.wildcard:
            if self._family == socket.AF_INET6:
                udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self._udp = udp
        loop.add_reader(udp.fileno(), self._read_datagrams)
        tcp = self._listening_socket(socket.SOCK_STREAM)
        self._tcp_server = await asyncio.start_server(self._serve_connection, sock=tcp, limit=256 * 1024)

    def _read_datagrams(self) -> None:
        udp = self._udp
        if udp is None:
            return
        local = "" if self.wildcard else self.bind
        for _ in range(_READS_PER_WAKEUP):
            try:
                if self.wildcard:
                    data, ancillary, _flags, addr = udp.recvmsg(65535, _ANCILLARY_SIZE)
                    local = _pktinfo_address(ancillary)
                else:
                    data, addr = udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # ICMP port unreachable from a phone that went away: nothing to do.
                log.debug("UDP error: %s", error)
                continue
            self.receiver(data, Destination("UDP", unmap(addr[0]), addr[1], local))

    async def close(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
        for writer in list(self._connections.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._udp is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None

    def send(self, data: bytes, destination: Destination) -> None:
        if destination.transport == "UDP":
            if self._udp is not None:
                self._send_datagram(data, destination)
            return
        writer = self._connections.get((destination.host, destination.port))
        if writer is None or writer.is_closing():
            # RFC 3261 18.2.2: we could open a new connection to the peer; a desk
            # phone's ephemeral TCP port does not listen, so log and drop.
            log.info("no TCP connection to %s:%s; message dropped", destination.host, destination.port)
            return
        writer.write(data)

    def _send_datagram(self, data: bytes, destination: Destination) -> None:
        assert self._udp is not None
        host = destination.host
        if self._family == socket.AF_INET6:
            host = mapped(host)
        try:
            if self.wildcard and destination.local:
                # Leave from the address the peer sent to (multi-homed hosts).
                self._udp.sendmsg([data], [_pktinfo_for(destination.local, self._family)], 0,
                                  (host, destination.port))
            else:
                self._udp.sendto(data, (host, destination.port))
        except (BlockingIOError, InterruptedError):
            # Socket buffer full: UDP SIP is retransmitted by the transaction layer.
            log.debug("UDP send to %s:%d would block; dropped", destination.host, destination.port)
        except OSError as error:
            log.debug("UDP send to %s:%d failed: %s", destination.host, destination.port, error)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                transport: str = "TCP") -> None:
        # transport: "TLS" when sipconf.tls hands over a connection after its handshake
        peername = writer.get_extra_info("peername")
        peer = (unmap(peername[0]), peername[1])
        sockname = writer.get_extra_info("sockname")
        local = unmap(sockname[0]) if sockname else ""
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
        source = Destination(transport, peer[0], peer[1], local)
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


def _pktinfo_address(ancillary: list[tuple[int, int, bytes]]) -> str:
    """The destination address of a datagram from its IP(V6)_PKTINFO message."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 16:
            return unmap(socket.inet_ntop(socket.AF_INET6, data[:16]))
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
            return socket.inet_ntop(socket.AF_INET, data[8:12])
    return ""


def _pktinfo_for(local: str, family: int) -> tuple[int, int, bytes]:
    """Ancillary data choosing the source address of a datagram we send."""
    if family == socket.AF_INET6:
        # struct in6_pktinfo { in6_addr addr; unsigned ifindex; } (ifindex 0: any)
        return (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                socket.inet_pton(socket.AF_INET6, mapped(local)) + struct.pack("@I", 0))
    return (socket.IPPROTO_IP, IP_PKTINFO, struct.pack("@i4s4s", 0, socket.inet_aton(local), bytes(4)))
