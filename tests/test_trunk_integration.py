"""Virtual Receptionist, SIP trunks and direct numbers end to end (SPEC 3, 4, 7).

SIPp plays the trunk from 127.0.0.2 (trusted by the configuration's
``allow``) and types DTMF by replaying Debian's RFC 2833 pcaps; a test phone
in the conference listens. SIPp also plays a provider's registrar on
127.0.0.4 for registration-based trunks (``[trunks.register]``).
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime

import pytest

from phone import TestPhone
from support import MAIN_NUMBER, ROOM_DID, SIPP_PCAPS, free_port, office_config, run_sipp, wait_until

TRUNK_CONFIG = office_config(server={"language": "en"}, receptionist=True,
                             conferences=(("1234", "4321"), ("5678", "8765")))

REGISTER_CONFIG = """
[server]
language = "en"

[[trunks]]
name = "provider"

  [trunks.register]
  registrar = "sip:127.0.0.4:{registrar_port}"
  username = "office"
  password = "office-secret"
  expires = 600

[[rooms]]
extension = "800"
numbers = ["+33140000800"]

  [[rooms.conferences]]
  id = "1234"
  pin = "4321"
"""

pytestmark = pytest.mark.skipif(not (SIPP_PCAPS / "dtmf_2833_1.pcap").exists(),
                                reason="SIPp's RFC 2833 pcaps (Debian sip-tester) are not installed")


@pytest.fixture(scope="module")
def trunk_server(tmp_path_factory):
    from support import ServerProcess
    server = ServerProcess(tmp_path_factory.mktemp("trunk"), config_text=TRUNK_CONFIG).start()
    yield server
    server.stop()


class SippThread:
    """run_sipp in a thread, so the test can listen while SIPp talks (always joined)."""

    def __init__(self, *args, **kwargs) -> None:
        self.result = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, daemon=True)
        self._thread.start()

    def _run(self, *args, **kwargs) -> None:
        try:
            self.result = run_sipp(*args, **kwargs)
        except BaseException as error:  # reported by join()
            self.error = error

    def join(self, timeout: float = 90):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "SIPp did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def call_id_of(server, pattern: str) -> str | None:
    """The Call-ID of the first "new call" log line matching ``pattern`` (after "new call from ")."""
    match = re.search(r"call (\S+): new call from " + pattern, server.log())
    return match.group(1) if match else None


def lines_of(server, call_id: str) -> list[str]:
    return [line for line in server.log().splitlines() if f"call {call_id}:" in line]


def joined(server, call_id: str, conference: str = "1234") -> bool:
    return any(f"joined conference {conference} of room 800" in line for line in lines_of(server, call_id))


def trunk_call(tmp_path, server, scenario: str, number: str, caller: str, *, local_ip: str = "127.0.0.2",
               timeout: float = 60):
    return run_sipp(tmp_path, scenario, server.sip_port, local_ip=local_ip, service=number,
                    variables={"caller": caller}, timeout=timeout)


# -- Virtual Receptionist and direct numbers -------------------------------------------


def test_main_number_receptionist_then_room_heard_by_a_phone(trunk_server, tmp_path):
    """Main number → welcome → 800# → 1234# 4321#: joined, and a phone in the
    conference hears the trunk caller's speech (g711a.pcap)."""
    listener = TestPhone(("127.0.0.1", trunk_server.sip_port), user="101", password="alice-secret")
    sipp = None
    try:
        assert listener.call("800").status == 200
        listener.wait_for_rtp(5, timeout=3)
        time.sleep(0.3)
        listener.send_dtmf("1234#4321#")
        assert wait_until(lambda: joined(trunk_server, listener.call_id), 15), trunk_server.log()[-3000:]
        # the "you are the first participant" prompt (about 2 s) is over: silence
        time.sleep(3.0)
        assert listener.rms(seconds=1.0) < 50, "the phone alone in the conference hears something"

        sipp = SippThread(tmp_path, "trunk_receptionist_join.xml", trunk_server.sip_port, local_ip="127.0.0.2",
                          service=MAIN_NUMBER, variables={"caller": "+33611000001"}, timeout=60)
        trunk_id = wait_until(lambda: call_id_of(trunk_server, r"\+33611000001 \(trunk provider, 127\.0\.0\.2:\d+\) "
                                                 r"to \+33140000000 -> receptionist"), 10)
        assert trunk_id, trunk_server.log()[-3000:]
        assert wait_until(lambda: joined(trunk_server, trunk_id), 20), "\n".join(lines_of(trunk_server, trunk_id))
        assert any("receptionist transfers to room 800" in line for line in lines_of(trunk_server, trunk_id))
        # SIPp streams g711a.pcap from about the moment it joined: after the
        # join beep, 1.5 s of near silence, then 5.5 s of speech (rms ~2,000).
        time.sleep(3.5)
        level = listener.rms(seconds=2.0)
        assert level > 500, f"the phone does not hear the trunk caller (rms {level:.0f})"

        result = sipp.join()
        assert result.returncode == 0 and result.successful == 1, result.errors()
        assert wait_until(lambda: any("ended: caller hung up (BYE)" in line for line in lines_of(trunk_server, trunk_id)), 3)
        time.sleep(1.0)
        assert listener.rms(seconds=0.5) < 50, "the trunk caller is still heard after its BYE"
    finally:
        listener.close()
        if sipp is not None:
            sipp.join()


def test_direct_number_with_or_without_plus_skips_receptionist(trunk_server, tmp_path):
    """+33140000800 and 33140000800 both reach room 800 at once (ID/PIN, no welcome)."""
    runs = {
        "+33611000002": SippThread(tmp_path, "trunk_join.xml", trunk_server.sip_port, local_ip="127.0.0.2",
                                   service=ROOM_DID, variables={"caller": "+33611000002"}, timeout=60),
        "+33611000003": SippThread(tmp_path, "trunk_join.xml", trunk_server.sip_port, local_ip="127.0.0.2",
                                   service="33140000800", variables={"caller": "+33611000003"}, timeout=60),
    }
    for caller, sipp in runs.items():
        result = sipp.join()
        assert result.returncode == 0 and result.successful == 1, result.errors()
    for caller, number in (("+33611000002", r"\+33140000800"), ("+33611000003", "33140000800")):
        call_id = call_id_of(trunk_server, re.escape(caller) + r" \(trunk provider, 127\.0\.0\.2:\d+\) to "
                             + number + " -> room 800")
        assert call_id, trunk_server.log()[-3000:]
        lines = lines_of(trunk_server, call_id)
        assert joined(trunk_server, call_id), "\n".join(lines)
        assert not [line for line in lines if "receptionist" in line], "\n".join(lines)


def test_unknown_extension_three_times_ends_in_bye(trunk_server, tmp_path):
    result = trunk_call(tmp_path, trunk_server, "trunk_receptionist_invalid.xml", MAIN_NUMBER, "+33611000004")
    assert result.returncode == 0 and result.successful == 1, result.errors()
    call_id = call_id_of(trunk_server, r"\+33611000004 \(trunk provider")
    lines = lines_of(trunk_server, call_id)
    assert sum("receptionist: no room at extension '999'" in line for line in lines) == 3, "\n".join(lines)
    assert any("receptionist: too many invalid extensions; BYE sent" in line for line in lines), "\n".join(lines)


def test_unknown_number_from_trunk_is_404(trunk_server, tmp_path):
    result = trunk_call(tmp_path, trunk_server, "trunk_not_found.xml", "+33199999999", "+33611000005", timeout=20)
    assert result.returncode == 0 and result.successful == 1, result.errors()
    assert re.search(r"trunk provider called unknown number '\+33199999999'", trunk_server.log())


def test_main_number_from_untrusted_source_is_407(trunk_server, tmp_path):
    result = trunk_call(tmp_path, trunk_server, "trunk_untrusted.xml", MAIN_NUMBER, "+33611000006",
                        local_ip="127.0.0.3", timeout=20)
    assert result.returncode == 0 and result.successful == 1, result.errors()
    assert "new call from +33611000006" not in trunk_server.log()  # no call was created


def test_desk_phone_reaches_receptionist_by_its_extension(trunk_server):
    with TestPhone(("127.0.0.1", trunk_server.sip_port), user="102", password="bob-secret") as phone:
        assert phone.call("0").status == 200
        lines = lines_of(trunk_server, phone.call_id)
        assert any("(extension 102, 127.0.0.1:" in line and "to 0 -> receptionist" in line for line in lines), lines
        phone.wait_for_rtp(5, timeout=3)
        time.sleep(1.0)
        assert phone.rms(seconds=0.8) > 100, "no welcome prompt"
        phone.send_dtmf("800#5678#8765#")
        assert wait_until(lambda: joined(trunk_server, phone.call_id, "5678"), 15), \
            "\n".join(lines_of(trunk_server, phone.call_id))
        assert any("receptionist transfers to room 800" in line for line in lines_of(trunk_server, phone.call_id))


# -- registration-based trunks ---------------------------------------------------------


def log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_registered_trunk_gets_calls_refreshes_and_unregisters(make_server, tmp_path):
    """SIPp as the provider: 401 → REGISTER with credentials (verified) → 200
    granting 20 s; an INVITE from the registrar to our Contact reaches room 800
    without digest; the refresh comes before 20 s; Expires: 0 at shutdown."""
    registrar_port = free_port("127.0.0.4")
    sip_port = free_port()
    registrar = SippThread(tmp_path, "registrar_uas.xml", sip_port, local_ip="127.0.0.4",
                           local_port=registrar_port, timeout=60,
                           variables={"user": "office", "password": "office-secret", "granted": "20",
                                      "did": ROOM_DID})
    server = None
    try:
        time.sleep(0.3)  # SIPp listening (a later start would only cost a retransmission)
        server = make_server(REGISTER_CONFIG.format(registrar_port=registrar_port), sip_port=sip_port)
        registered = wait_until(lambda: re.search(r"trunk provider: registered to sip:127\.0\.0\.4:\d+ as office "
                                                  r"\(expires 20 s, refresh in 10 s\)", server.log()), 10)
        assert registered, server.log()[-3000:]
        call_id = wait_until(lambda: call_id_of(server, r"\+33611223344 \(trunk provider, 127\.0\.0\.4:\d+\) "
                                                r"to \+33140000800 -> room 800"), 10)
        assert call_id, server.log()[-3000:]
        assert wait_until(lambda: any("ended: caller hung up (BYE)" in line for line in lines_of(server, call_id)), 10)
        assert "auth failure" not in server.log()
        refreshed = wait_until(lambda: [line for line in server.log().splitlines()
                                        if "registration refreshed (expires 20 s)" in line], 15)
        assert refreshed, server.log()[-3000:]
        first = next(line for line in server.log().splitlines() if "trunk provider: registered to" in line)
        assert 9.0 <= log_time(refreshed[0]) - log_time(first) < 20.0
        assert server.stop() == 0
        result = registrar.join()
        assert result.returncode == 0 and result.successful == 1, result.errors()
        assert "trunk provider: unregistered from sip:127.0.0.4" in server.log()
    finally:
        if server is not None:
            server.stop()
        registrar.join()


def test_registrar_refusal_is_retried_with_backoff(make_server, tmp_path):
    registrar_port = free_port("127.0.0.4")
    sip_port = free_port()
    registrar = SippThread(tmp_path, "registrar_forbidden.xml", sip_port, local_ip="127.0.0.4",
                           local_port=registrar_port, timeout=40, variables={"attempts": "2"})
    server = None
    try:
        time.sleep(0.3)
        server = make_server(REGISTER_CONFIG.format(registrar_port=registrar_port), sip_port=sip_port)
        result = registrar.join()
        assert result.returncode == 0 and result.successful == 1, result.errors()  # two REGISTERs, two 403s
        lines = server.log().splitlines()
        warnings = [line for line in lines if "WARNING sipconf.trunk" in line]
        assert len(warnings) == 1, warnings
        assert f"trunk provider: registration to sip:127.0.0.4:{registrar_port} failed: 403 Forbidden; " \
               "retrying in 5 s" in warnings[0]
        again = wait_until(lambda: [line for line in server.log().splitlines()
                                    if "registration still failing (403 Forbidden, attempt 2); retrying in 10 s" in line], 5)
        assert again, server.log()[-3000:]
        assert 4.5 <= log_time(again[0]) - log_time(warnings[0]) < 8.0
        assert server.stop() == 0
        assert "unregistered" not in server.log()  # nothing to unregister
    finally:
        if server is not None:
            server.stop()
        registrar.join()
