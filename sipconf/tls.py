"""SIP over TLS (RFC 3261 26, SPEC 11): the ``[tls]`` table's checks and the
TLS listener.

The listener accepts TCP on ``[tls] port``, does the TLS handshake itself
(bounded in time and in number, so that clients that connect and say
nothing, or send garbage instead of a ClientHello, cost little and are
dropped), then hands the connection to ``SipTransport``'s TCP connection
handling: the same framing, limits, idle timeout, parser, transactions and
bans as TCP, with ``TLS`` as the transport name. Requests we send in a
dialog go back over the phone's connection (the transport finds it by the
peer's address), as for TCP.

SIGHUP builds a new server context from the files: new connections get the
new certificate; connections up keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass

from .transport import SipTransport

log = logging.getLogger("sipconf.tls")

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
MAX_HANDSHAKES = 256            # TLS handshakes in progress at once ...
MAX_HANDSHAKES_PER_SOURCE = 16  # ... and from one address
_LOG_INTERVAL = 60.0


@dataclass(frozen=True)
class TlsConfig:
    port: int
    cert: str
    key: str
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context: TLS 1.2 and 1.3 only, the system's default ciphers.
    Raises OSError/ssl.SSLError/ValueError when the files are not usable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # An encrypted key would make OpenSSL prompt on the terminal: refuse instead.
    context.load_cert_chain(cert, key, password=_no_password)
    return context


def _no_password() -> bytes:
    raise ValueError("the private key is encrypted (give sipconf an unencrypted key file)")


def tls_file_problems(cert: str, key: str, where: str = "[tls]") -> list[str]:
    """What is wrong with the certificate and key files, each problem naming
    the key of the table; [] when they load and match."""
    problems: list[str] = []
    for name, path, marker in (("cert", cert, b"-----BEGIN CERTIFICATE-----"),
                               ("key", key, b"PRIVATE KEY-----")):
        try:
            with open(path, "rb") as f:
                text = f.read(1 << 20)
        except FileNotFoundError:
            problems.append(f"{where} {name}: {path}: no such file")
            continue
        except IsADirectoryError:
            problems.append(f"{where} {name}: {path}: is a directory")
            continue
        except OSError as error:
            problems.append(f"{where} {name}: {path}: cannot read: {error.strerror or error}")
            continue
        if b"-----BEGIN " not in text:
            problems.append(f"{where} {name}: {path}: not a PEM file (no -----BEGIN line)")
        elif marker not in text:
            want = "a certificate" if name == "cert" else "a private key"
            problems.append(f"{where} {name}: {path}: PEM file without {want}")
    if problems:
        return problems
    try:
        server_context(cert, key)
    except ValueError as error:
        problems.append(f"{where} key: {key}: {error}")
    except ssl.SSLError as error:
        reason = (error.reason or str(error)).upper()
        if "MISMATCH" in reason:
            problems.append(f"{where} key: {key} does not match the certificate {cert}")
        elif "PEM" in reason or "KEY" in reason or "BAD_DECRYPT" in reason:
            problems.append(f"{where} key: {key}: not a usable private key ({error.reason or error})")
        else:
            problems.append(f"{where} cert: {cert}: not a usable certificate ({error.reason or error})")
    except OSError as error:
        problems.append(f"{where} cert: cannot load {cert} / {key}: {error}")
    return problems


class TlsListener:
    """The TLS port. Counts what it refuses for /metrics."""

    def __init__(self, transport: SipTransport, bind: str, config: TlsConfig) -> None:
        self.transport = transport
        self.bind = bind
        self.config = config
        self.context = server_context(config.cert, config.key)
        self.handshake_failures = 0
        self.handshakes_refused = 0
        self._pending: dict[str, int] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._logged: dict[tuple[str, str], float] = {}

    @property
    def port(self) -> int:
        return self.config.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # "::" means every address of both families (as for UDP and TCP):
        # asyncio's host=None listens on IPv4 and IPv6 alike.
        host = None if self.bind == "::" else self.bind
        self._server = await loop.create_server(lambda: _TlsConnection(self), host, self.config.port,
                                                reuse_address=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def reload(self, config: TlsConfig) -> None:
        """New certificate/key (and handshake timeout) for new connections;
        a file that fails to load keeps the running context (logged)."""
        if config.port != self.config.port:
            log.warning("configuration reload: [tls] port changed; it needs a restart (keeping %d)", self.config.port)
        try:
            context = server_context(config.cert, config.key)
        except (OSError, ssl.SSLError, ValueError) as error:
            log.error("configuration reload: TLS certificate not reloaded (%s); keeping the running one", error)
            return
        self.context = context
        self.config = TlsConfig(self.config.port, config.cert, config.key, config.handshake_timeout)
        log.info("TLS certificate reloaded from %s for new connections", config.cert)

    def _admit(self, host: str) -> bool:
        """A new connection may start its handshake (limits like TCP's)."""
        pending = self._pending
        if sum(pending.values()) >= MAX_HANDSHAKES or pending.get(host, 0) >= MAX_HANDSHAKES_PER_SOURCE:
            self.handshakes_refused += 1
            self._log_once(host, "limit", "TLS connection from %s refused: too many handshakes in progress", host)
            return False
        pending[host] = pending.get(host, 0) + 1
        return True

    def _handshake_over(self, host: str, error: str | None, port: int) -> None:
        left = self._pending.get(host, 1) - 1
        if left:
            self._pending[host] = left
        else:
            self._pending.pop(host, None)
        if error is not None:
            self.handshake_failures += 1
            self._log_once(host, "handshake", "TLS handshake with %s:%s failed: %s", host, port, error)

    def _log_once(self, host: str, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._logged.get((host, kind), -_LOG_INTERVAL) >= _LOG_INTERVAL:
            if len(self._logged) > 10_000:
                self._logged.clear()
            self._logged[(host, kind)] = now
            log.warning(message, *args)


class _TlsConnection(asyncio.Protocol):
    """One connection on the TLS port, TLS done with ssl.MemoryBIO on the
    loop's plain TCP transport (the same on asyncio and uvloop, whose
    start_tls lost early ClientHellos and the peer address). After the
    handshake, the plaintext is fed to a StreamReader and the connection is
    served by SipTransport exactly like a TCP one."""

    def __init__(self, listener: TlsListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer: tuple = ("?", 0)
        self.handshaking = True
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = (peer[0], peer[1])
        if not self.listener._admit(self.peer[0]):
            self.handshaking = False
            transport.abort()  # type: ignore[attr-defined]
            return
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl = self.listener.context.wrap_bio(self._in, self._out, server_side=True)
        loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader(limit=256 * 1024, loop=loop)
        self.reader.set_transport(transport)  # back-pressure: pauses reading the socket
        # A client that connects and says nothing, or speaks slowly, is cut here.
        self._timer = loop.call_later(self.listener.config.handshake_timeout, self._fail, "timeout")

    def _fail(self, error: str) -> None:
        if self.handshaking:
            self.handshaking = False
            if self._timer is not None:
                self._timer.cancel()
            self.listener._handshake_over(self.peer[0], error, self.peer[1])
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self._in.write(data)
        if self.handshaking:
            try:
                self.ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, ValueError) as error:
                self._flush()  # the alert, if any
                self._fail(getattr(error, "reason", None) or str(error))
                return
            self.handshaking = False
            self._timer.cancel()
            self.listener._handshake_over(self.peer[0], None, self.peer[1])
            task = asyncio.get_running_loop().create_task(
                self.listener.transport._serve_connection(self.reader, _TlsWriter(self), "TLS"))
            self.listener._tasks.add(task)
            task.add_done_callback(self.listener._tasks.discard)
        while True:
            try:
                chunk = self.ssl.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                self.reader.feed_eof()
                break
            except ssl.SSLError:
                self.reader.feed_eof()
                self.transport.abort()
                break
            if not chunk:
                self.reader.feed_eof()
                break
            self.reader.feed_data(chunk)
        self._flush()  # TLS 1.3 session tickets, key updates

    def write(self, data: bytes) -> None:
        try:
            self.ssl.write(data)
        except ssl.SSLError:
            self.transport.abort()
            return
        self._flush()

    def _flush(self) -> None:
        data = self._out.read()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshaking:
            self._fail("connection closed during the handshake")
        elif hasattr(self, "reader"):
            self.reader.feed_eof()

    def pause_writing(self) -> None:  # a slow reader: SIP messages are small, the kernel buffers them
        pass

    def resume_writing(self) -> None:
        pass


class _TlsWriter:
    """What SipTransport needs of a StreamWriter, over a _TlsConnection."""

    def __init__(self, connection: _TlsConnection) -> None:
        self._connection = connection

    def get_extra_info(self, name: str, default=None):
        if name == "peername":
            return self._connection.peer
        return self._connection.transport.get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        self._connection.write(data)

    def is_closing(self) -> bool:
        return self._connection.transport.is_closing()

    def close(self) -> None:
        connection = self._connection
        if not connection.transport.is_closing():
            try:
                connection.ssl.unwrap()  # close_notify
            except (ssl.SSLError, ValueError):
                pass
            connection._flush()
            connection.transport.close()
