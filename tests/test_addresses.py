"""Addresses on a real office network (SPEC section 15), against the real server.

Two loopback addresses stand in for two interfaces of a multi-homed host
(127.0.0.1 and 127.0.0.9); ``::1`` for IPv6. Whatever the server listens on,
what it writes (Contact, Via of its own requests, SDP o=/c=) and where its
packets come from must be the address the phone reached, never 0.0.0.0/::.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from phone import TestPhone, parse_sdp
from support import PASSWORDS, REPO, ROOM_DID, ServerProcess, free_port, office_config, wait_until

pytestmark = pytest.mark.integration


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")


def start_server(tmp_path, bind: str, *, host: str = "127.0.0.1", rtp_timeout: int = 30, extra: str = "",
                 trunk_allow: str | None = None) -> ServerProcess:
    text = office_config(server={"rtp_timeout": rtp_timeout, "language": "en"}, extensions=("101", "102"),
                         trunk=trunk_allow is None, extra=extra)
    if trunk_allow is not None:
        text += f'\n[[trunks]]\nname = "provider"\nallow = ["{trunk_allow}"]\n'
    return ServerProcess(tmp_path, config_text=text, extra_args=("--bind", bind), host=host).start()


def phone_to(server: ServerProcess, server_host: str, user: str = "101", local_ip: str | None = None,
             **kwargs) -> TestPhone:
    if local_ip is None:
        local_ip = "::1" if ":" in server_host else "127.0.0.1"
    return TestPhone((server_host, server.sip_port), local_ip=local_ip, user=user, password=PASSWORDS[user],
                     **kwargs)


def uri_host(header: str) -> str:
    """The host of the first SIP URI in a header value, brackets kept."""
    match = re.search(r"sips?:(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>]+)", header)
    assert match, header
    return match.group(1)


def assert_answer_names(answer, host: str) -> None:
    """Contact and SDP o=/c= of a 200 OK carry ``host`` (IPv6 bracketed in the URI)."""
    expected_uri_host = f"[{host}]" if ":" in host else host
    assert uri_host(answer.header("contact")) == expected_uri_host, answer.text
    body = answer.body.decode()
    addrtype = "IP6" if ":" in host else "IP4"
    assert re.search(rf"^o=\S+ \d+ \d+ IN {addrtype} {re.escape(host)}\r?$", body, re.M), body
    assert re.search(rf"^c=IN {addrtype} {re.escape(host)}\r?$", body, re.M), body
    assert parse_sdp(body)["ip"] == host


def join(phone: TestPhone, tone: float | None = None) -> None:
    answer = phone.call("800")
    assert answer.status == 200, answer
    assert phone.wait_for_rtp(5, timeout=3)
    time.sleep(0.3)
    phone.send_dtmf("1234#4321#")
    if tone is not None:
        phone.send_tone(tone)


def joined(server: ServerProcess, call_id: str) -> bool:
    return any(call_id in line and "joined conference" in line for line in server.log().splitlines())


def tcp_options_contact(host: str, port: int) -> str:
    """OPTIONS over a TCP connection to ``host``; the Contact of the answer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect((host, port))
        local_host, local_port = s.getsockname()[:2]
        sent_by = f"[{local_host}]" if ":" in local_host else local_host
        target = f"[{host}]" if ":" in host else host
        s.sendall((f"OPTIONS sip:{target}:{port};transport=tcp SIP/2.0\r\n"
                   f"Via: SIP/2.0/TCP {sent_by}:{local_port};branch=z9hG4bKtcp{local_port}\r\n"
                   "Max-Forwards: 70\r\nFrom: <sip:probe@office.local>;tag=t1\r\n"
                   f"To: <sip:{target}>\r\nCall-ID: tcp-{local_port}\r\nCSeq: 1 OPTIONS\r\n"
                   "Content-Length: 0\r\n\r\n").encode())
        data = b""
        deadline = time.monotonic() + 3
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            data += s.recv(65535)
    match = re.search(rb"^Contact: *(.*?)\r$", data, re.M | re.I)
    assert match, data
    return match.group(1).decode()


# -- wildcard IPv4 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wildcard_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("wildcard"), "0.0.0.0", rtp_timeout=3)
    yield server
    server.stop()


@pytest.mark.parametrize("server_host", ["127.0.0.1", "127.0.0.9"])
def test_wildcard_bind_answers_with_the_address_the_phone_reached(wildcard_server, server_host):
    phone = phone_to(wildcard_server, server_host)
    try:
        options = phone.options()
        assert options.status == 200
        assert options.source[0] == server_host, "the answer must leave from the address the phone used"
        assert uri_host(options.header("contact")) == server_host
        answer = phone.call("800")
        assert answer.status == 200, answer
        assert answer.source[0] == server_host
        assert_answer_names(answer, server_host)
        assert "0.0.0.0" not in answer.text
        assert phone.wait_for_rtp(5, timeout=3)
        assert phone.rtp_source[0] == server_host, "RTP must come from the address in the SDP"
        # Silence from the phone: the server hangs up after rtp_timeout with a
        # BYE whose Via and Contact name the address the phone reached.
        phone.stop_audio()
        assert phone.wait_for_bye(10), wildcard_server.log()[-2000:]
        bye = phone.bye_request
        assert bye.source[0] == server_host
        via = bye.header("via")
        assert re.match(rf"SIP/2\.0/UDP {re.escape(server_host)}:{wildcard_server.sip_port};", via), via
        assert uri_host(bye.header("contact")) == server_host
    finally:
        phone.close(hangup=False)


def test_wildcard_bind_tcp_contact_is_the_connection_local_address(wildcard_server):
    for host in ("127.0.0.1", "127.0.0.9"):
        contact = tcp_options_contact(host, wildcard_server.sip_port)
        assert uri_host(contact) == host and "transport=tcp" in contact, contact


def test_responses_fill_rport_and_received(wildcard_server):
    phone = phone_to(wildcard_server, "127.0.0.9", local_ip="127.0.0.5")
    try:
        answer = phone.options()
        via = answer.header("via")
        assert f";rport={phone.sip_port}" in via, via
        # Our Via said 127.0.0.5 and the packet came from there: received is
        # optional then (RFC 3581 adds it with rport); what matters is rport.
        assert "received=127.0.0.5" in via or "received" not in via
    finally:
        phone.close(hangup=False)


def test_two_wildcard_callers_on_different_addresses_hear_each_other(wildcard_server):
    a = phone_to(wildcard_server, "127.0.0.1", user="101")
    b = phone_to(wildcard_server, "127.0.0.9", user="102")
    try:
        join(a, tone=440.0)
        join(b, tone=660.0)
        assert wait_until(lambda: joined(wildcard_server, a.call_id) and joined(wildcard_server, b.call_id), 10)
        assert a.wait_for_tone(660.0, timeout=5), "A (via 127.0.0.1) must hear B (via 127.0.0.9)"
        assert b.wait_for_tone(440.0, timeout=5), "B must hear A"
    finally:
        a.close()
        b.close()


def test_trunk_registration_contact_is_routed_address_not_wildcard(tmp_path):
    registrar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    registrar.bind(("127.0.0.1", 0))
    registrar.settimeout(10)
    extra = ('\n[[trunks]]\nname = "registered"\nallow = []\n\n  [trunks.register]\n'
             f'  registrar = "sip:127.0.0.1:{registrar.getsockname()[1]}"\n'
             '  username = "33140000999"\n  password = "provider-secret"\n')
    server = start_server(tmp_path, "0.0.0.0", extra=extra)
    try:
        data, _ = registrar.recvfrom(65535)
        text = data.decode()
        assert text.startswith("REGISTER "), text
        assert "0.0.0.0" not in text, text
        contact = re.search(r"^Contact: *(.*)\r$", text, re.M).group(1)
        assert uri_host(contact) == "127.0.0.1", contact
    finally:
        registrar.close()
        server.stop()


# -- IPv6 ------------------------------------------------------------------------------------


@needs_ipv6
def test_ipv6_register_call_rtp_and_server_bye(tmp_path):
    server = start_server(tmp_path, "::1", host="::1", rtp_timeout=3)
    phone = phone_to(server, "::1")
    try:
        registered = phone.register()
        assert registered.status == 200, registered
        via = registered.header("via")
        assert f"rport={phone.sip_port}" in via, via
        assert uri_host(registered.header("contact")) == "[::1]"
        answer = phone.call("800")
        assert answer.status == 200, answer
        assert_answer_names(answer, "::1")
        assert phone.wait_for_rtp(10, timeout=3), "RTP over IPv6"
        phone.stop_audio()
        # The BYE the server originates after rtp_timeout: bracketed Via (this
        # was never sent before: "bad Via 'SIP/2.0/UDP ::1:...'").
        assert phone.wait_for_bye(10), server.log()[-2000:]
        bye = phone.bye_request
        assert re.match(rf"SIP/2\.0/UDP \[::1\]:{server.sip_port};", bye.header("via")), bye.text
        assert "bad Via" not in server.log()
    finally:
        phone.close(hangup=False)
        server.stop()


@needs_ipv6
def test_ipv6_conference_joins_and_trunk_allow_with_ipv6_network(tmp_path):
    server = start_server(tmp_path, "::1", host="::1", trunk_allow="::1/128")
    phone = phone_to(server, "::1")
    trunk = TestPhone(("::1", server.sip_port), local_ip="::1", user="33611000001")
    try:
        join(phone, tone=440.0)
        assert wait_until(lambda: joined(server, phone.call_id), 10), server.log()[-2000:]
        # From ::1, trusted by allow = ["::1/128"]: a DID call without digest.
        answer = trunk.call(ROOM_DID.lstrip("+"), auth=False)
        assert answer.status == 200, answer
        trunk.wait_for_rtp(5, timeout=3)
        time.sleep(0.3)
        trunk.send_dtmf("1234#4321#")
        trunk.send_tone(660.0)
        assert wait_until(lambda: joined(server, trunk.call_id), 10), server.log()[-2000:]
        assert phone.wait_for_tone(660.0, timeout=5)
        assert trunk.wait_for_tone(440.0, timeout=5)
    finally:
        phone.close()
        trunk.close()
        server.stop()


@needs_ipv6
def test_dual_stack_wildcard_names_ipv4_peers_in_plain_ipv4(tmp_path):
    server = start_server(tmp_path, "::", host="::1")
    v4 = phone_to(server, "127.0.0.1", user="101")
    v6 = phone_to(server, "::1", user="102")
    try:
        answer4 = v4.call("800")
        assert answer4.status == 200, answer4
        assert "::ffff:" not in answer4.text.lower(), answer4.text
        assert_answer_names(answer4, "127.0.0.1")
        answer6 = v6.call("800")
        assert answer6.status == 200, answer6
        assert_answer_names(answer6, "::1")
        for phone, tone in ((v4, 440.0), (v6, 660.0)):
            assert phone.wait_for_rtp(5, timeout=3)
            time.sleep(0.3)
            phone.send_dtmf("1234#4321#")
            phone.send_tone(tone)
        assert wait_until(lambda: joined(server, v4.call_id) and joined(server, v6.call_id), 10)
        assert v4.wait_for_tone(660.0, timeout=5), "an IPv4 caller hears an IPv6 caller"
        assert v6.wait_for_tone(440.0, timeout=5), "and the other way round"
        assert "::ffff:" not in server.log()
    finally:
        v4.close()
        v6.close()
        server.stop()


@needs_ipv6
def test_ipv6_trunk_registration_to_an_ipv6_registrar(tmp_path):
    registrar = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    registrar.bind(("::1", 0))
    registrar.settimeout(10)
    extra = ('\n[[trunks]]\nname = "registered"\nallow = []\n\n  [trunks.register]\n'
             f'  registrar = "sip:[::1]:{registrar.getsockname()[1]}"\n'
             '  username = "33140000999"\n  password = "provider-secret"\n')
    server = start_server(tmp_path, "::1", host="::1", extra=extra)
    try:
        data, source = registrar.recvfrom(65535)
        text = data.decode()
        assert text.startswith("REGISTER sip:[::1]"), text
        assert re.search(rf"^Via: SIP/2\.0/UDP \[::1\]:{server.sip_port};", text, re.M), text
        contact = re.search(r"^Contact: *(.*)\r$", text, re.M).group(1)
        assert uri_host(contact) == "[::1]", contact
        # Grant it: the server logs "registered".
        headers = [line for line in text.split("\r\n") if re.match(r"(Via|From|To|Call-ID|CSeq):", line, re.I)]
        response = "SIP/2.0 200 OK\r\n" + "\r\n".join(
            h + (";tag=reg1" if h.lower().startswith("to:") else "") for h in headers)
        response += f"\r\nContact: {contact};expires=60\r\nContent-Length: 0\r\n\r\n"
        registrar.sendto(response.encode(), source)
        assert wait_until(lambda: "registered" in server.log().split("registering", 1)[-1], 5), server.log()[-2000:]
    finally:
        registrar.close()
        server.stop()


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("advertise", ["0.0.0.0", "::"])
def test_check_config_refuses_a_wildcard_advertise(tmp_path, advertise):
    path = tmp_path / "sipconf.toml"
    path.write_text(office_config(server={"bind": "0.0.0.0", "advertise": advertise}))
    result = subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "[server]" in output and "advertise" in output and "wildcard" in output, output


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "::1"])
def test_check_config_accepts_wildcard_and_ipv6_binds(tmp_path, bind):
    path = tmp_path / "sipconf.toml"
    path.write_text(office_config(server={"bind": bind}))
    result = subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_ipv6
@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) is not installed")
def test_sipp_over_ipv6_joins_by_rfc4733_and_is_heard(tmp_path):
    """SIPp's room_join.xml (Debian's RFC 2833 pcaps, speech by rtp_stream)
    over IPv6 from a trunk allowed as ::1/128; a phone in the room hears it."""
    from support import SIPP_DIR, _sipp_counts, free_rtp_range
    sys.path.insert(0, str(REPO / "scripts"))
    import rtpgen
    (tmp_path / "speech.alaw").write_bytes(rtpgen.speech_alaw())
    server = start_server(tmp_path, "::1", host="::1", trunk_allow="::1/128")
    phone = phone_to(server, "::1", codecs=("PCMA",))
    try:
        join(phone)
        assert wait_until(lambda: joined(server, phone.call_id), 10), server.log()[-2000:]
        time.sleep(2.5)  # "you are the first participant" is over
        completed = subprocess.run(
            ["sipp", f"[::1]:{server.sip_port}", "-sf", str(SIPP_DIR / "room_join.xml"), "-i", "::1",
             "-p", str(free_port("::1")), "-mp", str(free_rtp_range(10)[0]), "-s", "800", "-d", "6000",
             "-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error", "-trace_stat", "-stf", "stats.csv"],
            cwd=tmp_path, capture_output=True, text=True, timeout=70, stdin=subprocess.DEVNULL)
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
        assert _sipp_counts(tmp_path / "stats.csv") == (1, 0)
        log = server.log()
        sipp_joins = [line for line in log.splitlines() if "joined conference 1234" in line
                      and phone.call_id not in line]
        assert sipp_joins, log[-3000:]
        assert re.search(r"new call from \+336\d* \(trunk provider, ::1:\d+\)", log), log[-3000:]
        assert phone.rms(seconds=8.0) > 300, "the phone must hear SIPp's speech over IPv6"
    finally:
        phone.close()
        server.stop()
