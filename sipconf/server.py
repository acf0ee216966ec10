"""The SIP server: feeds the transport's messages to the transaction layer and
acts as the transaction user (registrar, call control).

Every request path ends in a final response, and every answered call ends in
a BYE (ours or the peer's): no half-open calls.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import random
import time

from mixer.engine import MediaEngine
from mixer.sounds import load_prompts

from . import __version__
from .admin import AdminServer, start_admin
from .call import Call, CallState, Flow
from .cdr import CdrWriter
from .config import Config, digits_of
from .controls import Controls, log_event
from .digest import AuthOutcome, DigestAuthenticator
from .events import EventBus, rfc3339
from .ivr import DigitCollector, digit_from_info
from .metrics import MediaStatsCollector, Metrics
from .ports import RtpPortPool
from .recording import Recordings, RecordingStats
from .registrar import Registrar
from .rooms import ConferenceDirectory
from .routing import ReceptionistDestination, RoomDestination, Router
from .sdp import NoCommonCodec, SdpError, build_answer, parse_sdp, rtpmap_text
from .sdes import SrtpRefused
from .secure_calls import SecureMedia
from .limits import SourceLimits
from .netaddr import bracket, is_wildcard, route_source, sdp_addrtype
from .security import Security, is_scanner
from .sip.dialog import Dialog, new_tag
from .sip.message import Request, Response, SipParseError, make_response, parse_message, serialize
from .sip.transaction import (AckReceived, AckTimeout, ClientTimeout, Destination, Event, RequestReceived,
                              ResponseReceived, Send, ServerTransaction, State, TransactionLayer,
                              response_destination)
from .sip.uri import parse_name_addr
from .tls import TlsListener
from .transport import SipTransport
from .trunk_registration import Registration, TrunkRegistrations
from .wording import plural

log = logging.getLogger("sipconf.server")

ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REGISTER")
ALLOW = ", ".join(ALLOWED_METHODS)
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()
USER_AGENT = f"sipconf/{__version__}"
# How often the same source may fill the log with the same complaint.
LOG_ONCE_INTERVAL = 60.0
SHUTDOWN_GRACE = 3.0


class SipServer:
    def __init__(self, config: Config, *, clock=time.monotonic) -> None:
        self.config = config
        self.clock = clock
        server = config.server
        self.layer = TransactionLayer()
        self.registrar = Registrar()
        self.router = Router(config)
        # A correct answer to a nonce of an earlier run (the server restarted)
        # gets a stale=true challenge rather than a 403, as Asterisk does.
        self.auth = DigestAuthenticator(server.domain, server.digest_algorithms, foreign_nonce_stale=True,
                                        allow_no_qop=True)
        self.ports = RtpPortPool(server.rtp_port_min, server.rtp_port_max)
        self.security = Security(config.security)
        # Trunks (by allow list or by a live registration) get the higher limits.
        self.limits = SourceLimits(is_trusted=lambda host: self._trunk_for_source(host) is not None)
        self.prompts = load_prompts(server.language)
        self.metrics = Metrics()
        self.media: MediaEngine | None = None
        self.conferences: ConferenceDirectory | None = None
        self.controls: Controls | None = None
        self.recordings: Recordings | None = None
        self.admin: AdminServer | None = None  # SPEC 13 [admin], started with the server
        self.events = EventBus()  # SPEC 13 events; the log and call records are subscribers
        self.events.subscribe(log_event)
        self.cdr = CdrWriter(server.cdr_file)
        self.events.subscribe(self.cdr)
        self.calls: dict[str, Call] = {}
        self.transport = SipTransport(server.bind, server.sip_port, self.on_message)
        self.tls: TlsListener | None = None  # [tls] (SPEC 11), opened in start()
        self.secure = SecureMedia()          # SRTP policy, SDES and streams (SPEC 11)
        self._timer_task: asyncio.Task | None = None
        # Trunks with [trunks.register]: we REGISTER to the provider (issue #4).
        self.trunk_registrations = TrunkRegistrations(config, clock=clock, user_agent=USER_AGENT)
        self._registration_task: asyncio.Task | None = None
        self._logged: dict[tuple[str, str], float] = {}
        self._stopping = False

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        server = self.config.server
        sounds = self.config.sounds
        self.media = MediaEngine(server.bind, beep_hz=sounds.join_beep_hz, beep_ms=sounds.join_beep_ms,
                                 leave_beep_hz=sounds.leave_beep_hz, leave_beep_ms=sounds.leave_beep_ms,
                                 talk_threshold_dbfs=server.talk_threshold_dbfs,
                                 max_mix_rate=server.max_mix_rate)
        self.media.start()
        self.conferences = ConferenceDirectory(self.media.new_conference, on_join=self._on_join,
                                               on_end=self._on_conference_end)
        self.recordings = Recordings(config=lambda: self.config, prompts=lambda: self.prompts, media=self.media,
                                     conferences=self.conferences, events=self.events)
        self.controls = Controls(self.events, self.conferences, lambda: self.prompts, self.hang_up,
                                 announce_count=sounds.announce_count)
        self.controls.recorder = self._record_from_controls
        self.events.subscribe(self._recording_changed)
        self.media.on_talk = self.controls.on_talk
        await self.transport.start()
        if self.config.tls is not None:
            self.tls = TlsListener(self.transport, server.bind, self.config.tls)
            await self.tls.start()
        self._timer_task = asyncio.get_running_loop().create_task(self._run_timers())
        if self.trunk_registrations:
            self._registration_task = asyncio.get_running_loop().create_task(
                self.trunk_registrations.run(lambda *item: self._send_registers([item])))
        self.metrics.watch("sipconf_participants", "Callers in a conference now", lambda: self.conferences.participants)
        self.metrics.watch("sipconf_conferences", "Conferences with at least one caller", lambda: self.conferences.conferences)
        self.metrics.watch("sipconf_calls_active", "Calls up now", lambda: len(self.calls))
        self.metrics.watch("sipconf_registrations", "Registered contacts", lambda: self.registrar.count(self.clock()))
        self.metrics.watch("sipconf_rtp_ports_free", "RTP ports free", lambda: self.ports.available)
        self.metrics.collect_from(MediaStatsCollector(lambda: self.media.stats if self.media else None))
        self._watch_secure()
        self.metrics.collect_from(RecordingStats(lambda: self.recordings))
        await self.metrics.serve(server.bind, server.metrics_port, quiet_moment=self.media.after_tick)
        self.admin = await start_admin(self)
        log.info("sipconf listening on %s:%d (UDP, TCP)%s; %s", bracket(server.bind), server.sip_port,
                 f", TLS on {self.tls.port}" if self.tls else "", self.config.summary())

    def _watch_secure(self) -> None:
        counters, m = self.secure.counters, self.metrics
        m.watch_counter("sipconf_srtp_dropped", "SRTP packets dropped (authentication, replay, truncated)",
                        lambda: counters.dropped)
        m.watch_counter("sipconf_srtcp_dropped", "SRTCP packets dropped (authentication, replay, truncated)",
                        lambda: counters.rtcp_dropped)
        m.watch_counter("sipconf_srtp_calls", "Calls answered with SRTP", lambda: self.secure.calls_srtp)
        m.watch_counter("sipconf_tls_handshake_failures", "TLS handshakes failed or timed out",
                        lambda: self.tls.handshake_failures if self.tls else 0)
        m.watch_counter("sipconf_tls_handshakes_refused", "TLS connections refused: too many handshakes",
                        lambda: self.tls.handshakes_refused if self.tls else 0)

    async def shutdown(self) -> None:
        """BYE every call, give the BYEs a moment to be answered, then close."""
        self._stopping = True
        if self.recordings is not None:
            self.recordings.stop_all()  # their threads finish the files while the BYEs go out
        for call in list(self.calls.values()):
            self.hang_up(call, "server shutdown")
        if self._registration_task is not None:
            self._registration_task.cancel()
        self._send_registers(self.trunk_registrations.stop(self.clock()))  # Expires: 0
        deadline = self.clock() + SHUTDOWN_GRACE
        while len(self.layer) and self.layer.has_pending_requests() and self.clock() < deadline:
            await asyncio.sleep(0.05)
        if self._timer_task is not None:
            self._timer_task.cancel()
        if self.admin is not None:
            await self.admin.close()
        if self.tls is not None:
            self.tls.close()
        if self.recordings is not None:
            await self.recordings.wait_closed(1.0)
        self.cdr.close(0.5)
        await self.transport.close()
        if self.media is not None:
            await self.media.close()
        self.metrics.close()

    # Keys a running server cannot take over: its sockets are bound already.
    RESTART_KEYS = ("bind", "sip_port", "metrics_port", "talk_threshold_dbfs", "max_mix_rate")

    def reload(self, config: Config) -> list[str]:
        """Apply a new, valid configuration to the running server (SIGHUP).

        Live: routing (rooms, numbers, receptionist), extensions and their
        passwords, trunks' ``allow`` (per-source limits judge every source
        again), digest realm and algorithms, ``[security]`` numbers (counts
        and bans so far stay), prompt language, ``rtp_timeout``, the RTP port
        range and ``answer_delay_ms``/``advertise`` -- the last four for new
        calls only; calls up keep their room, port and timeout. Not live:
        ``bind``, ``sip_port``, ``metrics_port``, ``[sounds]``, ``[admin]`` and
        ``[trunks.register]``: they keep their running values and are logged
        as needing a restart. Returns those log lines' subjects."""
        old = self.config
        restart = [f"[server] {key}" for key in self.RESTART_KEYS
                   if getattr(old.server, key) != getattr(config.server, key)]
        if old.sounds != config.sounds:
            restart.append("[sounds]")
        if [(t.name, t.register) for t in old.trunks if t.register] != \
                [(t.name, t.register) for t in config.trunks if t.register]:
            restart.append("[trunks.register]")
        if old.admin != config.admin:
            restart.append("[admin]")  # its socket and token are the running server's
        # What cannot change live keeps its running value, so that the server
        # stays consistent (Contact and Via name the port really listened on).
        config = dataclasses.replace(config, sounds=old.sounds, admin=old.admin, server=dataclasses.replace(
            config.server, **{key: getattr(old.server, key) for key in self.RESTART_KEYS}))
        server, old_server = config.server, old.server

        self.config = config
        self.router = Router(config)
        if (server.domain, server.digest_algorithms) != (old_server.domain, old_server.digest_algorithms):
            # Same secret: nonces already handed out stay valid if the realm did not change.
            self.auth = DigestAuthenticator(server.domain, server.digest_algorithms, foreign_nonce_stale=True,
                                            allow_no_qop=True, secret=self.auth._secret)
        self.security.reconfigure(config.security)
        self.limits.reconfigure()  # trust is read from self.config: every source judged again
        if server.language != old_server.language:
            self.prompts = load_prompts(server.language)
        self.cdr.path = server.cdr_file
        if (server.rtp_port_min, server.rtp_port_max) != (old_server.rtp_port_min, old_server.rtp_port_max):
            self.ports = RtpPortPool(server.rtp_port_min, server.rtp_port_max,
                                     in_use=[call.rtp_port for call in self.calls.values()])
        if self.tls is not None and config.tls is not None:
            self.tls.reload(config.tls)  # new certificate for new connections
        elif (self.tls is None) != (config.tls is None):
            restart.append("[tls]")
        for item in restart:
            log.warning("configuration reload: %s changed; it needs a restart (keeping the running value)", item)
        log.info("configuration reloaded: %s; %s", config.summary(),
                 plural(len(self.calls), "call up keeps its settings", "calls up keep their settings"))
        return restart

    async def _run_timers(self) -> None:
        while True:
            now = self.clock()
            deadline = self.layer.next_deadline()
            delay = 0.1 if deadline is None else min(max(deadline - now, 0.0), 0.1)
            await asyncio.sleep(delay)
            try:
                self._flush(self.layer.handle_timers(self.clock()))
            except Exception:
                log.exception("timer handling failed")

    # -- input ----------------------------------------------------------------------

    def on_message(self, data: bytes, source: Destination) -> None:
        try:
            self._on_message(data, source)
        except Exception:
            # Whatever one message does wrong, the server and every other call go on.
            log.exception("message from %s:%d failed", source.host, source.port)

    def _on_message(self, data: bytes, source: Destination) -> None:
        now = self.clock()
        if not data.strip():
            return  # keep-alive
        reason = self.limits.admit(source.host, now)
        if reason is not None:
            # Over its share: dropped before parsing, so a flood costs little.
            self.metrics.sip_dropped.labels(reason).inc()
            self._log_once(source.host, reason, "SIP from %s over its limit (%s): dropping", source.host, reason)
            return
        try:
            message = parse_message(data)
        except SipParseError as error:
            self.metrics.sip_dropped.labels("malformed").inc()
            self._log_once(source.host, "malformed", "malformed SIP from %s:%d: %s",
                           source.host, source.port, error.reason)
            log.debug("malformed datagram from %s:%d: %r", source.host, source.port, data[:2000])
            partial = error.partial
            if isinstance(partial, Request) and partial.method != "ACK":
                try:
                    status = error.status if 400 <= error.status < 600 else 400
                    response = make_response(partial, status, error.reason[:100] or "Bad Request")
                    self._send(response, response_destination(partial, source))
                except Exception:
                    pass  # not routable after all: dropped
            return
        if isinstance(message, Response):
            self._flush(self.layer.receive_response(message, now))
            return
        if is_scanner(message.headers.get("User-Agent")):
            self.metrics.sip_dropped.labels("scanner").inc()
            self._log_once(source.host, "scanner", "scanner %r from %s dropped",
                           message.headers.get("User-Agent"), source.host)
            return
        self._flush(self.layer.receive_request(message, source, now))

    def _flush(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Send):
                self.transport.send(serialize(event.message), event.destination)
            elif isinstance(event, RequestReceived):
                transaction = event.transaction
                host = transaction.source.host
                if not self.limits.may_open(host, self.clock()):
                    self.metrics.sip_dropped.labels("in_flight").inc()
                    self._log_once(host, "in_flight", "too many transactions in flight from %s", host)
                    self._respond(transaction, 503, headers=[("Retry-After", "5")])
                    continue
                self.limits.opened(host, transaction.key, self.clock())
                self._dispatch(transaction)
            elif isinstance(event, AckReceived):
                call = self.calls.get(event.request.call_id)
                if call is not None and event.transaction is not None:
                    call.confirmed()
            elif isinstance(event, AckTimeout):
                call = self.calls.get(event.transaction.request.call_id)
                if call is not None and call.state is CallState.ANSWERED:
                    self.hang_up(call, "no ACK for 200 OK (Timer H)")
            elif isinstance(event, (ResponseReceived, ClientTimeout)) and isinstance(
                    event.transaction.context, Registration):
                self._send_registers(self.trunk_registrations.on_event(event, self.clock()))
            elif isinstance(event, ClientTimeout):
                log.info("call %s: no answer to our %s", event.transaction.request.call_id,
                         event.transaction.method)
            elif isinstance(event, ResponseReceived):
                pass  # answers to our BYE: nothing to do

    def _send(self, message, destination: Destination) -> None:
        self.transport.send(serialize(message), destination)

    def _send_registers(self, requests: list[tuple[Request, Destination, Registration]]) -> None:
        """Our REGISTERs to trunk registrars, each in a client transaction of its own."""
        for request, destination, registration in requests:
            _, events = self.layer.request(request, destination, self.clock(), context=registration)
            self._flush(events)

    def _trunk_for_source(self, host: str):
        """The trunk a request from ``host`` arrives over: a trunk whose ``allow``
        list holds it, or one registered to a registrar at that address."""
        return self.config.is_trunk_source(host) or self.trunk_registrations.trunk_for_source(host, self.clock())

    def _respond(self, transaction: ServerTransaction, status: int, reason: str | None = None, *,
                 to_tag: str | None = None, headers: list[tuple[str, str]] | None = None,
                 body: bytes = b"", content_type: str | None = None) -> None:
        request = transaction.request
        if to_tag is None and status > 100 and not request.to_tag:
            to_tag = self._tag_for(request)
        response = make_response(request, status, reason, to_tag=to_tag, headers=headers or [],
                                 body=body, content_type=content_type)
        response.headers.add("Server", USER_AGENT)
        if status >= 200:
            self.limits.answered(transaction.key)
        self._flush(self.layer.respond(transaction, response, self.clock()))
        if status >= 300 and request.method == "INVITE" and not request.to_tag and status not in (401, 407, 482) \
                and request.call_id not in self.calls:
            self._call_refused(request, status, response.reason)

    def _tag_for(self, request: Request) -> str:
        call = self.calls.get(request.call_id)
        if call is not None and request.method in ("INVITE", "CANCEL"):
            return call.dialog.local_tag
        return new_tag()

    def _log_once(self, host: str, kind: str, message: str, *args) -> None:
        now = self.clock()
        key = (host, kind)
        if now - self._logged.get(key, -LOG_ONCE_INTERVAL) >= LOG_ONCE_INTERVAL:
            self._logged[key] = now
            if len(self._logged) > 10_000:
                self._logged.clear()
            log.warning(message, *args)

    # -- dispatch -------------------------------------------------------------------

    def _dispatch(self, transaction: ServerTransaction) -> None:
        request = transaction.request
        method = request.method
        if self._stopping:
            self._respond(transaction, 503, headers=[("Retry-After", "5")])
            return
        if method not in ALLOWED_METHODS:
            self._respond(transaction, 405, headers=[("Allow", ALLOW)])
            return
        if request.uri[:5].lower() == "sips:" and transaction.source.transport != "TLS" and method != "ACK":
            # RFC 3261 26.2: a sips: URI promises TLS on every hop, which this one is not.
            self._respond(transaction, 416, headers=[("Warning", '399 sipconf "sips: needs SIP over TLS"')])
            return
        if method != "CANCEL":
            unsupported = [ext for ext in request.headers.get_all("Require")
                           if ext.strip().lower() not in SUPPORTED_EXTENSIONS]
            if unsupported:
                self._respond(transaction, 420, headers=[("Unsupported", ", ".join(unsupported))])
                return
        if method == "REGISTER":
            self._register(transaction)
        elif method == "INVITE":
            if request.to_tag:
                self._reinvite(transaction)
            else:
                self._invite(transaction)
        elif method == "CANCEL":
            self._cancel(transaction)
        elif method == "OPTIONS":
            self._options(transaction)
        else:  # BYE, INFO: only inside a dialog
            call = self._dialog_call(request)
            if call is None:
                self._respond(transaction, 481)
            elif not call.dialog.accepts(request):
                self._respond(transaction, 500, "Request Out of Order")
            elif method == "BYE":
                self._respond(transaction, 200)
                self._end(call, "caller hung up (BYE)", outcome="completed")
            else:
                self._info(transaction, call)

    def _dialog_call(self, request: Request) -> Call | None:
        call = self.calls.get(request.call_id)
        if call is None or call.state is CallState.ENDED:
            return None
        if request.to_tag != call.dialog.local_tag:
            return None
        return call

    def _options(self, transaction: ServerTransaction) -> None:
        self._respond(transaction, 200, headers=[
            ("Allow", ALLOW), ("Accept", "application/sdp, application/dtmf-relay, application/dtmf"),
            ("Supported", ""), ("Contact", self._contact(transaction.source, transaction.request.uri)),
        ])

    def _local_address(self, peer: Destination) -> str:
        """What Via, Contact and SDP carry towards ``peer`` (SPEC section 15):
        ``advertise``, else a specific ``bind``, else the address the peer's
        packets arrived on, else (a flow we start) the one that routes to it."""
        server = self.config.server
        return server.address_for(peer.local or route_source(peer.host) or server.bind)

    def _media_bind(self, peer: Destination) -> str | None:
        """Where a call's RTP sockets bind: listening on a wildcard, the local
        address the phone reached (the one the SDP names); else ``bind``."""
        if not is_wildcard(self.config.server.bind):
            return None
        return peer.local or route_source(peer.host)

    def _contact(self, peer: Destination, request_uri: str = "") -> str:
        transport = {"TCP": ";transport=tcp", "TLS": ";transport=tls"}.get(peer.transport, "")
        host = bracket(self._local_address(peer))
        if peer.transport == "TLS" and request_uri[:5].lower() == "sips:":
            # RFC 3261 8.1.1.8 / 12.1.1: a sips: request is answered with a sips: Contact
            return f"<sips:sipconf@{host}:{self._local_port(peer)}>"
        return f"<sip:sipconf@{host}:{self._local_port(peer)}{transport}>"

    def _local_port(self, peer: Destination) -> int:
        """Our port on the peer's transport (Via and Contact)."""
        return self.tls.port if peer.transport == "TLS" and self.tls is not None else self.config.server.sip_port

    # -- authentication -------------------------------------------------------------

    def _authenticate(self, transaction: ServerTransaction, *, proxy: bool, expected_user: str | None) -> str | None:
        """Digest-authenticate the request; answers the challenge or 403 itself
        and returns None, or returns the authenticated extension number."""
        request = transaction.request
        source = transaction.source.host
        now = self.clock()
        challenge_header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        credentials_header = "Proxy-Authorization" if proxy else "Authorization"
        challenge_status = 407 if proxy else 401
        if self.security.source_banned(source):
            self._respond(transaction, 403)
            return None
        credentials = request.headers.get(credentials_header)
        if credentials is None:
            self._respond(transaction, challenge_status,
                          headers=[(challenge_header, c) for c in self.auth.challenges(now)])
            return None

        def password_for(username: str) -> str | None:
            extension = self.config.extension(username)
            return extension.password if extension is not None else None

        result = self.auth.verify(credentials, method=request.method, password_for=password_for, now=now)
        if result.outcome is AuthOutcome.STALE:
            self._respond(transaction, challenge_status,
                          headers=[(challenge_header, c) for c in self.auth.challenges(now, stale=True)])
            return None
        if result.outcome is AuthOutcome.OK and (
                expected_user is None or digits_of(result.username or "") == digits_of(expected_user)):
            return result.username
        self.metrics.auth_failures.inc()
        banned = self.security.auth_failed(source)
        log.warning("call %s: auth failure for %s %r from %s:%d%s", request.call_id, request.method,
                    result.username, source, transaction.source.port, " (source banned)" if banned else "")
        self._respond(transaction, 403)
        return None

    # -- REGISTER -------------------------------------------------------------------

    def _register(self, transaction: ServerTransaction) -> None:
        request = transaction.request
        try:
            aor = parse_name_addr(request.headers.get("To") or "").uri.user or ""
        except ValueError:
            self._respond(transaction, 400, "Bad To")
            return
        user = self._authenticate(transaction, proxy=False, expected_user=aor)
        if user is None:
            return
        source = transaction.source
        outcome = self.registrar.register(aor, request, (source.transport, source.host, source.port), self.clock())
        if outcome.status == 423:
            self._respond(transaction, 423, headers=[("Min-Expires", str(outcome.min_expires))])
        elif outcome.status != 200:
            self._respond(transaction, outcome.status)
        else:
            log.info("register %s: %s from %s:%d over %s", aor, plural(len(outcome.contacts), "contact"),
                     source.host, source.port, source.transport)
            self._respond(transaction, 200, headers=[("Contact", c) for c in outcome.contacts]
                          + [("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))])

    # -- INVITE ---------------------------------------------------------------------

    def _invite(self, transaction: ServerTransaction) -> None:
        request = transaction.request
        source = transaction.source
        call_id = request.call_id
        self._respond(transaction, 100)
        if call_id in self.calls:
            # A new INVITE (new branch) on a Call-ID we already serve: a
            # forked or looped copy; the existing call stays as it is.
            self._respond(transaction, 482, "Loop Detected")
            return
        if self.security.source_banned(source.host):
            self._respond(transaction, 403)
            return
        trunk = self._trunk_for_source(source.host)
        from_user = _from_user(request)
        if trunk is not None:
            caller = f"trunk {trunk.name}: {from_user or 'anonymous'}"
            identity = f"trunk {trunk.name}"
            user = None
        else:
            user = self._authenticate(transaction, proxy=True, expected_user=None)
            if user is None:
                return
            caller = source.host
            identity = f"extension {user}"
        if self.security.caller_banned(caller):
            log.info("call %s: caller %s is banned", call_id, caller)
            self._respond(transaction, 403)
            return

        number, destination = self.router.route(request)
        if destination is None:
            log.info("call %s: %s called unknown number %r", call_id, identity, number)
            self.metrics.calls.labels("not_found").inc()
            self._respond(transaction, 404)
            return
        if not request.body:
            # Delayed offer (INVITE without SDP) is not supported yet.
            self._respond(transaction, 488, headers=[("Warning", '399 sipconf "INVITE without SDP offer not supported"')])
            return
        policy = self.secure.policy_for(self.config, trunk, user)
        try:
            offer = parse_sdp(request.body)
            selection, srtp_keys = self.secure.select(offer, policy, source, call_id,
                                                      supported=self.config.server.codecs)
        except SrtpRefused as refused:
            log.info("call %s: SRTP policy %r: %s", call_id, policy, refused.warning)
            self.metrics.calls.labels("srtp_refused").inc()
            self._respond(transaction, 488, headers=[("Warning", f'399 sipconf "{refused.warning}"')])
            return
        except NoCommonCodec:
            log.info("call %s: no common codec", call_id)
            self.metrics.calls.labels("no_codec").inc()
            self._respond(transaction, 488, headers=[("Warning", '304 sipconf "no common audio codec"')])
            return
        except SdpError as error:
            self._log_once(source.host, "sdp", "call %s: bad SDP from %s: %s", call_id, source.host, error)
            self._respond(transaction, 400, "Bad SDP")
            return

        call = self._new_call(transaction, offer, selection, destination, caller)
        if call is None:
            self._respond(transaction, 503, "No RTP Ports Available", headers=[("Retry-After", "10")])
            return
        self.secure.start(call, srtp_keys, policy)  # SRTP around the endpoint, chosen once
        call.calling, call.called = from_user, number
        call.display_name = _display_name(request, self.config.extension(user) if trunk is None else None)
        self.events.publish("call_started", call_id=call_id, room=call.room.extension if call.room else None,
                            **{"from": from_user, "to": number, "flow": call.flow.value})
        log.info("call %s: new call from %s (%s, %s:%d) to %s -> %s, %s/%d", call_id, from_user, identity,
                 source.host, source.port, number,
                 "room " + call.room.extension if call.room else "receptionist",
                 selection.codec, selection.payload_type)
        delay = self.config.server.answer_delay_ms / 1000
        if delay > 0:
            self._respond(transaction, 180, to_tag=call.dialog.local_tag,
                          headers=[("Contact", self._contact(call.peer, transaction.request.uri))])
            asyncio.get_running_loop().call_later(delay, self._answer_if_ringing, transaction, call, offer)
        else:
            self._answer(transaction, call, offer)

    def _answer_if_ringing(self, transaction: ServerTransaction, call: Call, offer) -> None:
        if call.state is CallState.RINGING:
            self._answer(transaction, call, offer)

    def _new_call(self, transaction, offer, selection, destination, caller: str) -> Call | None:
        request = transaction.request
        assert self.media is not None
        dialog = Dialog.from_invite(request, new_tag())
        flow = Flow.RECEPTIONIST if isinstance(destination, ReceptionistDestination) else Flow.ROOM
        room = destination.room if isinstance(destination, RoomDestination) else None
        rtp_timeout = self.config.server.rtp_timeout  # a reload changes it for new calls only
        # Ports can be held by other programs: try a few before giving up.
        for _ in range(min(8, self.ports.available)):
            port = self.ports.acquire()
            if port is None:
                return None
            call = Call(self, request.call_id, dialog, transaction.source, caller, flow, room, selection, port,
                        sdp_session_id=random.randrange(1, 2**31))
            try:
                call.endpoint = self.media.open_endpoint(
                    port, codec=selection.codec, payload_type=selection.payload_type,
                    telephone_event_pt=selection.telephone_event_pt,
                    remote=(selection.remote_host, selection.remote_port),
                    on_digit=call.feed_digit,
                    rtp_timeout=rtp_timeout,
                    on_timeout=lambda call=call: self.hang_up(call, f"no RTP for {rtp_timeout:g} s"),
                    host=self._media_bind(transaction.source),
                )
            except OSError as error:
                log.warning("RTP port %d unusable (%s); trying another", port, error)
                self.ports.release(port)  # held by another program for now: back at the end of the queue
                continue
            call.digits = DigitCollector(call.endpoint)
            self.calls[call.call_id] = call
            if selection.direction in ("sendonly", "inactive"):
                call.set_hold(True)
            return call
        return None

    def _answer(self, transaction: ServerTransaction, call: Call, offer) -> None:
        body = build_answer(offer, call.selection, address=self._local_address(call.peer),
                            port=call.rtp_port, session_id=call.sdp_session_id, version=call.sdp_version,
                            crypto=self.secure.crypto(call))
        headers = [("Contact", self._contact(call.peer, transaction.request.uri)), ("Allow", ALLOW), ("Supported", "")]
        headers += [("Record-Route", rr) for rr in transaction.request.headers.get_all("Record-Route")]
        call.state = CallState.ANSWERED
        call.answered_at = time.time()
        self._respond(transaction, 200, to_tag=call.dialog.local_tag, headers=headers,
                      body=body, content_type="application/sdp")

    def _reinvite(self, transaction: ServerTransaction) -> None:
        request = transaction.request
        call = self._dialog_call(request)
        if call is None:
            self._respond(transaction, 481)
            return
        if not call.dialog.accepts(request):
            self._respond(transaction, 500, "Request Out of Order")
            return
        earlier = self.layer.earlier_invite(request)
        if earlier is not None:
            # RFC 3261 14.2: an earlier INVITE of this dialog is not finished.
            if earlier.state is State.ACCEPTED:
                # Our 2xx to it still awaits its ACK: that offer/answer is not
                # complete, so this one must wait (as if we had an INVITE pending).
                log.info("call %s: re-INVITE while the 200 to CSeq %d awaits its ACK: 491", request.call_id,
                         earlier.request.cseq[0])
                self._respond(transaction, 491)
            else:
                self._respond(transaction, 500, headers=[("Retry-After", str(random.randint(0, 10)))])
            return
        call.dialog.update_target(request)
        if request.body:
            try:
                offer = parse_sdp(request.body)
                selection, srtp_keys = self.secure.select(offer, call.srtp_policy, transaction.source,
                                                          call.call_id, previous=call.srtp_keys,
                                                          supported=self.config.server.codecs)
            except SrtpRefused as refused:
                self._respond(transaction, 488, headers=[("Warning", f'399 sipconf "{refused.warning}"')])
                return
            except NoCommonCodec:
                self._respond(transaction, 488)
                return
            except SdpError:
                self._respond(transaction, 400, "Bad SDP")
                return
            call.selection = selection
            if call.endpoint is not None:
                call.endpoint.update(codec=selection.codec, payload_type=selection.payload_type,
                                     telephone_event_pt=selection.telephone_event_pt,
                                     remote=(selection.remote_host, selection.remote_port))
            self.secure.rekey(call, srtp_keys)  # a new a=crypto key: new SRTP sessions
            call.set_hold(selection.direction in ("sendonly", "inactive"))
        else:
            offer = None
        call.sdp_version += 1
        if offer is None:
            # An offerless re-INVITE: our 200 carries a fresh offer (sendrecv);
            # the answer in the ACK changes nothing we need.
            offer = parse_sdp(build_answer_as_offer(call))
        self._answer_reinvite(transaction, call, offer)

    def _answer_reinvite(self, transaction, call: Call, offer) -> None:
        body = build_answer(offer, call.selection, address=self._local_address(call.peer),
                            port=call.rtp_port, session_id=call.sdp_session_id, version=call.sdp_version,
                            crypto=self.secure.crypto(call))
        self._respond(transaction, 200, headers=[("Contact", self._contact(call.peer, transaction.request.uri)),
                                                 ("Allow", ALLOW)],
                      body=body, content_type="application/sdp")

    def _cancel(self, transaction: ServerTransaction) -> None:
        invite = self.layer.find_invite(transaction.request)
        if invite is None:
            self._respond(transaction, 481)
            return
        self._respond(transaction, 200)
        if invite.last_response is None or invite.last_response.status < 200:
            self._respond(invite, 487)
            call = self.calls.get(invite.request.call_id)
            if call is not None:
                self._end(call, "cancelled by caller", outcome="cancelled")

    def _info(self, transaction: ServerTransaction, call: Call) -> None:
        request = transaction.request
        content_type = request.content_type
        if content_type in ("application/dtmf-relay", "application/dtmf"):
            digit = digit_from_info(content_type, request.body)
            self._respond(transaction, 200)
            if digit is not None:
                call.feed_digit(digit)
            return
        if not request.body:
            self._respond(transaction, 200)  # an empty INFO is a keep-alive for some phones
            return
        self._respond(transaction, 415, headers=[("Accept", "application/dtmf-relay, application/dtmf")])

    # -- ending calls ---------------------------------------------------------------

    def hang_up(self, call: Call, reason: str) -> None:
        """End a call from our side with a BYE."""
        if not isinstance(call, Call):  # a browser participant (admin/webrtc.py): no SIP
            call.hang_up(reason)
            return
        if call.state is CallState.ENDED:
            return
        if call.state in (CallState.ANSWERED, CallState.CONFIRMED):
            server = self.config.server
            bye = call.dialog.build_request(
                "BYE", via_host=bracket(self._local_address(call.peer)), via_port=self._local_port(call.peer),
                transport=call.peer.transport, contact=self._contact(call.peer),
                extra=[("User-Agent", USER_AGENT), ("Reason", f'SIP;cause=200;text="{reason}"')])
            _, events = self.layer.request(bye, call.peer, self.clock())
            self._flush(events)
        self._end(call, f"{reason}; BYE sent", outcome="hung_up")

    def _end(self, call: Call, reason: str, *, outcome: str) -> None:
        if call.state is CallState.ENDED:
            return
        call.end_reason = reason
        conference = call.conference.id if call.conference is not None else None  # release() forgets it
        call.release()
        self.ports.release(call.rtp_port)
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        self.metrics.calls.labels(outcome).inc()
        log.info("call %s: ended: %s", call.call_id, reason)
        self._publish_call_ended(call, conference, reason)

    # -- events -----------------------------------------------------------------------

    def _on_join(self, room, conference, endpoint, before: int) -> None:
        if self.recordings is not None:
            self.recordings.joined(room, conference, endpoint, before)

    def _on_conference_end(self, room, conference, mixer_conference) -> None:
        if self.recordings is not None:
            self.recordings.conference_ended(room, conference, mixer_conference)

    def _record_from_controls(self, conference, on: bool) -> bool:
        """``*7`` and the admin API (Controls.recorder): the new state."""
        if self.recordings is None:
            return False
        room, conference_id = conference.room.extension, conference.config.id
        if on:
            return self.recordings.start_recording(room, conference_id)
        return self.recordings.stop_recording(room, conference_id)

    def _recording_changed(self, event: dict) -> None:
        """Keeps the controls' ``recording`` flag true to the recorder, also when
        it starts by itself (auto_record) or stops by itself (disk full)."""
        if event["event"] in ("recording_started", "recording_stopped") and self.controls is not None:
            live = self.controls.conference(event["room"], event["conference"])
            if live is not None:
                live.recording = event["event"] == "recording_started"

    def _publish_call_ended(self, call: Call, conference: str | None, reason: str) -> None:
        """``call_ended`` with the call record's fields (sipconf/cdr.py)."""
        end = time.time()
        answered = call.answered_at
        self.events.publish(
            "call_ended", call_id=call.call_id, flow=call.flow.value,
            room=call.room.extension if call.room is not None else None, conference=conference,
            start=rfc3339(call.started_at), answer=rfc3339(answered) if answered is not None else None,
            end=rfc3339(end), duration_s=round(end - answered, 3) if answered is not None else 0.0,
            end_reason=reason, codec=codec_label(call.selection.codec), srtp=call.srtp_keys is not None, moderator=False,
            **{"from": call.calling, "to": call.called})

    def _call_refused(self, request: Request, status: int, reason: str) -> None:
        """An INVITE refused with a final status: a call too (a call record).
        The 401/407 challenge is not: the call goes on with credentials."""
        try:
            number, destination = self.router.route(request)
        except Exception:  # noqa: BLE001 - the response is out; a record is not worth more
            log.exception("call %s: no call record for the refused INVITE", request.call_id)
            return
        now = rfc3339(time.time())
        flow = room = None
        if isinstance(destination, RoomDestination):
            flow, room = Flow.ROOM.value, destination.room.extension
        elif isinstance(destination, ReceptionistDestination):
            flow = Flow.RECEPTIONIST.value
        self.events.publish("call_ended", call_id=request.call_id, flow=flow, room=room, start=now, end=now,
                            duration_s=0.0, end_reason=f"{status} {reason}", srtp=False, moderator=False,
                            **{"from": _from_user(request), "to": number})


def build_answer_as_offer(call: Call) -> bytes:
    """A minimal offer text describing the call's current media, used to
    answer an offerless re-INVITE with the same codec as before."""
    s = call.selection
    formats = f"{s.payload_type}" + (f" {s.telephone_event_pt}" if s.telephone_event_pt is not None else "")
    keys = call.srtp_keys  # SRTP: the peer's current key, so that the answer keeps ours
    addrtype = sdp_addrtype(s.remote_host)
    lines = ["v=0", f"o=- 0 0 IN {addrtype} {s.remote_host}", "s=-", f"c=IN {addrtype} {s.remote_host}", "t=0 0",
             f"m=audio {s.remote_port} {'RTP/AVP' if keys is None else 'RTP/SAVP'} {formats}",
             f"a=rtpmap:{s.payload_type} {rtpmap_text(s.codec)}"]
    if keys is not None:
        lines.append(f"a=crypto:{keys.tag} {keys.suite} inline:{base64.b64encode(keys.remote_key).decode()}")
    if s.telephone_event_pt is not None:
        lines.append(f"a=rtpmap:{s.telephone_event_pt} telephone-event/{s.telephone_event_rate}")
    lines.append("a=sendrecv")
    return ("\r\n".join(lines) + "\r\n").encode()


def codec_label(codec: str) -> str:
    """The SDP encoding name and rate as in ``a=rtpmap`` (SPEC 13)."""
    return {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/8000",
            "OPUS": "opus/48000/2"}.get(codec.upper(), f"{codec}/8000")


def _display_name(request: Request, extension) -> str:
    """The From display name, else the calling extension's configured name
    (shown by the admin API and console); at most 64 characters."""
    try:
        name = parse_name_addr(request.headers.get("From") or "").display_name
    except ValueError:
        name = None
    return (name or (extension.name if extension is not None else "") or "").strip()[:64]


def _from_user(request: Request) -> str | None:
    try:
        return parse_name_addr(request.headers.get("From") or "").uri.user
    except ValueError:
        return None
