"""The trunk registration state machine on a fake clock (no sockets)."""

from __future__ import annotations

import logging

import pytest

from sipconf.config import TrunkConfig, TrunkRegistration
from sipconf.digest import AuthOutcome, DigestAuthenticator
from sipconf.sip.message import make_response, parse_message, serialize
from sipconf.trunk_registration import Registration, RegistrationState, refresh_delay

REALM = "provider.example"


def trunk(expires: int = 3600, registrar: str = "sip:provider.example:5070") -> TrunkConfig:
    return TrunkConfig("provider", (), TrunkRegistration(registrar, "office", "s3cret", expires))


def registration(**kwargs) -> Registration:
    expires = kwargs.pop("expires", 3600)
    reg = Registration(trunk(expires), contact_host="192.0.2.1", contact_port=5060, **kwargs)
    reg.resolved(["198.51.100.7"])
    return reg


class Registrar:
    """The provider's side: challenges with our own DigestAuthenticator and checks the answer."""

    def __init__(self, password: str = "s3cret") -> None:
        self.auth = DigestAuthenticator(REALM, ["MD5"])
        self.password = password

    def challenge(self, request, now: float = 0.0, *, stale: bool = False):
        return make_response(request, 401, headers=[("WWW-Authenticate", c)
                                                    for c in self.auth.challenges(now, stale=stale)])

    def verify(self, request, now: float = 0.0) -> bool:
        credentials = request.headers.get("Authorization")
        if credentials is None:
            return False
        result = self.auth.verify(credentials, method="REGISTER", password_for=lambda user: self.password, now=now)
        return result.outcome is AuthOutcome.OK and result.username == "office"

    @staticmethod
    def ok(request, expires: int | None, *, header_only: bool = False):
        contact = request.headers.get("Contact")
        headers = []
        if header_only:
            headers.append(("Expires", str(expires)))
        elif expires is not None:
            headers.append(("Contact", f"<sip:someone-else@203.0.113.9:5060>;expires=99"))
            headers.append(("Contact", f"{contact};expires={expires}"))
        return make_response(request, 200, to_tag="reg", headers=headers)


def wire(request):
    """What the registrar really receives: the request serialised and parsed again."""
    return parse_message(serialize(request))


def register_fully(reg: Registration, registrar: Registrar, now: float, granted: int) -> None:
    first = reg.poll(now)
    assert first is not None
    second = reg.on_response(registrar.challenge(first, now), now)
    assert second is not None and registrar.verify(wire(second), now)
    assert reg.on_response(registrar.ok(second, granted), now) is None
    assert reg.state is RegistrationState.REGISTERED


def test_first_register_headers():
    reg = registration(user_agent="sipconf/test")
    request = wire(reg.poll(0.0))
    assert request.method == "REGISTER" and request.uri == "sip:provider.example:5070"
    assert request.headers.get("From").startswith("<sip:office@provider.example>;tag=")
    assert request.headers.get("To") == "<sip:office@provider.example>"
    assert request.headers.get("Contact") == "<sip:office@192.0.2.1:5060>"
    assert request.headers.get("Expires") == "3600"
    assert request.cseq == (1, "REGISTER")
    assert request.top_via.host == "192.0.2.1" and request.top_via.port == 5060
    assert request.top_via.branch.startswith("z9hG4bK")
    assert "Authorization" not in request.headers
    assert reg.destination.host == "198.51.100.7" and reg.destination.port == 5070
    # nothing more to send while it is in flight
    assert reg.poll(1.0) is None and reg.next_deadline() is None


def test_challenge_answered_then_registered_with_granted_expiry():
    reg, registrar = registration(), Registrar()
    first = reg.poll(0.0)
    second = reg.on_response(registrar.challenge(first), 0.1)
    assert second is not None
    assert second.call_id == first.call_id and second.cseq == (2, "REGISTER")
    assert second.top_via.branch != first.top_via.branch
    assert registrar.verify(wire(second), 0.1)
    assert 'uri="sip:provider.example:5070"' in second.headers.get("Authorization")
    # the registrar grants less than the 3600 s asked: our Contact's expires counts
    assert reg.on_response(registrar.ok(second, 20), 0.2) is None
    assert reg.state is RegistrationState.REGISTERED and reg.granted == 20
    assert reg.registered(20.1) and not reg.registered(20.2)
    assert reg.next_deadline() == pytest.approx(0.2 + 10)


@pytest.mark.parametrize("granted, delay", [(20, 10), (60, 30), (120, 90), (300, 270), (600, 540), (3600, 3240)])
def test_refresh_delay(granted, delay):
    assert refresh_delay(granted) == pytest.approx(delay)
    assert refresh_delay(granted) < granted


def test_refresh_before_expiry_with_cached_credentials():
    reg, registrar = registration(), Registrar()
    register_fully(reg, registrar, 0.0, 120)
    assert reg.poll(89.9) is None
    refresh = reg.poll(90.0)
    assert refresh is not None and refresh.cseq == (3, "REGISTER") and refresh.headers.get("Expires") == "3600"
    assert refresh.call_id == reg.call_id
    # the nonce (valid 300 s at this registrar) is reused with the next nonce count
    assert "nc=00000002" in refresh.headers.get("Authorization")
    assert registrar.verify(wire(refresh), 90.0)
    # Expires header only (no Contact list) also gives the granted expiry
    assert reg.on_response(registrar.ok(refresh, 1800, header_only=True), 90.5) is None
    assert reg.state is RegistrationState.REGISTERED and reg.expires_at == pytest.approx(90.5 + 1800)
    assert reg.next_deadline() == pytest.approx(90.5 + 1620)
    # an hour later the nonce has expired: the registrar says stale=true, we answer afresh
    refresh = reg.poll(1710.5)
    assert not registrar.verify(wire(refresh), 1710.5)
    again = reg.on_response(registrar.challenge(refresh, 1710.5, stale=True), 1710.5)
    assert again is not None and registrar.verify(wire(again), 1710.5)
    reg.on_response(registrar.ok(again, 3600), 1710.6)
    assert reg.state is RegistrationState.REGISTERED and reg.failures == 0


def test_refresh_rechallenged_with_same_nonce_is_answered_once():
    reg, registrar = registration(), Registrar()
    first = reg.poll(0.0)
    challenge = registrar.challenge(first)
    second = reg.on_response(challenge, 0.0)
    reg.on_response(registrar.ok(second, 60), 0.0)
    refresh = reg.poll(30.0)
    # a registrar that wants a fresh answer per transaction re-sends its nonce: answer it
    challenge.headers.set("CSeq", f"{refresh.cseq[0]} REGISTER")
    again = reg.on_response(challenge, 30.0)
    assert again is not None and "nc=00000001" in again.headers.get("Authorization")
    reg.on_response(registrar.ok(again, 60), 30.1)
    assert reg.state is RegistrationState.REGISTERED and reg.failures == 0


def test_wrong_password_fails_instead_of_looping(caplog):
    reg, registrar = registration(), Registrar(password="other")
    first = reg.poll(0.0)
    challenge = registrar.challenge(first)
    second = reg.on_response(challenge, 0.0)
    assert not registrar.verify(wire(second))
    # the registrar challenges again with the same nonce: our password is wrong
    rechallenge = make_response(second, 401, headers=[("WWW-Authenticate",
                                                      challenge.headers.get("WWW-Authenticate"))])
    with caplog.at_level(logging.INFO, logger="sipconf.trunk"):
        assert reg.on_response(rechallenge, 0.1) is None
    assert reg.state is RegistrationState.FAILED
    assert "credentials refused" in caplog.text


def test_stale_nonce_is_answered_again():
    reg, registrar = registration(), Registrar()
    first = reg.poll(0.0)
    second = reg.on_response(registrar.challenge(first), 0.0)
    stale = make_response(second, 401, headers=[("WWW-Authenticate", c) for c in registrar.auth.challenges(0.0, stale=True)])
    third = reg.on_response(stale, 0.1)
    assert third is not None and third.cseq[0] == 3


def test_403_backs_off_doubling_up_to_the_cap(caplog):
    reg = registration(backoff_min=1.0, backoff_max=8.0)
    now = 0.0
    waits = []
    with caplog.at_level(logging.DEBUG, logger="sipconf.trunk"):
        for _ in range(6):
            request = reg.poll(now)
            assert request is not None
            assert reg.on_response(make_response(request, 403), now) is None
            assert reg.state is RegistrationState.FAILED
            assert reg.poll(now) is None
            waits.append(reg.next_deadline() - now)
            now = reg.next_deadline()
    assert waits == [1, 2, 4, 8, 8, 8]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "registration to sip:provider.example:5070 failed: 403 Forbidden; retrying in 1 s" in warnings[0].getMessage()
    assert sum("registering to" in r.getMessage() for r in caplog.records) == 1


def test_default_backoff_is_5s_doubling_to_300s():
    reg = registration()
    now, waits = 0.0, []
    for _ in range(9):
        request = reg.poll(now)
        reg.on_response(make_response(request, 500), now)
        waits.append(reg.next_deadline() - now)
        now = reg.next_deadline()
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300]


def test_timeout_counts_as_failure_and_success_resets_backoff(caplog):
    reg, registrar = registration(backoff_min=2.0, backoff_max=60.0), Registrar()
    with caplog.at_level(logging.INFO, logger="sipconf.trunk"):
        reg.poll(0.0)
        reg.on_timeout(32.0)
        assert reg.state is RegistrationState.FAILED and reg.next_deadline() == 34.0
        assert reg.needs_address()  # resolved again before the retry
        reg.resolved(["198.51.100.7"])
        reg.poll(34.0)
        reg.on_timeout(66.0)
        assert reg.next_deadline() == 70.0
        reg.resolved(["198.51.100.7"])
        register_fully(reg, registrar, 70.0, 120)
        assert reg.failures == 0
        messages = [r.getMessage() for r in caplog.records]
    assert sum("failed: no answer from registrar" in m for m in messages) == 1
    assert sum("registered to" in m for m in messages) == 1
    # a later failure starts from the minimum again
    refresh = reg.poll(reg.next_deadline())
    reg.on_response(make_response(refresh, 503), 160.0)
    assert reg.next_deadline() == 162.0
    # ...and the binding the registrar still holds keeps being trusted until it lapses
    assert reg.trusts("198.51.100.7", 180.0) and not reg.trusts("198.51.100.7", 190.1)


def test_retry_after_is_honoured_within_the_cap():
    reg = registration(backoff_min=5.0, backoff_max=300.0)
    request = reg.poll(0.0)
    reg.on_response(make_response(request, 503, headers=[("Retry-After", "120")]), 0.0)
    assert reg.next_deadline() == 120.0


def test_423_asks_for_min_expires():
    reg, registrar = registration(expires=60), Registrar()
    first = reg.poll(0.0)
    second = reg.on_response(make_response(first, 423, headers=[("Min-Expires", "600")]), 0.0)
    assert second is not None and second.headers.get("Expires") == "600"
    third = reg.on_response(registrar.challenge(second), 0.0)
    assert third.headers.get("Expires") == "600" and registrar.verify(wire(third))


def test_granted_zero_is_a_failure():
    reg = registration()
    request = reg.poll(0.0)
    reg.on_response(Registrar.ok(request, 0), 0.0)
    assert reg.state is RegistrationState.FAILED and not reg.registered(0.0)


def test_late_or_provisional_answers_are_ignored():
    reg = registration()
    first = reg.poll(0.0)
    assert reg.on_response(make_response(first, 100), 0.0) is None
    assert reg.next_deadline() is None  # still in flight
    reg.on_timeout(32.0)
    # the 200 to the timed-out request arrives late: ignored
    assert reg.on_response(Registrar.ok(first, 60), 33.0) is None
    assert reg.state is RegistrationState.FAILED


def test_trust_only_while_registered():
    reg, registrar = registration(), Registrar()
    assert not reg.trusts("198.51.100.7", 0.0)
    register_fully(reg, registrar, 0.0, 60)
    assert reg.trusts("198.51.100.7", 1.0)
    assert not reg.trusts("198.51.100.8", 1.0)
    assert not reg.trusts("198.51.100.7", 61.0)


def test_unregister_at_shutdown(caplog):
    reg, registrar = registration(), Registrar()
    register_fully(reg, registrar, 0.0, 600)
    with caplog.at_level(logging.INFO, logger="sipconf.trunk"):
        bye = reg.stop(100.0)
        assert bye is not None and bye.headers.get("Expires") == "0"
        assert bye.headers.get("Contact") == "<sip:office@192.0.2.1:5060>"
        assert registrar.verify(wire(bye), 100.0)  # cached credentials, nc=2
        assert reg.poll(1000.0) is None and reg.stop(100.0) is None
        # challenged again: answered, still with Expires: 0
        again = reg.on_response(registrar.challenge(bye, 100.0), 100.0)
        assert again is not None and again.headers.get("Expires") == "0"
        assert reg.on_response(make_response(again, 200), 100.1) is None
    assert reg.state is RegistrationState.STOPPED and not reg.registered(100.2)
    assert "trunk provider: unregistered from sip:provider.example:5070" in caplog.text
    assert reg.poll(5000.0) is None


def test_no_unregister_without_a_binding():
    reg = registration()
    request = reg.poll(0.0)
    reg.on_response(make_response(request, 403), 0.0)
    assert reg.stop(1.0) is None
    assert reg.state is RegistrationState.STOPPED
    # a REGISTER still in flight may have created a binding: unregister then
    reg2 = registration()
    reg2.poll(0.0)
    assert reg2.stop(0.5).headers.get("Expires") == "0"


def test_ipv6_registrar_and_contact():
    reg = Registration(TrunkConfig("p6", (), TrunkRegistration("sip:[2001:db8::5]:5080", "office", "pw", 300)),
                       contact_host="2001:db8::1", contact_port=5060)
    assert reg.registrar_host == "2001:db8::5" and reg.registrar_port == 5080
    reg.resolved(["2001:db8::5"])
    request = wire(reg.poll(0.0))
    assert request.uri == "sip:[2001:db8::5]:5080"
    assert request.headers.get("Contact") == "<sip:office@[2001:db8::1]:5060>"
