"""baresip (Debian baresip-core) over TLS with SRTP mandatory (SPEC 11): it
registers over TLS, dials room 800 with an RTP/SAVP offer, types the
conference ID and PIN (RFC 4733, inside SRTP) and streams a tone that a
secure test phone already in the conference must hear."""

from __future__ import annotations

import re
import time

import pytest

from secure_phone import SecurePhone, make_certificate
from support import PASSWORDS, ServerProcess, free_port, free_rtp_range, office_config
from test_baresip_interop import BARESIP, TONE_HZ, Baresip

pytestmark = [
    pytest.mark.skipif(BARESIP is None, reason="baresip (Debian baresip-core) is not installed"),
    pytest.mark.skipif(not __import__("os").path.exists("/usr/lib/baresip/modules/srtp.so"),
                       reason="baresip's srtp module is not installed"),
]


def test_baresip_over_tls_with_mandatory_srtp_joins_and_is_heard(tmp_path):
    cert, key = make_certificate(tmp_path)
    low, high = free_rtp_range()
    tls_port = free_port()
    while low <= tls_port <= high + 1:
        tls_port = free_port()
    config = office_config(server={"language": "en"}, extensions=("101", "102"),
                           extra=f'[tls]\nport = {tls_port}\ncert = "{cert}"\nkey = "{key}"\n')
    server = ServerProcess(tmp_path, config_text=config, rtp_low=low, rtp_high=high).start()
    listener = SecurePhone(("127.0.0.1", tls_port), user="102", password=PASSWORDS["102"], cafile=cert)
    softphone = None
    try:
        assert listener.call("800").status == 200
        time.sleep(0.3)
        listener.send_dtmf("1234#4321#")
        softphone = Baresip(tmp_path, tls_port, "101", PASSWORDS["101"], uri_params=";transport=tls",
                            account_params=";mediaenc=srtp-mand", modules="module srtp.so\n",
                            config=f"sip_cafile {cert}\n")
        assert softphone.wait_for(b"200 OK", 10), softphone.output.decode(errors="replace") + server.log()[-2000:]
        log = server.log()
        assert "register 101: 1 contact" in log
        softphone.type("/dial 800\n", gap=0.05)
        assert softphone.wait_for(b"Call established", 10), softphone.output.decode(errors="replace")
        log = server.log()
        assert "SRTP AES_CM_128_HMAC_SHA1_80" in log or "SRTP AES_CM_128_HMAC_SHA1_32" in log, log[-3000:]
        softphone.pump(1.0)
        softphone.type("1234#4321#")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not listener.hears(TONE_HZ, seconds=0.5, threshold=2000):
            softphone.pump(0.2)
        assert listener.hears(TONE_HZ, seconds=0.5, threshold=2000), server.log()[-3000:]
        log = server.log()
        assert "new call from 101 (extension 101, 127.0.0.1" in log
        assert re.search(r"joined conference 1234 of room 800 as participant \S+ \(2 in the room\)", log), log[-3000:]
        assert listener.srtp_failures == 0
        assert "in clear" not in log  # the keys came over TLS
    finally:
        if softphone is not None:
            softphone.close()
        listener.close()
        server.stop()
