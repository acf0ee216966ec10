"""RFC 3261 section 17 transactions on a fake clock: no sockets, no sleeping."""

from __future__ import annotations

import pytest

from sipconf.sip.message import Headers, Request, make_response, parse_message
from sipconf.sip.transaction import (AckReceived, AckTimeout, ClientTimeout, Destination, RequestReceived,
                                     ResponseReceived, Send, State, TransactionLayer, response_destination)

PHONE = Destination("UDP", "127.0.0.1", 5062)


def invite(branch: str = "z9hG4bKabc", cseq: int = 1, method: str = "INVITE", via_extra: str = ";rport",
           call_id: str = "call-1") -> Request:
    text = (
        f"{method} sip:800@office.local SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch={branch}{via_extra}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:101@office.local>;tag=ft\r\n"
        "To: <sip:800@office.local>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def ack_for_2xx(cseq: int = 1) -> Request:
    return invite(branch="z9hG4bKack2xx", cseq=cseq, method="ACK")


def sends(events) -> list[Send]:
    return [e for e in events if isinstance(e, Send)]


def new_server_txn(layer: TransactionLayer, request: Request, now: float = 0.0):
    events = layer.receive_request(request, PHONE, now)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    return events[0].transaction


def test_retransmitted_invite_gets_same_answer():
    layer = TransactionLayer()
    txn = new_server_txn(layer, invite())
    trying = make_response(txn.request, 100)
    assert sends(layer.respond(txn, trying, 0.0))[0].message.status == 100
    again = layer.receive_request(invite(), PHONE, 0.3)
    assert [s.message.status for s in sends(again)] == [100]
    assert not any(isinstance(e, RequestReceived) for e in again)


def test_2xx_retransmitted_t1_doubling_to_t2_until_ack():
    layer = TransactionLayer()
    txn = new_server_txn(layer, invite())
    ok = make_response(txn.request, 200, to_tag="tt")
    assert len(sends(layer.respond(txn, ok, 0.0))) == 1
    times = []
    now = 0.0
    while now < 10.0:
        now = round(now + 0.01, 2)
        for event in layer.handle_timers(now):
            if isinstance(event, Send):
                assert event.message.status == 200
                times.append(now)
    # T1=0.5: resends at 0.5, 1.5 (+1), 3.5 (+2), 7.5 (+4, capped at T2)
    assert times == [0.5, 1.5, 3.5, 7.5]
    events = layer.receive_request(ack_for_2xx(), PHONE, 10.0)
    assert isinstance(events[0], AckReceived) and events[0].transaction is txn
    assert not sends(layer.handle_timers(30.0))


def test_no_ack_for_2xx_reports_timeout_after_64_t1():
    layer = TransactionLayer()
    txn = new_server_txn(layer, invite())
    layer.respond(txn, make_response(txn.request, 200, to_tag="tt"), 0.0)
    assert not any(isinstance(e, AckTimeout) for e in layer.handle_timers(31.9))
    events = layer.handle_timers(32.0)
    assert any(isinstance(e, AckTimeout) and e.transaction is txn for e in events)
    assert len(layer) == 0


def test_ack_stops_timeout():
    layer = TransactionLayer()
    txn = new_server_txn(layer, invite())
    layer.respond(txn, make_response(txn.request, 200, to_tag="tt"), 0.0)
    layer.receive_request(ack_for_2xx(), PHONE, 1.0)
    events = layer.handle_timers(40.0)
    assert not any(isinstance(e, AckTimeout) for e in events)
    assert txn.state is State.TERMINATED


def test_late_invite_retransmission_after_ack_is_not_a_new_request():
    layer = TransactionLayer()
    txn = new_server_txn(layer, invite())
    layer.respond(txn, make_response(txn.request, 200, to_tag="tt"), 0.0)
    layer.receive_request(ack_for_2xx(), PHONE, 0.1)
    events = layer.receive_request(invite(), PHONE, 0.2)
    assert not any(isinstance(e, RequestReceived) for e in events)


def test_non_2xx_final_timer_g_and_h():
    layer = TransactionLayer()
    txn = new_server_txn(layer, invite())
    layer.respond(txn, make_response(txn.request, 486), 0.0)
    resent = []
    now = 0.0
    while now < 40.0:
        now = round(now + 0.01, 2)
        resent += [now for e in layer.handle_timers(now) if isinstance(e, Send)]
    assert resent[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(t < 32.0 for t in resent)
    assert txn.state is State.TERMINATED  # Timer H


def test_ack_for_non_2xx_absorbed_and_stops_retransmission():
    layer = TransactionLayer()
    txn = new_server_txn(layer, invite())
    layer.respond(txn, make_response(txn.request, 404), 0.0)
    events = layer.receive_request(invite(method="ACK"), PHONE, 0.1)
    assert events == []  # same branch: the transaction swallows it
    assert txn.state is State.CONFIRMED
    assert not sends(layer.handle_timers(4.0))
    layer.handle_timers(5.2)  # Timer I = T4
    assert txn.state is State.TERMINATED


def test_cancel_finds_its_invite_and_the_invite_gets_487():
    layer = TransactionLayer()
    txn = new_server_txn(layer, invite())
    layer.respond(txn, make_response(txn.request, 180, to_tag="tt"), 0.0)
    cancel_txn = new_server_txn(layer, invite(method="CANCEL"), 0.5)
    assert cancel_txn is not txn
    assert layer.find_invite(cancel_txn.request) is txn
    assert sends(layer.respond(cancel_txn, make_response(cancel_txn.request, 200), 0.5))[0].message.status == 200
    assert sends(layer.respond(txn, make_response(txn.request, 487, to_tag="tt"), 0.5))[0].message.status == 487
    assert layer.find_invite(invite(method="CANCEL", branch="z9hG4bKother")) is None


def test_non_invite_server_absorbs_and_answers_retransmissions():
    layer = TransactionLayer()
    txn = new_server_txn(layer, invite(method="OPTIONS"))
    layer.respond(txn, make_response(txn.request, 200), 0.0)
    again = layer.receive_request(invite(method="OPTIONS"), PHONE, 1.0)
    assert [s.message.status for s in sends(again)] == [200]
    layer.handle_timers(32.1)  # Timer J
    assert len(layer) == 0
    fresh = layer.receive_request(invite(method="OPTIONS"), PHONE, 33.0)
    assert isinstance(fresh[0], RequestReceived)


def test_reliable_transport_has_no_retransmissions():
    layer = TransactionLayer()
    tcp = Destination("TCP", "127.0.0.1", 40000)
    events = layer.receive_request(invite(), tcp, 0.0)
    txn = events[0].transaction
    layer.respond(txn, make_response(txn.request, 200, to_tag="t"), 0.0)
    assert not sends(layer.handle_timers(10.0))


def bye_request(branch: str = "z9hG4bKbye1") -> Request:
    headers = Headers([
        ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"), ("From", "<sip:800@office.local>;tag=a"),
        ("To", "<sip:101@office.local>;tag=b"), ("Call-ID", "c1"), ("CSeq", "1 BYE"), ("Max-Forwards", "70"),
    ])
    return Request("BYE", "sip:101@127.0.0.1:5062", headers)


def test_client_timer_e_schedule_and_timer_f():
    layer = TransactionLayer()
    txn, events = layer.request(bye_request(), PHONE, 0.0)
    assert len(sends(events)) == 1
    resent, timeouts = [], []
    now = 0.0
    while now < 40.0:
        now = round(now + 0.01, 2)
        for event in layer.handle_timers(now):
            if isinstance(event, Send):
                resent.append(now)
            elif isinstance(event, ClientTimeout):
                timeouts.append(now)
    assert resent[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert timeouts == [32.0]
    assert txn.state is State.TERMINATED


def test_client_response_completes_and_absorbs_retransmissions():
    layer = TransactionLayer()
    txn, _ = layer.request(bye_request(), PHONE, 0.0)
    response = make_response(txn.request, 200)
    events = layer.receive_response(response, 0.2)
    assert isinstance(events[0], ResponseReceived) and events[0].response.status == 200
    assert layer.receive_response(response, 0.3) == []
    assert not sends(layer.handle_timers(5.0))
    assert not layer.has_pending_requests()


@pytest.mark.parametrize("via_extra, expected_port", [(";rport", 5062), ("", 5070)])
def test_response_destination_rport(via_extra, expected_port):
    request = invite(via_extra=via_extra)
    # the request came from port 5062 while its Via says 5062; pretend a NAT changed it
    request.headers.set("Via", f"SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKx{via_extra}")
    source = Destination("UDP", "127.0.0.1", 5062)
    destination = response_destination(request, source)
    assert (destination.host, destination.port) == ("127.0.0.1", expected_port)


def test_received_and_rport_stamped_on_the_top_via():
    request = invite()
    request.headers.set("Via", "SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKx;rport")
    layer = TransactionLayer()
    events = layer.receive_request(request, Destination("UDP", "127.0.0.1", 40000), 0.0)
    via = events[0].transaction.request.top_via
    assert via.params["received"] == "127.0.0.1"
    assert via.params["rport"] == "40000"
    response = make_response(events[0].transaction.request, 200)
    assert "received=127.0.0.1" in response.headers.get("Via")
