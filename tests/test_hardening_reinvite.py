"""Overlapping re-INVITEs (issue #6, RFC 3261 14.2): a re-INVITE that arrives
while an earlier INVITE of the same dialog is not finished is refused.

- the earlier one was answered 200 but its ACK has not arrived: ``491``;
- the earlier one has no final answer yet (the initial INVITE still ringing,
  ``answer_delay_ms``): ``500`` with ``Retry-After`` (0-10 s).

The server never sends re-INVITEs itself, so these are the only overlaps."""

from __future__ import annotations

import re
import secrets
import time

import pytest

import phone as phone_module
from phone import TestPhone
from support import ServerProcess, office_config

CONFIG = office_config(server={"language": "en", "answer_delay_ms": 1000}, extensions=("101",), room_name=None,
                       room_numbers=())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("reinvite"), config_text=CONFIG).start()
    yield server
    server.stop()


def alice(server) -> TestPhone:
    return TestPhone(("127.0.0.1", server.sip_port), user="101", password="alice-secret")


def trunk(server) -> TestPhone:
    """A caller behind the trusted trunk: no digest, so the first INVITE rings."""
    return TestPhone(("127.0.0.1", server.sip_port), user="+33611223344", local_ip="127.0.0.2")


def raw_reinvite(p: TestPhone, timeout: float = 5.0):
    """An in-dialog INVITE whose final answer is *not* acknowledged (the test
    phone's own reinvite() always ACKs). Returns (response, branch)."""
    p.local_cseq += 1
    branch = "z9hG4bK" + secrets.token_hex(6)
    headers = p._dialog_headers("INVITE", branch, p.local_cseq) + [("Content-Type", "application/sdp")]
    data = phone_module._build(f"INVITE {p.remote_target} SIP/2.0", headers, p._sdp("sendrecv"))
    return p._send_transaction(data, branch, "INVITE", timeout), branch


def test_reinvite_while_previous_200_awaits_ack_gets_491(server):
    with alice(server) as p:
        assert p.call("800").status == 200
        first, first_branch = raw_reinvite(p)
        assert first.status == 200, first
        # Our ACK for it is withheld: the server keeps retransmitting that 200.
        second, _ = raw_reinvite(p)
        assert second.status == 491, second
        assert second.to_tag == first.to_tag
        assert re.search(rf"call {re.escape(p.call_id)}: re-INVITE while the 200 to CSeq {first.cseq[0]} "
                         r"awaits its ACK: 491", server.log())
        # Once the first is ACKed, the next re-INVITE goes through.
        p._ack_reinvite(first, first_branch)
        time.sleep(0.2)
        third = p.reinvite("sendrecv")
        assert third.status == 200, third
        assert p.hangup().status == 200


def test_reinvite_while_initial_invite_unanswered_gets_500_retry_after(server):
    with trunk(server) as p:
        ringing = p.call("800", wait=False)
        assert ringing.status < 200
        # The 180 (answer_delay_ms = 1000) carries the server's tag: an early dialog.
        deadline = time.monotonic() + 5
        ring = None
        while ring is None and time.monotonic() < deadline:
            ring = next((r for r in list(p.responses_received)
                         if r.status == 180 and r.call_id == p.call_id and r.to_tag), None)
            time.sleep(0.02)
        assert ring is not None, "no 180 with a To tag"
        p.remote_to = ring.header("to")
        p.local_from = f"<sip:{p.user}@{p.domain}>;tag={p.local_tag}"
        p.remote_target = ring.contact_uri or p.request_uri
        early, _ = raw_reinvite(p)
        assert early.status == 500, early
        assert 0 <= int(early.header("retry-after")) <= 10
        final = p.wait_final(timeout=5)
        assert final.status == 200, final
        assert p.hangup().status == 200
