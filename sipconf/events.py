"""One place where conference events are published and fanned out.

Events (call_started, joined, left, talking, stopped_talking, muted, unmuted,
locked, unlocked, recording_started, recording_stopped, call_ended) come from
call control and the mixer's per-tick results; subscribers (the log, the admin
event stream, call records) register a callback. Nothing polls.

Publishing is synchronous and cheap: a subscriber that needs to do slow work
(an HTTP client, a file) must queue it itself. A subscriber that raises is
logged once and kept, so one broken consumer never stops call control.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Callable

log = logging.getLogger("sipconf.events")

Event = dict[str, Any]
Subscriber = Callable[[Event], None]

EVENT_NAMES = frozenset({
    "call_started", "joined", "left", "talking", "stopped_talking", "muted", "unmuted",
    "locked", "unlocked", "recording_started", "recording_stopped", "call_ended",
})


def rfc3339_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339(timestamp: float) -> str:
    """A ``time.time()`` value as RFC 3339 UTC with milliseconds."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._failed: set[int] = set()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Adds a subscriber; returns the function that removes it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: str, **fields: Any) -> Event:
        """Sends ``{"event": event, "time": ..., **fields}`` to every subscriber.

        Fields whose value is None are left out (``room``/``conference``/
        ``participant`` appear only where they apply)."""
        if event not in EVENT_NAMES:
            raise ValueError(f"unknown event {event!r}")
        message: Event = {"event": event, "time": rfc3339_now()}
        message.update((key, value) for key, value in fields.items() if value is not None)
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(message)
            except Exception:  # noqa: BLE001 - a consumer's bug must not stop call control
                if id(subscriber) not in self._failed:
                    self._failed.add(id(subscriber))
                    log.exception("event subscriber %r failed (logged once)", subscriber)
        return message
