"""RFC 4733 telephone-event detector: turns event packets into digits (SPEC 6.2).

Rules:

* A digit is reported once, when its event ends (first end packet); further
  end packets of the same event (same timestamp and event code) are ignored.
* An end packet alone counts (start/update packets lost).
* A packet *without* the end bit after an ended event starts a new event even
  when its timestamp and code repeat: SIPp replays one DTMF pcap with the same
  timestamps, so "11" must give two digits. (Cost of this rule: a non-end
  packet reordered behind its own end packet would count twice; RFC 4733
  senders stop sending updates once they send end packets, so that needs a
  reordering on the wire across the whole end-packet burst.)
* Our choice when every end packet is lost: the open event is reported when
  a packet of a *different* event (other timestamp or code) arrives, or by
  ``expire()`` once no packet of it came for ``stale_after`` seconds.
"""

from __future__ import annotations

from .rtp import event_digit


class DtmfDetector:
    __slots__ = ("stale_after", "_ts", "_event", "_ended", "_reported", "_last_seen")

    def __init__(self, stale_after: float = 0.5) -> None:
        self.stale_after = stale_after
        self._ts = -1
        self._event = -1
        self._ended = True
        self._reported = True
        self._last_seen = 0.0

    def feed(self, timestamp: int, event: int, end: bool, now: float = 0.0) -> str | None:
        """One telephone-event packet; returns the digit(s) it completes, or None.

        Usually one character. Two only in the rare case where an open event
        lost all its end packets and the superseding packet is itself an end
        packet (both digits complete at once, oldest first).
        """
        self._last_seen = now
        out = None
        if timestamp == self._ts and event == self._event:
            if not self._ended:
                if end:
                    self._ended = True
                    if not self._reported:
                        self._reported = True
                        return event_digit(event)
                return None
            if end:
                return None  # repeated end packet of an ended event
            # non-end packet after an ended event: a new event (SIPp replay)
        elif not self._reported:
            out = event_digit(self._event)  # previous event lost all its end packets
        self._ts = timestamp
        self._event = event
        self._ended = end
        self._reported = end
        if end:
            d = event_digit(event)
            if d is not None:
                out = d if out is None else out + d
        return out

    @property
    def pending(self) -> bool:
        """An event started and has not been reported yet."""
        return not self._reported

    def expire(self, now: float) -> str | None:
        """Report an open event whose end packets never came."""
        if not self._reported and now - self._last_seen >= self.stale_after:
            self._reported = True
            self._ended = True
            return event_digit(self._event)
        return None
