"""The real ``sipconf serve`` on loopback, driven by SIPp and the test phone."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from phone import TestPhone
from support import REPO, SIPP, ServerProcess, free_port, free_rtp_range, office_config, options_ping, run_sipp, wait_until

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

ALICE = dict(user="101", password="alice-secret")


def phone(server: ServerProcess, **kwargs) -> TestPhone:
    return TestPhone(("127.0.0.1", server.sip_port), **kwargs)


# -- SIPp ------------------------------------------------------------------------------


def test_options_answered_with_allow(demo_server, tmp_path):
    result = run_sipp(tmp_path, "options.xml", demo_server.sip_port, timeout=15)
    assert result.returncode == 0 and result.successful == 1, result.errors()


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_register_with_digest(demo_server, tmp_path, transport):
    result = run_sipp(tmp_path, "register.xml", demo_server.sip_port, timeout=15,
                      variables={"user": "101"}, extra=["-au", "101", "-ap", "alice-secret", "-t", transport])
    assert result.returncode == 0 and result.successful == 1, result.errors()


def test_register_wrong_password_is_403(demo_server, tmp_path):
    result = run_sipp(tmp_path, "register_bad.xml", demo_server.sip_port, timeout=15,
                      variables={"user": "102"}, extra=["-au", "102", "-ap", "not-bobs"])
    assert result.returncode == 0 and result.successful == 1, result.errors()
    assert re.search(r"auth failure for REGISTER '102' from 127\.0\.0\.1", demo_server.log())


def test_call_from_authenticated_extension(demo_server, tmp_path):
    result = run_sipp(tmp_path, "call_auth.xml", demo_server.sip_port, timeout=20,
                      variables={"user": "101"}, extra=["-au", "101", "-ap", "alice-secret", "-d", "1000"])
    assert result.returncode == 0 and result.successful == 1, result.errors()
    log = demo_server.log()
    call_ids = re.findall(r"call (\S+): new call from 101 \(extension 101", log)
    assert call_ids, log
    # the 200 to the BYE leaves before the line is written: wait for it
    ended = f"call {call_ids[-1]}: ended: caller hung up (BYE)"
    assert wait_until(lambda: ended in demo_server.log(), 5), demo_server.log()


def test_call_from_trunk_source_needs_no_auth(demo_server, tmp_path):
    result = run_sipp(tmp_path, "trunk_call.xml", demo_server.sip_port, timeout=20, local_ip="127.0.0.2",
                      service="+33140000800", variables={"caller": "+33611223344"}, extra=["-d", "1000"])
    assert result.returncode == 0 and result.successful == 1, result.errors()
    assert "new call from +33611223344 (trunk provider" in demo_server.log()


def test_200_ok_retransmitted_until_ack(demo_server, tmp_path):
    result = run_sipp(tmp_path, "no_ack.xml", demo_server.sip_port, timeout=20, local_ip="127.0.0.2",
                      service="800", variables={"caller": "+33611223344"}, extra=["-trace_screen"])
    assert result.returncode == 0 and result.successful == 1, result.errors()
    screen = "\n".join(p.read_text() for p in result.workdir.glob("*_screen.log"))
    # SIPp's screen: "200 <----  <messages> <retrans> ..." for the awaited 200 OK.
    rows = re.findall(r"^\s*200 <-+\s+(\d+)\s+(\d+)", screen, re.MULTILINE)
    assert rows, screen
    messages, retransmissions = map(int, rows[0])
    # ACK withheld 2.2 s: retransmissions at 0.5 s and 1.5 s after the first 200.
    assert retransmissions >= 2, screen
    assert "no ACK" not in demo_server.log()


def test_cancel_while_ringing_gets_487(make_server, tmp_path):
    server = make_server(office_config(server={"answer_delay_ms": 3000}, extensions=("101",)))
    result = run_sipp(tmp_path, "cancel.xml", server.sip_port, timeout=20, local_ip="127.0.0.2",
                      service="800", variables={"caller": "+33611223344"})
    assert result.returncode == 0 and result.successful == 1, result.errors()
    assert wait_until(lambda: "cancelled by caller" in server.log(), 5), server.log()


DEMO_TRUNK_AND_ROOM = office_config(extensions=("101",))


# -- the test phone --------------------------------------------------------------------


def own_binding(phone_: TestPhone, response) -> str | None:
    """The Contact value of ``response`` that is this phone's own binding."""
    mine = f"@127.0.0.1:{phone_.sip_port}>"
    return next((c for c in response.header_values("Contact") if mine in c), None)


def test_register_binding_lifecycle(demo_server):
    with phone(demo_server, user="102", password="bob-secret") as p:
        ok = p.register(expires=600)
        assert ok.status == 200
        assert re.search(r"expires=(600|59\d)$", own_binding(p, ok))
        too_short = p.register(expires=10)
        assert too_short.status == 423 and too_short.header("Min-Expires") == "60"
        removed = p.register(expires=0)
        assert removed.status == 200 and own_binding(p, removed) is None
        assert own_binding(p, p.register(expires=600)) is not None
        wildcard = p.register(expires=0, contact="*")
        assert wildcard.status == 200 and wildcard.header("Contact") is None


def test_wrong_password_and_unknown_user_get_the_same_403(demo_server):
    with phone(demo_server, user="101", password="wrong") as wrong, \
            phone(demo_server, user="999", password="whatever") as unknown:
        first, second = wrong.register(), unknown.register()
    assert first.status == second.status == 403
    assert first.reason == second.reason


def test_invite_from_outside_trunk_without_credentials_is_407(demo_server):
    with phone(demo_server, user="101") as p:
        answer = p.call("+33140000000", auth=False)
    assert answer.status == 407
    assert 'realm="office.local"' in answer.header("Proxy-Authenticate")


def test_invite_with_bad_credentials_is_403(demo_server):
    with phone(demo_server, user="101", password="nope") as p:
        assert p.call("800").status == 403


def test_invite_unknown_number_is_404(demo_server):
    with phone(demo_server, **ALICE) as p:
        assert p.call("555").status == 404


def test_routing_on_digits_and_to_fallback(demo_server):
    with phone(demo_server, **ALICE) as p:
        # Request-URI user unknown, To names the room: the To user routes.
        answer = p.call("800", uri=f"sip:conference@127.0.0.1:{demo_server.sip_port}",
                        to_uri="sip:33140000800@office.local")
        assert answer.status == 200
        p.hangup()


def test_answer_sdp_follows_offer(demo_server):
    with phone(demo_server, codecs=("PCMA", "PCMU"), telephone_event_pt=96, **ALICE) as p:
        answer = p.call("800")
        assert answer.status == 200
        assert p.answer_codec == "PCMA" and p.answer_pt == 8 and p.answer_te_pt == 96
        port = p.remote_rtp[1]
        assert port % 2 == 0 and demo_server.rtp_low <= port <= demo_server.rtp_high
        assert p.wait_for_rtp(10, timeout=3), "the server sends audio while the call is up"
        p.hangup()


def test_no_common_codec_is_488(demo_server):
    with phone(demo_server, codecs=(("G729", 18),), **ALICE) as p:
        assert p.call("800").status == 488


def test_rtp_port_released_after_call(make_server):
    # A range with room for exactly one call: a second call only fits once the first ended.
    low = free_rtp_range(10)[0]
    server = make_server(None, rtp_low=low, rtp_high=low + 1)
    with phone(server, **ALICE) as first, phone(server, **ALICE) as second:
        assert first.call("800").status == 200
        assert second.call("800").status == 503
        first.hangup()
        assert second.call("800").status == 200
        assert second.remote_rtp[1] == low
        second.hangup()


def test_unknown_method_405_and_require_420(demo_server):
    with phone(demo_server, **ALICE) as p:
        not_allowed = p.request("SUBSCRIBE", headers=[("Event", "presence")])
        assert not_allowed.status == 405
        assert "INVITE" in not_allowed.header("Allow")
        required = p.request("OPTIONS", headers=[("Require", "100rel, foo")])
        assert required.status == 420
        assert "foo" in required.header("Unsupported")


def test_bye_for_unknown_dialog_is_481(demo_server):
    with phone(demo_server, **ALICE) as p:
        assert p.request("BYE", headers=[("To", "<sip:800@office.local>;tag=nope")]).status == 481


def sdp_version(response) -> int:
    body = response.body.decode() if isinstance(response.body, bytes) else response.body
    return int(re.search(r"o=\S+ \d+ (\d+)", body).group(1))


def test_reinvite_hold_gets_fresh_answer(demo_server):
    with phone(demo_server, **ALICE) as p:
        answer = p.call("800")
        assert answer.status == 200
        held = p.reinvite("sendonly")
        assert held.status == 200 and p.answer_direction == "recvonly"
        assert sdp_version(held) > sdp_version(answer)
        resumed = p.reinvite("sendrecv")
        assert resumed.status == 200 and p.answer_direction == "sendrecv"
        assert sdp_version(resumed) > sdp_version(held)
        p.hangup()


def test_malformed_input_never_stops_the_server(demo_server):
    with phone(demo_server, **ALICE) as p:
        assert p.call("800").status == 200  # a call that must survive all of this
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.0)
        target = ("127.0.0.1", demo_server.sip_port)
        local = sock.getsockname()[1]
        good_head = (f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKm1\r\n"
                     "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: junk1\r\nCSeq: 1 OPTIONS\r\n")
        try:
            for junk in (os.urandom(300), b"\x00" * 50, b"INVITE sip:800@x SIP/2.0\r\nVia: SIP/2.0/UDP",
                         b"SIP/2.0 200\r\n\r\n", good_head.encode() + b"X" * 70_000):
                sock.sendto(junk[:65000], target)
            # bad Content-Length: routable, so it is answered 400
            sock.sendto((good_head + "Content-Length: 500\r\n\r\nshort").encode(), target)
            data, _ = sock.recvfrom(65535)
            assert data.startswith(b"SIP/2.0 400"), data[:100]
        finally:
            sock.close()
        assert options_ping(demo_server.sip_port) == 200
        assert demo_server.alive()
        assert p.wait_for_rtp(5, timeout=2)
        assert p.hangup().status == 200


# -- the command line ------------------------------------------------------------------


def test_serve_without_arguments_answers_on_5060(tmp_path):
    if options_ping(5060, timeout=0.2) is not None:
        pytest.skip("something already answers on 127.0.0.1:5060")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 5060))
    except OSError:
        pytest.skip("127.0.0.1:5060 is taken")
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "sipconf", "serve"], cwd=REPO,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline and status != 200:
            status = options_ping(5060, timeout=0.2)
        assert status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        log.close()


def test_sigterm_sends_bye_to_every_call_and_exits_0(tmp_path):
    server = ServerProcess(tmp_path).start()
    try:
        with phone(server, **ALICE) as first, phone(server, user="102", password="bob-secret") as second:
            assert first.call("800").status == 200
            assert second.call("800").status == 200
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert first.wait_for_bye(5) and second.wait_for_bye(5)
            code = server.process.wait(10)
            elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert code == 0
    assert elapsed < 5.0
    assert server.log().count("ended: server shutdown; BYE sent") == 2  # (the call_ended event lines say it too)


def test_check_config(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(DEMO_TRUNK_AND_ROOM)
    run = subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(good)],
                         capture_output=True, text=True, cwd=REPO, timeout=30)
    assert run.returncode == 0 and len(run.stdout.strip().splitlines()) == 1
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nsip_prot = 5060\nlanguage = "de"\n[[rooms]]\nextension = "80a"\n')
    run = subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(bad)],
                         capture_output=True, text=True, cwd=REPO, timeout=30)
    assert run.returncode == 2
    for expected in ("sip_prot", "language", "extension"):
        assert expected in run.stderr
    serve = subprocess.run([sys.executable, "-m", "sipconf", "serve", "--config", str(bad),
                            "--sip-port", str(free_port())],
                           capture_output=True, text=True, cwd=REPO, timeout=30)
    assert serve.returncode == 2 and "sip_prot" in serve.stderr
