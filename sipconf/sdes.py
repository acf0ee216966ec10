"""SDES (RFC 4568): SRTP keys in SDP ``a=crypto`` lines, and the per-caller
SRTP policy (SPEC 11).

An ``RTP/SAVP`` offer lists ``a=crypto:<tag> <suite> inline:<key||salt>[|lifetime][|MKI:len]``
lines in its order of preference; we answer with the first one whose suite
we support, the same tag and suite, and a fresh random key of our own.
"""

from __future__ import annotations

from typing import Sequence

import base64
import binascii
import os
import re
from dataclasses import dataclass

from mixer.srtp import SUITES, key_length

from .sdp import AudioSelection, MediaDescription, NoCommonCodec, SdpError, SessionDescription, select_audio

#: per-extension / per-trunk ``srtp`` values (SPEC 11)
POLICIES = ("optional", "required", "off")
SECURE_PROTOS = ("RTP/SAVP",)
PLAIN_PROTOS = ("RTP/AVP", "RTP/AVPF")

_TAG = re.compile(r"[0-9]{1,9}")
_LIFETIME = re.compile(r"(2\^)?[0-9]{1,20}")


class SrtpRefused(SdpError):
    """The offer cannot be answered under the caller's SRTP policy or has no
    supported crypto suite: SIP 488 with ``warning`` as the Warning text."""

    def __init__(self, warning: str) -> None:
        super().__init__(warning)
        self.warning = warning


@dataclass(frozen=True)
class Crypto:
    tag: int
    suite: str
    key: bytes  # master key || master salt


@dataclass(frozen=True)
class SrtpKeys:
    """What a call's SRTP needs: the suite, the peer's key, ours, and the
    ``a=crypto`` value of our answer."""

    suite: str
    remote_key: bytes
    local_key: bytes
    tag: int

    @property
    def answer_attribute(self) -> str:
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.local_key).decode()}"


def parse_crypto(value: str) -> Crypto | None:
    """One ``a=crypto`` value, or None when it is malformed or asks for what
    we do not do (an unknown suite, several keys, an MKI, session parameters
    such as UNENCRYPTED_SRTP): RFC 4568 lets the answerer skip such lines."""
    parts = value.split()
    if len(parts) != 3 or not _TAG.fullmatch(parts[0]):
        return None  # more than 3 parts: session parameters, which we do not support
    tag, suite, params = int(parts[0]), parts[1], parts[2]
    if suite not in SUITES or not params.startswith("inline:") or ";" in params:
        return None  # ';' separates several keys (RFC 4568 9.2)
    key_text, *extras = params[len("inline:"):].split("|")
    if len(extras) > 1 or (extras and not _LIFETIME.fullmatch(extras[0])):
        return None  # an MKI (or junk) after the key
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != key_length(suite):
        return None
    return Crypto(tag, suite, key)


def offered_cryptos(media: MediaDescription) -> list[Crypto]:
    return [c for name, value in media.attributes
            if name == "crypto" and value is not None and (c := parse_crypto(value)) is not None]


def usable_protos(policy: str) -> tuple[str, ...]:
    """The m= line transports a caller with ``policy`` may use."""
    if policy == "required":
        return SECURE_PROTOS
    if policy == "off":
        return PLAIN_PROTOS
    return PLAIN_PROTOS + SECURE_PROTOS


def refusal(offer_protos: list[str], policy: str) -> str:
    """The 488 Warning text when no m=audio line suits the policy."""
    secure = any(p.upper() in SECURE_PROTOS for p in offer_protos)
    plain = any(p.upper() in PLAIN_PROTOS for p in offer_protos)
    if policy == "required" and not secure:
        return "SRTP required (offer RTP/SAVP with a=crypto)"
    if policy == "off" and not plain:
        return "SRTP not allowed for this caller (offer RTP/AVP)"
    return "no common audio codec"


def negotiate(media: MediaDescription, *, previous: SrtpKeys | None = None) -> SrtpKeys | None:
    """The SRTP keys to answer ``media`` with; None for a plain RTP line.

    A re-offer with the same suite and key as before keeps our key (the
    streams go on unchanged); a new key or suite gets a fresh key of ours
    too, so that no key is ever used with two sequence-number histories.
    Raises SrtpRefused when an RTP/SAVP line has no crypto we support."""
    if media.proto.upper() not in SECURE_PROTOS:
        return None
    cryptos = offered_cryptos(media)
    if not cryptos:
        raise SrtpRefused("no supported SRTP crypto suite (AES_CM_128_HMAC_SHA1_80/_32 with an inline key)")
    chosen = cryptos[0]
    if previous is not None and previous.suite == chosen.suite and previous.remote_key == chosen.key:
        return SrtpKeys(chosen.suite, chosen.key, previous.local_key, chosen.tag)
    return SrtpKeys(chosen.suite, chosen.key, os.urandom(key_length(chosen.suite)), chosen.tag)


def select_media(offer: SessionDescription, policy: str, *, previous: SrtpKeys | None = None,
                 supported: Sequence[str] = ("PCMU", "PCMA")) -> tuple[AudioSelection, SrtpKeys | None]:
    """The audio stream to answer under ``policy`` and its SRTP keys (None:
    plain RTP). Raises SrtpRefused (488) when the policy or the offered
    suites rule every stream out, NoCommonCodec when the codecs do."""
    protos = usable_protos(policy)
    try:
        selection = select_audio(offer, supported, protos=protos)
    except NoCommonCodec:
        warning = refusal([m.proto for m in offer.media if m.media.lower() == "audio"], policy)
        if warning == "no common audio codec":
            raise
        raise SrtpRefused(warning) from None
    try:
        return selection, negotiate(offer.media[selection.media_index], previous=previous)
    except SrtpRefused:
        if policy != "optional":
            raise
        # optional: an SRTP line we cannot key does not hide a plain one after it
        try:
            return select_audio(offer, supported, protos=PLAIN_PROTOS), None
        except NoCommonCodec:
            raise SrtpRefused("no supported SRTP crypto suite (AES_CM_128_HMAC_SHA1_80/_32 with an inline key)") from None
