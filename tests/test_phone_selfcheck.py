"""Self-check of the test phone (tests/phone.py); needs no sipconf server."""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import threading
import time

import numpy as np
import pytest

from tests.phone import (TestPhone, alaw_decode, alaw_encode, build_authorization,
                         digest_response, parse_challenges, parse_message, tone,
                         ulaw_decode, ulaw_encode)


# ---------------------------------------------------------------- codecs / digest

@pytest.mark.parametrize("enc,dec", [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_g711_round_trip(enc, dec):
    x = np.arange(-32768, 32768, dtype=np.int32)
    y = dec(enc(x)).astype(np.int32)
    assert len(enc(x)) == len(x)
    big = np.abs(x) > 256
    assert np.max(np.abs(y - x)[big] / np.abs(x[big])) < 0.07   # ~6 % relative (log law)
    assert np.max(np.abs(y - x)[~big]) <= 16
    s = tone(1000, 8000, 8000)
    ys = dec(enc(s)).astype(float)
    snr = 10 * np.log10(np.sum(s.astype(float) ** 2) / np.sum((ys - s) ** 2))
    assert snr > 30


def test_g711_known_codes():
    assert ulaw_encode([0]) == b"\xff" and alaw_encode([0]) == b"\xd5"
    assert ulaw_decode(b"\x00")[0] == -32124 and ulaw_decode(b"\x80")[0] == 32124
    assert alaw_decode(b"\xd5")[0] == 8 and alaw_decode(b"\x2a")[0] == -32256


RFC7616 = dict(username="Mufasa", password="Circle of Life", realm="http-auth@example.org",
               method="GET", uri="/dir/index.html",
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", nc="00000001", qop="auth")


def test_digest_rfc7616_vectors():
    assert digest_response(**RFC7616) == "8ca523f5e9506fed4657c9700eebdbec"
    assert digest_response(**RFC7616, algorithm="SHA-256") == \
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_digest_challenge_parsing_and_header():
    hdr = ('Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
           'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
           'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    (ch,) = parse_challenges(hdr)
    assert ch["realm"] == "http-auth@example.org" and ch["qop"] == "auth, auth-int"
    value = build_authorization(ch, username="Mufasa", password="Circle of Life", method="GET",
                                uri="/dir/index.html", nc=1, cnonce=RFC7616["cnonce"])
    assert 'response="8ca523f5e9506fed4657c9700eebdbec"' in value
    assert "qop=auth," in value and "nc=00000001" in value and 'opaque="FQhe' in value
    two = parse_challenges('Digest realm="a", nonce="1", algorithm=SHA-256, Digest realm="a", nonce="2"')
    assert [c.get("algorithm", "MD5") for c in two] == ["SHA-256", "MD5"]


def test_parse_compact_headers():
    m = parse_message(b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 1.2.3.4:5;branch=z9hG4bKx, SIP/2.0/UDP h\r\n"
                      b"f: <sip:a@b>;tag=1\r\nt: <sip:c@d>;tag=2\r\ni: cid\r\nCSeq: 3 INVITE\r\n"
                      b"m: <sip:c@1.2.3.4:5070>\r\nc: application/sdp\r\nl: 4\r\n\r\nabcdEXTRA")
    assert m.status == 200 and m.top_branch == "z9hG4bKx" and m.call_id == "cid"
    assert m.from_tag == "1" and m.to_tag == "2" and m.cseq == (3, "INVITE")
    assert m.contact_uri == "sip:c@1.2.3.4:5070" and m.body == b"abcd"
    assert m.header("Content-Type") == "application/sdp"
    assert len(m.header_values("via")) == 2


# ---------------------------------------------------------------- RTP phone to phone

@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_two_phones_exchange_tone(codec):
    with TestPhone(user="a") as a, TestPhone(user="b") as b:
        assert a.rtp_port % 2 == 0 and b.rtp_port % 2 == 0
        a.set_remote_rtp(b.rtp_address, codec)
        b.set_remote_rtp(a.rtp_address, codec)
        a.send_tone(1000, 8000)
        b.send_tone(None)
        assert b.wait_for_rtp(40, timeout=3)
        time.sleep(1.1)
        assert b.hears(1000)
        assert 6000 < b.tone_level(1000) < 10000
        assert not b.hears(440)
        assert b.tone_level(440) < 100
        assert abs(b.dominant_frequency() - 1000) < 5
        # a receives b's silence
        assert a.wait_for_rtp(20, timeout=2)
        assert not a.hears(1000) and a.rms() < 50
        # header continuity: constant SSRC, consecutive seq, ts +160
        hs = [h for h in b.rtp_headers]
        assert len({h.ssrc for h in hs}) == 1 and b.rtp_ssrcs_seen == [hs[0].ssrc]
        seqs = [h.seq for h in hs]
        assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:]))
        tss = [h.ts for h in hs]
        assert all((y - x) % 2 ** 32 == 160 for x, y in zip(tss, tss[1:]))
        assert all(h.payload_len == 160 for h in hs)
        assert b.rtp_source == a.rtp_address
        # change of tone, and stop
        t0 = time.monotonic()
        a.send_tone(440, 4000)
        time.sleep(0.6)
        assert b.hears(440, seconds=0.4) and not b.hears(1000, seconds=0.4)
        assert 3000 < b.tone_level(440, 0.4) < 5000
        assert len(b.received_audio(since=t0)) > 0.4 * 8000
        a.stop_audio()
        n = b.rtp_packets_received
        time.sleep(0.3)
        assert b.rtp_packets_received - n <= 2
        time.sleep(0.5)
        assert not b.hears(440, seconds=0.4)   # nothing arrived lately -> 0


# ---------------------------------------------------------------- fake UAS

class FakeUAS:
    """A scripted SIP peer on a plain UDP socket, plus an RTP sink socket."""

    def __init__(self, password="secret", realm="office.local", compact=False, drop_first=False,
                 algorithms=("MD5",)):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.settimeout(0.1)
        self.password, self.realm, self.compact = password, realm, compact
        self.drop_first, self.algorithms = drop_first, algorithms
        self.received: list = []       # (raw text, addr)
        self.rtp_packets: list = []    # raw datagrams
        self.nonce = "abc123nonce"
        self.stop = threading.Event()
        self.to_tag = "uas1"
        self.auth_ok = []
        self.phone_addr = None
        self.last_invite = None
        self.threads = [threading.Thread(target=self._sip, daemon=True),
                        threading.Thread(target=self._rtp, daemon=True)]
        for t in self.threads:
            t.start()

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(2)
        self.sock.close()
        self.rtp.close()

    def _rtp(self):
        while not self.stop.is_set():
            try:
                data, _ = self.rtp.recvfrom(2048)
            except socket.timeout:
                continue
            self.rtp_packets.append(data)

    @staticmethod
    def hdr(text, name, compact=None):
        for line in text.split("\r\n")[1:]:
            if not line:
                break
            k, _, v = line.partition(":")
            if k.strip().lower() in (name.lower(), compact):
                return v.strip()
        return None

    def reply(self, req, addr, status, reason, extra=(), body="", to_tag=None):
        vias = [l.split(":", 1)[1].strip() for l in req.split("\r\n") if l.lower().startswith("via:")]
        to = self.hdr(req, "to")
        if to_tag and ";tag=" not in to:
            to += f";tag={to_tag}"
        names = ("v", "f", "t", "i", "l") if self.compact else ("Via", "From", "To", "Call-ID", "Content-Length")
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"{names[0]}: {v}" for v in vias]
        lines += [f"{names[1]}: {self.hdr(req, 'from')}", f"{names[2]}: {to}",
                  f"{names[3]}: {self.hdr(req, 'call-id')}", f"CSeq: {self.hdr(req, 'cseq')}"]
        lines += list(extra)
        lines.append(f"{names[4]}: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
        self.sock.sendto(data, addr)
        return data

    def check_auth(self, req, method):
        value = self.hdr(req, "authorization") or self.hdr(req, "proxy-authorization")
        if not value:
            return False
        p = dict((k, v.strip('"')) for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value))
        alg = p.get("algorithm", "MD5").upper()
        h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[alg]
        H = lambda s: h(s.encode()).hexdigest()  # noqa: E731
        ha1 = H(f"{p['username']}:{self.realm}:{self.password}")
        ha2 = H(f"{method}:{p['uri']}")
        want = H(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")
        ok = p["response"] == want and p["nonce"] == self.nonce and p["qop"] == "auth"
        self.auth_ok.append((method, alg, ok))
        return ok

    def sdp(self, offer=None):
        """Answer: the first offered of PCMU/PCMA, and the offer's telephone-event pt."""
        port = self.rtp.getsockname()[1]
        offer = offer or self.last_invite or ""
        m = re.search(r"m=audio \d+ RTP/AVP ([\d ]+)", offer)
        pts = [int(x) for x in m.group(1).split()] if m else [8]
        codec = next(pt for pt in pts if pt in (0, 8))
        te = re.search(r"a=rtpmap:(\d+) telephone-event", offer)
        te = int(te.group(1)) if te else 96
        name = {0: "PCMU", 8: "PCMA"}[codec]
        return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {port} RTP/AVP {codec} {te}\r\na=rtpmap:{codec} {name}/8000\r\n"
                f"a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\na=ptime:20\r\na=sendrecv\r\n")

    def _sip(self):
        seen_first = False
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            req = data.decode()
            self.received.append((req, addr))
            self.phone_addr = addr
            method = req.split(" ", 1)[0]
            if self.drop_first and not seen_first:
                seen_first = True
                continue  # force a Timer A retransmission
            if method in ("REGISTER", "INVITE"):
                if not self.check_auth(req, method):
                    chal = [f'WWW-Authenticate: Digest realm="{self.realm}", nonce="{self.nonce}", '
                            f'qop="auth", algorithm={a}' for a in self.algorithms]
                    self.reply(req, addr, 401, "Unauthorized", chal, to_tag=self.to_tag)
                    continue
                if method == "REGISTER":
                    self.reply(req, addr, 200, "OK", [f"Contact: {self.hdr(req, 'contact')};expires=60"])
                    continue
                self.last_invite = req
                self.reply(req, addr, 100, "Trying")
                self.reply(req, addr, 180, "Ringing", to_tag=self.to_tag)
                m = "m" if self.compact else "Contact"
                c = "c" if self.compact else "Content-Type"
                ok = self.reply(req, addr, 200, "OK",
                                [f"{m}: <sip:conf@{self.addr[0]}:{self.addr[1]};transport=udp>",
                                 f"{c}: application/sdp"], body=self.sdp(), to_tag=self.to_tag)
                self.ok_200 = ok
            elif method in ("BYE", "INFO", "OPTIONS"):
                self.reply(req, addr, 200, "OK")

    def wait_for(self, method, count=1, timeout=3.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r, _ in self.received if r.startswith(method + " ")]
            if len(got) >= count:
                return got
            time.sleep(0.01)
        return [r for r, _ in self.received if r.startswith(method + " ")]

    def send_request(self, text):
        self.sock.sendto(text.encode(), self.phone_addr)


@pytest.fixture
def uas():
    u = FakeUAS()
    yield u
    u.close()


def _decode_events(packets, te_pt):
    """By hand: RFC 4733 packets -> list of (ssrc, seq, ts, marker, event, end, duration)."""
    out = []
    for d in packets:
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", d[:12])
        assert b0 == 0x80
        if b1 & 0x7F != te_pt:
            continue
        ev, flags, dur = struct.unpack("!BBH", d[12:16])
        out.append((ssrc, seq, ts, bool(b1 & 0x80), ev, bool(flags & 0x80), dur))
    return out


def _digits(events):
    names = "0123456789*#ABCD"
    digits, done = [], set()
    for ssrc, _seq, ts, _m, ev, end, _d in events:
        if end and (ssrc, ts, ev) not in done:
            done.add((ssrc, ts, ev))
            digits.append(names[ev])
    return "".join(digits)


def test_call_with_digest_ack_dtmf_and_bye(uas):
    with TestPhone(uas.addr, user="101", password="secret", codecs=("PCMA", "PCMU"),
                   telephone_event_pt=96) as p:
        r = p.call("800")
        assert r.status == 200
        assert [x.status for x in p.provisionals] == [100, 180]
        invites = uas.wait_for("INVITE", 2)
        assert len(invites) == 2
        first, second = invites
        assert "Authorization" not in first and "Authorization: Digest" in second
        assert uas.auth_ok == [("INVITE", "MD5", True)]
        assert re.search(r"^INVITE sip:800@office\.local SIP/2\.0", second)
        # same dialog identifiers, CSeq incremented, new branch
        assert FakeUAS.hdr(first, "call-id") == FakeUAS.hdr(second, "call-id")
        assert FakeUAS.hdr(first, "cseq") == "1 INVITE" and FakeUAS.hdr(second, "cseq") == "2 INVITE"
        b1 = re.search(r"branch=(z9hG4bK[^;\s]+)", first).group(1)
        b2 = re.search(r"branch=(z9hG4bK[^;\s]+)", second).group(1)
        assert b1 != b2 and ";rport" in first
        # SDP offer
        assert "m=audio %d RTP/AVP 8 0 96" % p.rtp_port in second
        assert "a=rtpmap:96 telephone-event/8000" in second and "a=fmtp:96 0-16" in second
        # two ACKs: the 401 one (same branch, same R-URI) and the 200 one (new branch, to Contact)
        acks = uas.wait_for("ACK", 2)
        assert len(acks) == 2
        assert acks[0].startswith("ACK sip:800@office.local ") and b1 in acks[0]
        assert FakeUAS.hdr(acks[0], "cseq") == "1 ACK"
        assert acks[1].startswith("ACK sip:conf@127.0.0.1:%d;transport=udp " % uas.addr[1])
        assert b2 not in acks[1] and b1 not in acks[1] and FakeUAS.hdr(acks[1], "cseq") == "2 ACK"
        assert ";tag=uas1" in FakeUAS.hdr(acks[1], "to")
        # answer parsed
        assert p.remote_rtp == ("127.0.0.1", uas.rtp.getsockname()[1])
        assert (p.answer_pt, p.answer_codec, p.answer_te_pt) == (8, "PCMA", 96)
        # a retransmitted 200 gets the ACK again
        uas.sock.sendto(uas.ok_200, uas.phone_addr)
        assert len(uas.wait_for("ACK", 3)) == 3
        # auto media: silence flows; then DTMF in the same stream
        time.sleep(0.2)
        p.send_dtmf("1#", duration_ms=80, gap_ms=60)
        p.send_dtmf("11", same_timestamp=True)   # SIPp-like repeated timestamps
        time.sleep(0.1)
        pkts = list(uas.rtp_packets)
        evs = _decode_events(pkts, 96)
        first4 = [e for e in evs if e[4] in (1, 11)]
        # 80 ms digit: 3 start/continuation packets then 3 end packets, same ts, marker on first
        d1 = first4[:6]
        assert [e[5] for e in d1] == [False] * 3 + [True] * 3
        assert [e[3] for e in d1] == [True] + [False] * 5
        assert len({e[2] for e in d1}) == 1 and d1[0][4] == 1
        assert [e[6] for e in d1] == [160, 320, 480, 640, 640, 640]
        d2 = first4[6:12]
        assert d2[0][4] == 11 and d2[0][2] != d1[0][2]
        assert _digits(evs[:12]) == "1#"
        # the '11' shares one timestamp: two marker packets start two events
        tail = evs[12:]
        assert len({e[2] for e in tail}) == 1 and sum(e[3] for e in tail) == 2
        assert len(tail) == 2 * (4 + 3)
        # same SSRC, increasing sequence across audio and events
        ssrcs = {struct.unpack("!I", d[8:12])[0] for d in pkts}
        assert len(ssrcs) == 1
        seqs = [struct.unpack("!H", d[2:4])[0] for d in pkts]
        assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:]))
        audio = [d for d in pkts if d[1] & 0x7F == 8]
        assert audio and all(len(d) == 172 for d in audio)
        # SIP INFO DTMF
        p.send_dtmf("5", mode="info", duration_ms=160)
        (info,) = uas.wait_for("INFO", 1)
        assert "Content-Type: application/dtmf-relay" in info
        assert info.endswith("Signal=5\r\nDuration=160\r\n")
        assert info.startswith("INFO sip:conf@127.0.0.1:")
        # hang up
        r = p.hangup()
        assert r.status == 200
        (bye,) = uas.wait_for("BYE", 1)
        assert bye.startswith("BYE sip:conf@127.0.0.1:") and ";tag=uas1" in FakeUAS.hdr(bye, "to")
        n = len(uas.rtp_packets)
        time.sleep(0.2)
        assert len(uas.rtp_packets) - n <= 1


def test_compact_headers_server_bye_and_reinvite():
    uas = FakeUAS(compact=True)
    try:
        with TestPhone(uas.addr, user="102", password="secret", codecs=("PCMU", "PCMA")) as p:
            r = p.call("800")
            assert r.status == 200 and p.answer_codec == "PCMU" and p.dialog_up
            assert p.answer_te_pt == 101
            acks = uas.wait_for("ACK", 2)
            assert acks[1].startswith("ACK sip:conf@127.0.0.1:")
            invite = uas.last_invite
            cid = FakeUAS.hdr(invite, "call-id")
            ftag = re.search(r"tag=(\w+)", FakeUAS.hdr(invite, "from")).group(1)
            base = (f"SIP/2.0/UDP 127.0.0.1:{uas.addr[1]};branch=z9hG4bK{{b}}\r\n"
                    f"f: <sip:800@office.local>;tag=uas1\r\n"
                    f"t: <sip:102@office.local>;tag={ftag}\r\ni: {cid}\r\n")
            # server re-INVITE (hold) -> 200 with our SDP, retransmitted until ACK
            sdp = uas.sdp().replace("a=sendrecv", "a=sendonly")
            uas.send_request(f"INVITE sip:102@127.0.0.1:{p.sip_port} SIP/2.0\r\nv: "
                             + base.format(b="re1") + f"CSeq: 10 INVITE\r\nc: application/sdp\r\n"
                             f"l: {len(sdp)}\r\n\r\n{sdp}")
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and not any(
                    r.startswith("SIP/2.0 200") and "10 INVITE" in r for r, _ in uas.received):
                time.sleep(0.01)
            ok = [r for r, _ in uas.received if r.startswith("SIP/2.0 200") and "10 INVITE" in r]
            assert ok and "m=audio %d RTP/AVP" % p.rtp_port in ok[0]
            assert p.answer_direction == "sendonly"
            uas.send_request(f"ACK sip:102@127.0.0.1:{p.sip_port} SIP/2.0\r\nv: "
                             + base.format(b="ack1") + "CSeq: 10 ACK\r\nl: 0\r\n\r\n")
            # OPTIONS in dialog
            uas.send_request(f"OPTIONS sip:102@127.0.0.1:{p.sip_port} SIP/2.0\r\nv: "
                             + base.format(b="op1") + "CSeq: 11 OPTIONS\r\nl: 0\r\n\r\n")
            # server BYE
            assert not p.wait_for_bye(0.05)
            uas.send_request(f"BYE sip:102@127.0.0.1:{p.sip_port} SIP/2.0\r\nv: "
                             + base.format(b="bye1") + "CSeq: 12 BYE\r\nl: 0\r\n\r\n")
            assert p.wait_for_bye(2)
            assert p.last_request_received.method == "BYE"
            assert not p.dialog_up
            time.sleep(0.1)
            finals = [r for r, _ in uas.received if r.startswith("SIP/2.0 ")]
            assert any("11 OPTIONS" in r and r.startswith("SIP/2.0 200") for r in finals)
            assert any("12 BYE" in r and r.startswith("SIP/2.0 200") for r in finals)
            ok_count = sum(1 for r in finals if "10 INVITE" in r)
            time.sleep(1.0)  # ACK arrived: no more 200 retransmissions
            assert sum(1 for r, _ in uas.received if r.startswith("SIP/2.0") and "10 INVITE" in r) == ok_count
            n = len(uas.rtp_packets)
            time.sleep(0.2)
            assert len(uas.rtp_packets) - n <= 1   # media stopped after BYE
    finally:
        uas.close()


def test_register_retransmits_and_picks_first_supported_algorithm():
    uas = FakeUAS(password="pw", drop_first=True, algorithms=("SHA-256", "MD5"))
    try:
        with TestPhone(uas.addr, user="101", password="pw") as p:
            t0 = time.monotonic()
            r = p.register(expires=60)
            assert r.status == 200
            assert time.monotonic() - t0 >= 0.4   # the first REGISTER was dropped: Timer A
            regs = uas.wait_for("REGISTER", 3)
            assert regs[0] == regs[1]               # identical retransmission
            assert uas.auth_ok == [("REGISTER", "SHA-256", True)]
            assert "Expires: 60" in regs[2] and regs[2].startswith("REGISTER sip:office.local SIP/2.0")
        with TestPhone(uas.addr, user="101", password="pw", digest_algorithms=["MD5"]) as p:
            assert p.register().status == 200
            assert uas.auth_ok[-1] == ("REGISTER", "MD5", True)
    finally:
        uas.close()


def test_timeout_is_bounded():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        with TestPhone(s.getsockname()) as p:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                p.options(timeout=1.2)
            assert time.monotonic() - t0 < 2
        s.settimeout(0.2)
        got = []
        try:
            while True:
                got.append(s.recv(4096))
        except socket.timeout:
            pass
        assert len(got) >= 2   # initial + Timer A retransmission
    finally:
        s.close()


def test_close_releases_threads():
    before = threading.active_count()
    p = TestPhone(user="x")
    p.set_remote_rtp(("127.0.0.1", 9), "PCMU")
    p.send_tone(500)
    time.sleep(0.1)
    p.close()
    p.close()  # idempotent
    time.sleep(0.1)
    assert threading.active_count() <= before
