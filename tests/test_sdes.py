"""SDES a=crypto parsing and the policy choice (sipconf.sdes), no sockets."""

from __future__ import annotations

import base64
import os

import pytest

from sipconf.sdes import SrtpRefused, negotiate, parse_crypto, select_media
from sipconf.sdp import NoCommonCodec, parse_sdp

KEY = os.urandom(30)
INLINE = base64.b64encode(KEY).decode()


def offer(*media: str) -> str:
    return "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" + "".join(media)


def audio(proto: str, port: int = 4000, crypto: tuple[str, ...] = ()) -> str:
    return (f"m=audio {port} {proto} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
            + "".join(f"a=crypto:{c}\r\n" for c in crypto))


@pytest.mark.parametrize("value, ok", [
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}", True),
    (f"1 AES_CM_128_HMAC_SHA1_32 inline:{INLINE}|2^31", True),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}|2^20|1:4", False),      # MKI
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE} UNENCRYPTED_SRTP", False),  # session parameter
    (f"1 AES_256_CM_HMAC_SHA1_80 inline:{INLINE}", False),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", False),                      # short key
    ("1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!", False),
    (f"x AES_CM_128_HMAC_SHA1_80 inline:{INLINE}", False),
    ("", False),
], ids=lambda v: v.replace(INLINE, "KEY") if isinstance(v, str) else None)  # stable ids: the key is random
def test_parse_crypto(value, ok):
    crypto = parse_crypto(value)
    assert (crypto is not None) == ok
    if ok:
        assert crypto.key == KEY and crypto.tag == 1


def test_answer_takes_first_supported_suite_with_a_fresh_key():
    sdp = parse_sdp(offer(audio("RTP/SAVP", crypto=(f"1 AES_256_CM_HMAC_SHA1_80 inline:{INLINE}",
                                                      f"2 AES_CM_128_HMAC_SHA1_32 inline:{INLINE}",
                                                      f"3 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}"))))
    selection, keys = select_media(sdp, "optional")
    assert keys.tag == 2 and keys.suite == "AES_CM_128_HMAC_SHA1_32" and keys.remote_key == KEY
    again = select_media(sdp, "optional")[1]
    assert again.local_key != keys.local_key and len(keys.local_key) == 30
    assert keys.answer_attribute.startswith("2 AES_CM_128_HMAC_SHA1_32 inline:")
    # the same offer again in the call (re-INVITE) keeps our key; a new one changes it
    assert negotiate(sdp.media[0], previous=keys).local_key == keys.local_key
    other = parse_sdp(offer(audio("RTP/SAVP", crypto=(f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}",))))
    assert negotiate(other.media[0], previous=keys).local_key != keys.local_key


def test_policies():
    plain = parse_sdp(offer(audio("RTP/AVP")))
    secure = parse_sdp(offer(audio("RTP/SAVP", crypto=(f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}",))))
    assert select_media(plain, "optional")[1] is None
    assert select_media(secure, "required")[1] is not None
    with pytest.raises(SrtpRefused, match="SRTP required"):
        select_media(plain, "required")
    with pytest.raises(SrtpRefused, match="not allowed"):
        select_media(secure, "off")
    unkeyed = parse_sdp(offer(audio("RTP/SAVP", crypto=("1 F8_128_HMAC_SHA1_80 inline:AAAA",))))
    for policy in ("optional", "required"):
        with pytest.raises(SrtpRefused, match="no supported SRTP crypto suite"):
            select_media(unkeyed, policy)
    # optional: an unkeyable SRTP line does not hide a plain one after it
    both = parse_sdp(offer(audio("RTP/SAVP", crypto=("1 F8_128_HMAC_SHA1_80 inline:AAAA",)),
                           audio("RTP/AVP", port=4002)))
    selection, keys = select_media(both, "optional")
    assert keys is None and selection.media_index == 1
    # codecs still decide a 488 of their own
    with pytest.raises(NoCommonCodec):
        select_media(parse_sdp(offer("m=audio 4000 RTP/AVP 18\r\n")), "optional")
