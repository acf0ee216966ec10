"""The test phone taught SIP over TLS and SRTP with SDES keys (SPEC 11).

``SecurePhone`` is a ``TestPhone`` whose signalling goes over one TLS
connection (``tls=True``; it trusts the test's own certificate) and whose
media is SRTP (``srtp=True``): it offers ``RTP/SAVP`` with an ``a=crypto``
line of its own fresh key, reads the server's key from the answer, and
protects/unprotects every RTP packet with pylibsrtp. Imports nothing from
sipconf or mixer.

Extras: ``srtp_failures`` (packets from the server that failed to
unprotect), ``send_tampered()`` (one SRTP packet with a flipped payload
byte), ``rekey()`` (re-INVITE with a new key), ``suites`` (the offer's
crypto lines, in order), ``crypto_lines`` (written verbatim instead).
"""

from __future__ import annotations

import base64
import os
import re
import select
import socket
import ssl
import struct
import threading
import time

from pylibsrtp import Error as SrtpError, Policy, Session

from phone import TestPhone, parse_message

SUITE_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
_CRYPTO = re.compile(r"^a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", re.M)


def client_context(cafile: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile:
        context.load_verify_locations(cafile)
        context.check_hostname = False  # the test certificate names 127.0.0.1 as an IP SAN; keep it simple
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SecurePhone(TestPhone):
    __test__ = False

    def __init__(self, server=("127.0.0.1", 5061), *, tls=True, srtp=True, cafile=None,
                 suites=("AES_CM_128_HMAC_SHA1_80",), crypto_lines=None, **kw):
        self.tls = tls
        self.srtp = srtp
        self.suites = tuple(suites)
        self.crypto_lines = crypto_lines
        self.srtp_failures = 0
        self.srtp_suite: str | None = None
        self._tx_session: Session | None = None
        self._rx_session: Session | None = None
        self._local_keys: dict[str, bytes] = {}
        self._tls_lock = threading.Lock()
        self._tls_sock: ssl.SSLSocket | None = None
        self._tls_buffer = b""
        if tls:
            raw = socket.create_connection((server[0], int(server[1])), timeout=5)
            self._tls_sock = client_context(cafile).wrap_socket(raw)
            self._tls_sock.setblocking(False)
            self._tls_local = self._tls_sock.getsockname()
        self._new_keys()
        super().__init__(server, **kw)

    # -- TLS signalling -------------------------------------------------------------
    def send_raw(self, data: bytes, addr=None):
        if not self.tls:
            return super().send_raw(data, addr)
        sock = self._tls_sock
        view = memoryview(data)
        deadline = time.monotonic() + 5
        with self._tls_lock:
            while view and time.monotonic() < deadline:
                try:
                    sent = sock.send(view)
                    view = view[sent:]
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    select.select([], [sock], [], 0.05)

    def _via(self, branch):
        if not self.tls:
            return super()._via(branch)
        return f"SIP/2.0/TLS {self.local_ip}:{self._tls_local[1]};branch={branch};rport"

    def _contact(self):
        if not self.tls:
            return super()._contact()
        return f"<sip:{self.user}@{self.local_ip}:{self._tls_local[1]};transport=tls>"

    def _sip_loop(self):
        if not self.tls:
            return super()._sip_loop()
        sock = self._tls_sock
        while not self._closed.is_set():
            if not sock.pending():
                try:
                    ready, _, _ = select.select([sock], [], [], 0.1)
                except (OSError, ValueError):
                    return
                if not ready:
                    continue
            with self._tls_lock:
                try:
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue
                except (OSError, ValueError):
                    return
            if not data:
                return  # the server closed the connection
            self._tls_buffer += data
            for message in self._frames():
                try:
                    msg = parse_message(message, self.server)
                    if msg is None:
                        continue
                    if msg.is_request:
                        self._on_request(msg)
                    else:
                        self._on_response(msg)
                except Exception:
                    continue

    def _frames(self):
        """Whole messages off the stream (Content-Length framing, RFC 3261 18.3)."""
        out = []
        while True:
            buf = self._tls_buffer.lstrip(b"\r\n")
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._tls_buffer = buf
                return out
            m = re.search(rb"(?im)^(content-length|l)\s*:\s*(\d+)", buf[:end])
            length = int(m.group(2)) if m else 0
            if len(buf) < end + 4 + length:
                self._tls_buffer = buf
                return out
            out.append(buf[:end + 4 + length])
            self._tls_buffer = buf[end + 4 + length:]

    def close(self, hangup: bool = True):
        super().close(hangup)
        if self._tls_sock is not None:
            try:
                self._tls_sock.close()
            except OSError:
                pass

    # -- SDES offer/answer ------------------------------------------------------------
    def _new_keys(self) -> None:
        self._local_keys = {suite: os.urandom(30) for suite in SUITE_PROFILES}

    def _sdp(self, direction="sendrecv") -> bytes:
        body = super()._sdp(direction)
        if not self.srtp:
            return body
        text = body.decode().replace(" RTP/AVP ", " RTP/SAVP ", 1)
        lines = self.crypto_lines
        if lines is None:
            lines = [f"{i + 1} {suite} inline:{base64.b64encode(self._local_keys.get(suite, os.urandom(30))).decode()}"
                     for i, suite in enumerate(self.suites)]
        crypto = "".join(f"a=crypto:{line}\r\n" for line in lines)
        return text.replace("a=ptime:", crypto + "a=ptime:", 1).encode()

    def _apply_remote_sdp(self, sdp: dict, offer=False):
        super()._apply_remote_sdp(sdp, offer)
        if not self.srtp:
            return
        found = _CRYPTO.search(sdp.get("raw") or "")
        with self._tx_lock:
            if found is None:
                self._rx_session = self._tx_session = None
                self.srtp_suite = None
                return
            suite = found.group(2)
            profile = SUITE_PROFILES[suite]
            remote_key = base64.b64decode(found.group(3))
            self.srtp_suite = suite
            self._rx_session = Session(Policy(key=remote_key, ssrc_type=Policy.SSRC_ANY_INBOUND,
                                              srtp_profile=profile))
            tx = Policy(key=self._local_keys[suite], ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
            tx.allow_repeat_tx = True
            self._tx_session = Session(tx)

    # -- SRTP media -------------------------------------------------------------------
    def _rtp_out(self, packet: bytes) -> bytes:
        session = self._tx_session
        if not self.srtp:
            return packet
        if session is None:
            return b""  # no key yet: send nothing usable
        return session.protect(packet)

    def _rtp_in(self, data: bytes):
        if not self.srtp:
            return data
        session = self._rx_session
        if session is None:
            return None
        try:
            return session.unprotect(data)
        except SrtpError:
            self.srtp_failures += 1
            return None

    def send_tampered(self, payload_bytes: int = 160) -> None:
        """One SRTP packet of ours with a payload byte flipped after protection."""
        with self._tx_lock:
            hdr = struct.pack("!BBHII", 0x80, self.answer_pt, self._seq, self._ts, self.ssrc)
            self._seq = (self._seq + 1) & 0xFFFF
            packet = bytearray(self._tx_session.protect(hdr + b"\xff" * payload_bytes))
        packet[20] ^= 0x01
        self.rtp_sock.sendto(bytes(packet), self.remote_rtp)

    def send_rtcp(self, *, valid: bool = True) -> None:
        """One SRTCP receiver report (RTCP RR, no blocks) to the server's RTCP
        port; ``valid=False`` flips a byte after protection."""
        with self._tx_lock:
            packet = bytearray(self._tx_session.protect_rtcp(struct.pack("!BBHI", 0x80, 201, 1, self.ssrc)))
        if not valid:
            packet[5] ^= 0x01
        self.rtp_sock.sendto(bytes(packet), (self.remote_rtp[0], self.remote_rtp[1] + 1))

    def send_raw_rtp(self, data: bytes) -> None:
        """Any datagram to the server's RTP port, as is (e.g. truncated SRTP)."""
        self.rtp_sock.sendto(data, self.remote_rtp)

    def protect(self, packet: bytes) -> bytes:
        """A crafted packet protected with our current key by a session of its
        own (use another SSRC than the stream's: libsrtp tracks indexes per SSRC)."""
        with self._tx_lock:
            suite = self.srtp_suite or self.suites[0]
            policy = Policy(key=self._local_keys[suite], ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                            srtp_profile=SUITE_PROFILES[suite])
            policy.allow_repeat_tx = True
            return Session(policy).protect(packet)

    def rekey(self, *, timeout=5.0):
        """re-INVITE with a fresh key of ours; the answer's key is applied."""
        with self._tx_lock:
            self._new_keys()
            suite = self.srtp_suite or self.suites[0]
            tx = Policy(key=self._local_keys[suite], ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                        srtp_profile=SUITE_PROFILES[suite])
            tx.allow_repeat_tx = True
            self._tx_session = Session(tx)
        return self.reinvite("sendrecv", timeout=timeout)


def make_certificate(directory, name: str = "server", common_name: str = "sipconf.test"):
    """A self-signed certificate for 127.0.0.1 and its unencrypted key, as
    PEM files in ``directory``: (cert path, key path)."""
    import datetime
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory = Path(directory)
    cert_path, key_path = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)
