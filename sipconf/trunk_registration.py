"""Registration-based SIP trunks: the bridge REGISTERs to the provider.

Many providers deliver calls only to a registered contact instead of trusting
a fixed source address. For each ``[[trunks]]`` with a ``[trunks.register]``
table the server keeps one binding at the provider's registrar:

- REGISTER ``sip:username@registrar-host`` with our Contact, answering a
  401/407 with digest credentials (the challenge is kept, so refreshes carry
  credentials at once with an increasing nonce count);
- refresh before the expiry the registrar *granted* (its 200's Contact
  ``expires`` or ``Expires``): at the earlier of 90% of it and 30 s before
  it, but never before half of it;
- on failure (403, other final answers, no answer, DNS) retry with
  exponential back-off, 5 s doubling up to 300 s; a success resets it;
- one log line per state change (registered, failed, unregistered), not one
  per refresh or per retry;
- ``Expires: 0`` at shutdown.

``Registration`` is a state machine driven with a ``now`` (sans-IO): it
returns requests to send and is fed responses and timeouts. The server sends
them through its transaction layer; ``TrunkRegistrations`` resolves the
registrar address and polls the machines from one asyncio task.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import socket
import time
from typing import Callable

from .config import Config, TrunkConfig
from .digest import build_authorization, parse_credentials
from .sip.dialog import new_tag, new_token
from .sip.message import Headers, Request, Response
from .sip.transaction import ClientTimeout, Destination, ResponseReceived
from .sip.uri import parse_name_addr, parse_uri
from .netaddr import bracket, is_wildcard, route_source

log = logging.getLogger("sipconf.trunk")

BACKOFF_MIN = 5.0
BACKOFF_MAX = 300.0
# Refresh this long before the binding expires (or at 90% of it, if earlier).
REFRESH_MARGIN = 30.0
# How many challenge/423 rounds one attempt may take before it counts as failed.
MAX_ROUNDS = 3
RESOLVE_TIMEOUT = 10.0
POLL_INTERVAL = 0.25


class RegistrationState(enum.Enum):
    IDLE = "idle"                    # not started yet
    REGISTERING = "registering"      # first attempt (or one after a failure) in flight
    REGISTERED = "registered"        # binding up (a refresh may be in flight)
    FAILED = "failed"                # waiting to retry
    UNREGISTERING = "unregistering"  # Expires: 0 in flight
    STOPPED = "stopped"


def refresh_delay(granted: float) -> float:
    """Seconds after a successful REGISTER to refresh a binding granted for ``granted`` s."""
    return max(granted / 2, min(granted * 0.9, granted - REFRESH_MARGIN))


class Registration:
    """One trunk's registration at its provider (sans-IO, driven with ``now``)."""

    def __init__(self, trunk: TrunkConfig, *, contact_host: str, contact_port: int, transport: str = "UDP",
                 user_agent: str = "sipconf", backoff_min: float = BACKOFF_MIN,
                 backoff_max: float = BACKOFF_MAX) -> None:
        assert trunk.register is not None
        self.trunk = trunk
        self.config = trunk.register
        uri = parse_uri(self.config.registrar)
        self.registrar_host = uri.host.strip("[]")
        self.registrar_port = uri.port or 5060
        self.transport = transport
        self.request_uri = f"{uri.scheme}:{uri.hostport}"
        self.aor = f"{uri.scheme}:{self.config.username}@{uri.host}"
        self._contact_host = contact_host
        self._contact_port = contact_port
        self._set_contact(contact_host)
        self.user_agent = user_agent
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        # RFC 3261 10.2: one Call-ID for all registrations of this boot, CSeq increasing.
        self.call_id = new_token()
        self.from_tag = new_tag()
        self.cseq = 0
        self.expires = self.config.expires           # what we ask for (raised by a 423)
        self.state = RegistrationState.IDLE
        self.next_attempt_at: float | None = 0.0     # first attempt at once
        self.expires_at: float | None = None         # when the binding lapses at the registrar
        self.granted: int | None = None
        self.failures = 0
        self.last_failure: str | None = None
        self.destination: Destination | None = None  # resolved registrar address
        self.addresses: frozenset[str] = frozenset()  # its IPs: sources of calls we trust
        self._challenge: tuple[str, str] | None = None  # (Authorization header name, challenge)
        self._nc = 0
        self._in_flight: Request | None = None
        self._rounds = 0
        self._answered_nonce: str | None = None

    @property
    def name(self) -> str:
        return self.trunk.name

    # -- what the driver asks -------------------------------------------------------

    def registered(self, now: float) -> bool:
        """True while the registrar holds our binding (as far as we know)."""
        return self.expires_at is not None and now < self.expires_at

    def trusts(self, host: str, now: float) -> bool:
        """Calls from ``host`` come from this trunk's registrar while we are registered."""
        return host in self.addresses and self.registered(now)

    def _set_contact(self, host: str) -> None:
        self.contact_uri = f"sip:{self.config.username}@{bracket(host)}:{self._contact_port}"
        self.via_sent_by = f"{bracket(host)}:{self._contact_port}"

    def next_deadline(self) -> float | None:
        if self._in_flight is not None or self.state in (RegistrationState.UNREGISTERING,
                                                         RegistrationState.STOPPED):
            return None
        return self.next_attempt_at

    def needs_address(self) -> bool:
        return self.destination is None

    def resolved(self, addresses: list[str]) -> None:
        self.addresses = frozenset(addresses)
        # Our socket is of the bind address's family: prefer an address of that family.
        want_v6 = ":" in self._contact_host
        preferred = [a for a in addresses if (":" in a) == want_v6] or addresses
        self.destination = Destination(self.transport, preferred[0], self.registrar_port)
        if is_wildcard(self._contact_host):
            # We listen everywhere: name the address that routes to the registrar
            # (SPEC section 15), never 0.0.0.0 or ::.
            local = route_source(preferred[0])
            if local is not None:
                self._set_contact(local)
                self.destination = Destination(self.transport, preferred[0], self.registrar_port, local)

    def poll(self, now: float) -> Request | None:
        """A REGISTER to send now (first attempt, refresh or retry), or None."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline or self.destination is None:
            return None
        if self.state is RegistrationState.IDLE:
            self._transition(RegistrationState.REGISTERING, "registering to %s as %s",
                             self.config.registrar, self.config.username)
        # A retry after a failure stays FAILED until it succeeds: one log line per change.
        self._rounds = 0
        self._answered_nonce = None
        return self._build(self.expires)

    def stop(self, now: float) -> Request | None:
        """Shutting down: an ``Expires: 0`` REGISTER if a binding may exist, else None."""
        if self.state in (RegistrationState.STOPPED, RegistrationState.UNREGISTERING):
            return None
        # A REGISTER still in flight may have created a binding too.
        had_binding = self.registered(now) or self._in_flight is not None
        self._in_flight = None
        self.next_attempt_at = None
        if not had_binding or self.destination is None:
            self._transition(RegistrationState.STOPPED)
            return None
        self._transition(RegistrationState.UNREGISTERING)
        self._rounds = 0
        self._answered_nonce = None
        return self._build(0)

    # -- events ---------------------------------------------------------------------

    def on_response(self, response: Response, now: float) -> Request | None:
        """Feed the answer to our REGISTER; returns a follow-up REGISTER to send at once
        (with credentials, or a longer expiry after a 423), or None."""
        try:
            cseq = response.cseq[0]
        except ValueError:
            return None
        if self._in_flight is None or cseq != self.cseq or response.status < 200:
            return None  # provisional, or an answer to a request we gave up on
        self._in_flight = None
        status = response.status
        reason = f"{status} {response.reason}".strip()
        if status in (401, 407):
            follow = self._answer_challenge(response)
            if follow is not None:
                return follow
            if self._answered_nonce is not None:
                reason = f"{reason} (credentials refused)"
        if self.state is RegistrationState.UNREGISTERING:
            self.expires_at = None
            if 200 <= status < 300:
                self._transition(RegistrationState.STOPPED, "unregistered from %s", self.config.registrar)
            else:
                self._transition(RegistrationState.STOPPED, "unregister from %s refused: %s",
                                 self.config.registrar, reason, level=logging.WARNING)
            return None
        if status == 423:
            minimum = _int(response.headers.get("Min-Expires"))
            if minimum is not None and minimum > self.expires and self._rounds < MAX_ROUNDS:
                self._rounds += 1
                self.expires = minimum
                log.info("trunk %s: registrar wants at least %d s; asking for that", self.name, minimum)
                return self._build(self.expires)
        if 200 <= status < 300:
            granted = self._granted_expiry(response)
            if granted <= 0:
                self._failed(now, "registrar granted no binding (expires 0)")
                return None
            self.granted = granted
            self.expires_at = now + granted
            self.next_attempt_at = now + refresh_delay(granted)
            self.failures = 0
            self.last_failure = None
            if not self._transition(RegistrationState.REGISTERED,
                                    "registered to %s as %s (expires %d s, refresh in %.0f s)",
                                    self.config.registrar, self.config.username, granted,
                                    self.next_attempt_at - now):
                log.debug("trunk %s: registration refreshed (expires %d s)", self.name, granted)
            return None
        self._failed(now, reason, retry_after=_int(response.headers.get("Retry-After")))
        return None

    def on_timeout(self, now: float) -> None:
        """Our REGISTER got no final answer (Timer F)."""
        if self._in_flight is None:
            return
        self._in_flight = None
        if self.state is RegistrationState.UNREGISTERING:
            self._transition(RegistrationState.STOPPED, "no answer to unregister from %s",
                             self.config.registrar, level=logging.WARNING)
            return
        # The registrar may have moved: resolve its name again before the retry.
        self.destination = None
        self._failed(now, "no answer from registrar")

    def on_resolve_error(self, now: float, error: str) -> None:
        self._failed(now, f"cannot resolve {self.registrar_host}: {error}")

    # -- internals ------------------------------------------------------------------

    def _failed(self, now: float, reason: str, *, retry_after: int | None = None) -> None:
        self.failures += 1
        delay = min(self.backoff_min * 2 ** (self.failures - 1), self.backoff_max)
        if retry_after is not None and retry_after > 0:
            delay = min(max(delay, float(retry_after)), self.backoff_max)
        self.next_attempt_at = now + delay
        self._challenge = None
        if not self._transition(RegistrationState.FAILED, "registration to %s failed: %s; retrying in %.0f s",
                                self.config.registrar, reason, delay, level=logging.WARNING):
            if reason != self.last_failure:
                log.warning("trunk %s: registration to %s failed: %s; retrying in %.0f s", self.name,
                            self.config.registrar, reason, delay)
            else:
                log.debug("trunk %s: registration still failing (%s, attempt %d); retrying in %.0f s",
                          self.name, reason, self.failures, delay)
        self.last_failure = reason

    def _transition(self, state: RegistrationState, message: str | None = None, *args,
                    level: int = logging.INFO) -> bool:
        """Enter ``state``; log ``message`` only when the state really changes."""
        if state is self.state:
            return False
        self.state = state
        if message is not None:
            log.log(level, "trunk %s: " + message, self.name, *args)
        return True

    def _answer_challenge(self, response: Response) -> Request | None:
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        credentials = "Authorization" if response.status == 401 else "Proxy-Authorization"
        if self._rounds >= MAX_ROUNDS:
            return None
        for challenge in response.headers.get_fields(header):
            try:
                params = parse_credentials(challenge)
            except ValueError:
                continue
            nonce = params.get("nonce")
            stale = params.get("stale", "").lower() == "true"
            if nonce is not None and nonce == self._answered_nonce and not stale:
                return None  # we answered this very nonce: the password is wrong
            try:
                build_authorization(challenge, username=self.config.username, password=self.config.password,
                                    method="REGISTER", uri=self.request_uri)
            except ValueError:
                continue  # an algorithm or qop we cannot answer: try the next challenge
            self._challenge = (credentials, challenge)
            self._nc = 0
            self._rounds += 1
            self._answered_nonce = nonce
            expires = 0 if self.state is RegistrationState.UNREGISTERING else self.expires
            return self._build(expires)
        return None

    def _build(self, expires: int) -> Request:
        self.cseq += 1
        headers = Headers()
        headers.add("Via", f"SIP/2.0/{self.transport} {self.via_sent_by};branch=z9hG4bK{new_token()};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self.aor}>;tag={self.from_tag}")
        headers.add("To", f"<{self.aor}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq} REGISTER")
        headers.add("Contact", f"<{self.contact_uri}>")
        headers.add("Expires", str(expires))
        if self._challenge is not None:
            name, challenge = self._challenge
            self._nc += 1
            try:
                headers.add(name, build_authorization(
                    challenge, username=self.config.username, password=self.config.password,
                    method="REGISTER", uri=self.request_uri, nc=self._nc))
            except ValueError:
                self._challenge = None
        headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO")
        headers.add("User-Agent", self.user_agent)
        request = Request("REGISTER", self.request_uri, headers)
        self._in_flight = request
        return request

    def _granted_expiry(self, response: Response) -> int:
        """The expiry of our binding in a 2xx: our Contact's ``expires``, else ``Expires``,
        else what we asked for (RFC 3261 10.2.4)."""
        ours = parse_uri(self.contact_uri)
        for value in response.headers.get_all("Contact"):
            try:
                contact = parse_name_addr(value)
            except ValueError:
                continue
            uri = contact.uri
            if (uri.user == ours.user and uri.host.lower() == ours.host.lower()
                    and (uri.port or 5060) == ours.port):
                granted = _int(contact.params.get("expires"))
                if granted is not None:
                    return granted
        granted = _int(response.headers.get("Expires"))
        return granted if granted is not None else self.expires


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.split(";", 1)[0].strip()
    return int(text) if text.isdecimal() else None


# --------------------------------------------------------------------------- driver


Sender = Callable[[Request, Destination, Registration], None]


class TrunkRegistrations:
    """Every trunk registration of a configuration, polled from one task."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic,
                 user_agent: str = "sipconf", **backoff) -> None:
        server = config.server
        self.clock = clock
        self.registrations = [
            Registration(trunk, contact_host=server.advertised_address, contact_port=server.sip_port,
                         user_agent=user_agent, **backoff)
            for trunk in config.trunks if trunk.register is not None
        ]
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self.registrations)

    def trunk_for_source(self, host: str, now: float) -> TrunkConfig | None:
        """The trunk whose registrar ``host`` is, while that registration is up."""
        for registration in self.registrations:
            if registration.trusts(host, now):
                return registration.trunk
        return None

    def on_event(self, event: ResponseReceived | ClientTimeout, now: float) -> list[tuple[Request, Destination, Registration]]:
        """Feed an answer or timeout of a REGISTER; the follow-up requests to send."""
        registration = event.transaction.context
        assert isinstance(registration, Registration)
        if isinstance(event, ClientTimeout):
            registration.on_timeout(now)
            self._wake.set()
            return []
        follow = registration.on_response(event.response, now)
        self._wake.set()
        if follow is not None and registration.destination is not None:
            return [(follow, registration.destination, registration)]
        return []

    def stop(self, now: float) -> list[tuple[Request, Destination, Registration]]:
        out = []
        for registration in self.registrations:
            request = registration.stop(now)
            if request is not None and registration.destination is not None:
                out.append((request, registration.destination, registration))
        return out

    async def run(self, send: Sender) -> None:
        """Poll every registration until cancelled (the server's shutdown cancels it)."""
        while True:
            now = self.clock()
            for registration in self.registrations:
                deadline = registration.next_deadline()
                if deadline is None or now < deadline:
                    continue
                if registration.needs_address():
                    try:
                        registration.resolved(await _resolve(registration.registrar_host,
                                                             registration.registrar_port))
                    except (OSError, asyncio.TimeoutError) as error:
                        registration.on_resolve_error(self.clock(), str(error) or type(error).__name__)
                        continue
                request = registration.poll(self.clock())
                if request is not None and registration.destination is not None:
                    try:
                        send(request, registration.destination, registration)
                    except Exception:
                        log.exception("trunk %s: sending REGISTER failed", registration.name)
                        registration.on_timeout(self.clock())
            deadlines = [d for d in (r.next_deadline() for r in self.registrations) if d is not None]
            delay = POLL_INTERVAL if not deadlines else min(max(min(deadlines) - self.clock(), 0.0), POLL_INTERVAL)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(delay, 0.01))
            except asyncio.TimeoutError:
                pass


async def _resolve(host: str, port: int) -> list[str]:
    """The registrar's addresses (A/AAAA; no SRV/NAPTR)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT)
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    if not addresses:
        raise OSError("no address")
    return addresses
