"""Call records (``[server] cdr_file``, SPEC 13) from the real server: one JSON
line per ended call, joined or not, with every field."""

from __future__ import annotations

import datetime
import json
import re
import time
from pathlib import Path

import pytest

from phone import TestPhone
from support import PASSWORDS, ROOM_DID, office_config, wait_until

FIELDS = {"call_id", "from", "to", "flow", "room", "conference", "start", "answer", "end", "duration_s",
          "end_reason", "codec", "srtp", "moderator"}


def records(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def record_of(path: Path, call_id: str, timeout: float = 5.0) -> dict:
    found = wait_until(lambda: [r for r in records(path) if r["call_id"] == call_id], timeout)
    assert found, f"no call record for {call_id}: {records(path)}"
    assert len(found) == 1, found
    record = found[0]
    assert set(record) == FIELDS, record
    return record


def when(text: str) -> datetime.datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def cdr_server(make_server, tmp_path):
    path = tmp_path / "cdr.jsonl"
    server = make_server(office_config(server={"cdr_file": str(path), "language": "en", "answer_delay_ms": 300}))
    return server, path


@pytest.mark.integration
def test_joined_call_has_a_full_record(cdr_server):
    server, path = cdr_server
    phone = TestPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"])
    try:
        assert phone.call("800").status == 200
        assert phone.wait_for_rtp(5, timeout=3)
        phone.send_dtmf("1234#4321#")
        assert wait_until(lambda: "joined conference 1234 of room 800" in server.log(), 10)
        time.sleep(1.0)
        assert phone.hangup().status == 200
        record = record_of(path, phone.call_id)
    finally:
        phone.close()
    assert record["from"] == "101" and record["to"] == "800"
    assert record["flow"] == "room" and record["room"] == "800" and record["conference"] == "1234"
    assert record["end_reason"] == "caller hung up (BYE)"
    assert record["codec"] == "PCMU/8000"
    assert record["srtp"] is False and record["moderator"] is False
    start, answer, end = when(record["start"]), when(record["answer"]), when(record["end"])
    assert start < answer < end
    assert 0.25 <= (answer - start).total_seconds() < 1.0  # answer_delay_ms = 300
    assert record["duration_s"] == pytest.approx((end - answer).total_seconds(), abs=0.002)
    assert record["duration_s"] > 1.0


@pytest.mark.integration
def test_call_that_failed_the_pin_has_a_record(cdr_server):
    server, path = cdr_server
    phone = TestPhone(("127.0.0.1", server.sip_port), user="102", password=PASSWORDS["102"])
    try:
        assert phone.call("800").status == 200
        assert phone.wait_for_rtp(5, timeout=3)
        phone.send_dtmf("1234#0000#1234#0000#1234#0000#")
        assert phone.wait_for_bye(25), server.log()[-2000:]
        record = record_of(path, phone.call_id)
    finally:
        phone.close()
    assert record["from"] == "102" and record["to"] == "800"
    assert record["flow"] == "room" and record["room"] == "800"
    assert record["conference"] is None
    assert record["end_reason"].startswith("too many wrong conference IDs or PINs")
    assert record["answer"] is not None and record["duration_s"] > 0


@pytest.mark.integration
def test_unknown_number_and_cancelled_call_have_records(cdr_server):
    server, path = cdr_server
    phone = TestPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"])
    trunk = TestPhone(("127.0.0.1", server.sip_port), local_ip="127.0.0.2", user="+33611000001")
    try:
        assert phone.call("999").status == 404
        not_found = record_of(path, phone.call_id)
        # a trunk call to the room's number, cancelled while it rings
        ringing = trunk.call(ROOM_DID, wait=False)
        assert ringing.status < 200
        time.sleep(0.1)
        assert trunk.cancel().status == 200
        assert trunk.wait_final().status == 487
        cancelled = record_of(path, trunk.call_id)
    finally:
        phone.close(hangup=False)
        trunk.close(hangup=False)
    assert not_found["to"] == "999" and not_found["from"] == "101"
    assert not_found["end_reason"] == "404 Not Found"
    assert not_found["answer"] is None and not_found["duration_s"] == 0
    assert not_found["flow"] is None and not_found["room"] is None and not_found["codec"] is None
    assert cancelled["from"] == "+33611000001" and cancelled["flow"] == "room" and cancelled["room"] == "800"
    assert cancelled["end_reason"] == "cancelled by caller"
    assert cancelled["answer"] is None and cancelled["duration_s"] == 0
    assert cancelled["codec"] == "PCMU/8000"
    # the 407 challenge of the authenticated call is not a call of its own
    assert len([r for r in records(path) if r["call_id"] == phone.call_id]) == 1


@pytest.mark.integration
def test_unwritable_cdr_file_is_logged_once_and_calls_go_on(make_server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    server = make_server(office_config(server={"cdr_file": str(blocker / "cdr.jsonl")}))
    phone = TestPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"])
    try:
        for _ in range(3):
            assert phone.call("999").status == 404
        assert phone.call("800").status == 200
        assert phone.wait_for_rtp(5, timeout=3)
        assert phone.hangup().status == 200
        assert wait_until(lambda: "cdr_file" in server.log(), 5)
        time.sleep(0.3)
    finally:
        phone.close()
    assert len(re.findall(r"cdr_file .* cannot be written", server.log())) == 1
    assert server.alive()


@pytest.mark.integration
def test_sigterm_writes_the_records_of_the_calls_it_ends(cdr_server):
    server, path = cdr_server
    phone = TestPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"])
    try:
        assert phone.call("800").status == 200
        assert phone.wait_for_rtp(5, timeout=3)
        phone.send_dtmf("1234#4321#")
        assert wait_until(lambda: "joined conference 1234 of room 800" in server.log(), 10)
        assert server.stop() == 0
        record = record_of(path, phone.call_id, timeout=0.5)  # written before the process exited
    finally:
        phone.close(hangup=False)
    assert record["end_reason"] == "server shutdown; BYE sent"
    assert record["conference"] == "1234"
