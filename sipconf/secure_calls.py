"""SRTP for calls (SPEC 11): the caller's policy, the SDES offer/answer and
the SRTP stream put around the call's RTP endpoint, and rekeying on a
re-INVITE. Called by the server at the few points of a call where media is
negotiated; the per-packet work lives in mixer/srtp.py.
"""

from __future__ import annotations

from typing import Sequence

import logging
from typing import TYPE_CHECKING

from mixer.srtp import SrtpCounters, SrtpStream

from .config import Config, TrunkConfig
from .sdes import SrtpKeys, select_media
from .sdp import AudioSelection, SessionDescription
from .sip.transaction import Destination

if TYPE_CHECKING:
    from .call import Call

log = logging.getLogger("sipconf.srtp")

_WARNED_MAX = 10_000


class SecureMedia:
    def __init__(self) -> None:
        self.counters = SrtpCounters()
        self.calls_srtp = 0  # calls answered with SRTP (counter)
        self._warned: set[str] = set()

    @staticmethod
    def policy_for(config: Config, trunk: TrunkConfig | None, user: str | None) -> str:
        """The ``srtp`` setting of the trunk or the extension the call comes from."""
        if trunk is not None:
            return trunk.srtp
        extension = config.extension(user) if user else None
        return extension.srtp if extension is not None else "optional"

    def select(self, offer: SessionDescription, policy: str, source: Destination, call_id: str,
               previous: SrtpKeys | None = None,
               supported: Sequence[str] = ("PCMU", "PCMA")) -> tuple[AudioSelection, SrtpKeys | None]:
        """select_media, and the warning for keys that travelled in clear
        (once per source address: a phone re-registering must not fill the log)."""
        selection, keys = select_media(offer, policy, previous=previous, supported=supported)
        if keys is not None and source.transport != "TLS" and source.host not in self._warned:
            if len(self._warned) >= _WARNED_MAX:
                self._warned.clear()
            self._warned.add(source.host)
            log.warning("call %s: SRTP keys (SDES) from %s came over %s, in clear: anyone on the path can "
                        "decrypt the media; use SIP over TLS (logged once per source)",
                        call_id, source.host, source.transport)
        return selection, keys

    def start(self, call: "Call", keys: SrtpKeys | None, policy: str) -> None:
        """A new call: remember its policy and keys, wrap its endpoint in SRTP."""
        call.srtp_policy = policy
        call.srtp_keys = keys
        if keys is not None and call.endpoint is not None:
            self.calls_srtp += 1
            SrtpStream(keys.suite, keys.remote_key, keys.local_key, self.counters).attach(call.endpoint)
            log.info("call %s: SRTP %s", call.call_id, keys.suite)

    def rekey(self, call: "Call", keys: SrtpKeys | None) -> None:
        """A re-INVITE: new keys mean new SRTP sessions; the same keys keep
        the running ones (their replay windows and rollover counters)."""
        old = call.srtp_keys
        call.srtp_keys = keys
        if call.endpoint is None or keys == old or (
                keys is not None and old is not None and
                (keys.suite, keys.remote_key, keys.local_key) == (old.suite, old.remote_key, old.local_key)):
            return
        if keys is None:
            SrtpStream.detach(call.endpoint)
            log.info("call %s: SRTP off (plain RTP re-offered)", call.call_id)
        else:
            SrtpStream(keys.suite, keys.remote_key, keys.local_key, self.counters).attach(call.endpoint)
            log.info("call %s: SRTP rekeyed (%s)", call.call_id, keys.suite)

    @staticmethod
    def crypto(call: "Call") -> str | None:
        """Our answer's ``a=crypto`` value, or None for plain RTP."""
        keys = call.srtp_keys
        return keys.answer_attribute if keys is not None else None
