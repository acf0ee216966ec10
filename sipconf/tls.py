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
        self._logged: dict[tuple[str, str], float] = {}

    @property
    def port(self) -> int:
        return self.config.port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.bind, self.config.port,
                                                  reuse_address=True, limit=256 * 1024)

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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0]
        pending = self._pending
        if sum(pending.values()) >= MAX_HANDSHAKES or pending.get(host, 0) >= MAX_HANDSHAKES_PER_SOURCE:
            self.handshakes_refused += 1
            self._log_once(host, "limit", "TLS connection from %s refused: too many handshakes in progress", host)
            writer.close()
            return
        pending[host] = pending.get(host, 0) + 1
        timeout = self.config.handshake_timeout
        try:
            # A client that connects and says nothing, or speaks slowly, is cut
            # at the timeout; garbage instead of a ClientHello fails at once.
            await asyncio.wait_for(writer.start_tls(self.context, ssl_handshake_timeout=timeout), timeout + 1)
        except (asyncio.TimeoutError, ssl.SSLError, ConnectionError, OSError) as error:
            self.handshake_failures += 1
            self._log_once(host, "handshake", "TLS handshake with %s:%s failed: %s", host, peer[1],
                           type(error).__name__ if isinstance(error, asyncio.TimeoutError) else error)
            writer.transport.abort()
            return
        finally:
            left = pending.get(host, 1) - 1
            if left:
                pending[host] = left
            else:
                pending.pop(host, None)
        # From here it is a SIP stream like TCP: same framing, limits and parser.
        await self.transport._serve_connection(reader, writer, "TLS")

    def _log_once(self, host: str, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._logged.get((host, kind), -_LOG_INTERVAL) >= _LOG_INTERVAL:
            if len(self._logged) > 10_000:
                self._logged.clear()
            self._logged[(host, kind)] = now
            log.warning(message, *args)

